"""bench.json (everything, raw samples included) and bench.md (the readable tables)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from trt_harness.harness.bench.base import Table, Target
from trt_harness.harness.bench.suite import BenchReport
from trt_harness.models.core.artifacts import write_text_atomic

_SHOWN_PACKAGES = ("torch", "onnxruntime", "onnx", "polygraphy", "numpy", "tensorrt-rtx", "tensorrt")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> list[str]:
    lines = [table.caption, ""] if table.caption else []
    lines.append("| " + " | ".join(_cell(h) for h in table.header) + " |")
    lines.append("|" + "---|" * len(table.header))
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    return lines


def _value(target: Target) -> str:
    if target.value is None or math.isnan(target.value):
        return "not measured"
    return f"{target.value:g}" if float(target.value).is_integer() else f"{target.value:.3f}"


def targets_table(targets: list[Target]) -> Table:
    return Table(
        caption="",
        header=("benchmark", "measure", "value", "target", "result"),
        rows=tuple(
            (
                t.benchmark,
                t.measure + (f" ({t.detail})" if t.detail else ""),
                _value(t),
                f"{t.direction} {t.limit:g}",
                "pass" if t.passed else "**MISSED**",
            )
            for t in targets
        ),
    )


def to_markdown(report: BenchReport) -> str:
    settings = report.settings
    machine = report.machine
    params = ", ".join(f"{k}={v}" for k, v in settings.params.items())
    packages = ", ".join(
        f"{p} {machine['packages'][p]}" for p in _SHOWN_PACKAGES if p in machine.get("packages", {})
    )
    load = [
        f"{machine[key][0]:.2f}" if key in machine else "?"
        for key in ("load_average_start", "load_average_end")
    ]
    lines = [
        f"# Benchmarks: {settings.recipe}" + (f" ({params})" if params else ""),
        "",
        f"`{report.command}` on {machine.get('platform')}, Python {machine.get('python')}, "
        f"{machine.get('usable_cpus')} usable CPUs (1-minute load average {load[0]} at start, {load[1]} "
        "at end; other processes share the machine, so timings are noisy). Packages: " + packages + ".",
        "",
        "## Targets",
        "",
        *markdown_table(targets_table(report.targets)),
        "",
        "**All targets met.**" if report.passed else "**Some targets missed or benchmarks failed.**",
    ]
    for number, result in enumerate(report.results, start=1):
        lines += ["", f"## {number}. {result.title}", ""]
        for table in result.tables:
            lines += [*markdown_table(table), ""]
        lines += [f"- {note}" for note in result.notes]
    if report.errors:
        lines += ["", "## Benchmarks that failed", ""]
        lines += [f"- **{name}**: {_cell(message)}" for name, message in report.errors.items()]
    return "\n".join(lines).rstrip() + "\n"


def write_report(report: BenchReport, out_dir: Path) -> tuple[Path, Path]:
    json_path, md_path = out_dir / "bench.json", out_dir / "bench.md"
    write_text_atomic(json_path, json.dumps(report.to_json(), indent=1))
    write_text_atomic(md_path, to_markdown(report))
    return json_path, md_path
