"""Benchmark 4: the saved outputs of few vs many samples: peak memory of `harness compare` on them, their
size on disk, and the run stage's time beyond inference.

For each sample count N, `harness convert <recipe> -p samples=N` (no cache, so every stage runs and
the run stage's timings are its own) writes a run folder; then `harness compare <run folder>`, the real
command line in a fresh process, re-judges the saved files while its peak RSS is measured. Outputs are
read one sample at a time, so the peak must not grow with N. The run folder is reused while it holds
a run of the same recipe, parameters and count whose run stage ran.

Peak RSS is the `ru_maxrss` of the compare process (see `harness.bench.rss`). Linux carries a
process's peak across fork and exec, so the measuring launcher is started by a shell that forks it:
a forked shell's child starts a new count, and the launcher, importing the standard library only,
hands its child a floor of a few MiB.

Disk: each runner's outputs as saved (`.npz`, one file per sample) and, for the few-sample run, the
same outputs as Polygraphy JSON, written by `harness golden` (the encoding the harness saved before).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trt_harness.harness.bench.base import (
    BenchResult,
    BenchSettings,
    Table,
    Target,
    fmt_ratio,
    fmt_seconds,
    ratio,
    register_benchmark,
)
from trt_harness.harness.bench.convert import COMPLETED, cli_command, param_args, run_harness, saved_results
from trt_harness.harness.code_keys import ROOT
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.results.comparisons import SAMPLES
from trt_harness.models.results.document import RESULTS_FILE, Results
from trt_harness.models.results.stages import RunDetails

TITLE = "Saved outputs: peak memory of `harness compare`, disk, run-stage overhead"
GROWTH_LIMIT = 1.3  # peak RSS of comparing the many-sample run at most 1.3x the few-sample one
OVERHEAD_LIMIT = 1.3  # the run stage's wall time at most 1.3x the time inside the backends' infer calls
SAMPLES_PARAM = "samples"
MIB = 2**20


def memory_run_dir(settings: BenchSettings, samples: int) -> Path:
    return settings.out_dir / f"memory-{samples}"


def memory_params(settings: BenchSettings, samples: int) -> dict[str, Any]:
    return {**settings.memory_params, SAMPLES_PARAM: samples}


def measure_peak_rss(command: Sequence[str]) -> dict[str, Any]:
    """Run `command` in a fresh process (forked by a shell, see the module docstring) and return its
    exit code, wall time and peak RSS."""
    launcher = [sys.executable, "-m", "trt_harness.harness.bench.rss", "--", *command]
    forked = ["sh", "-c", '"$@" & wait $!', "sh", *launcher]
    process = subprocess.run(forked, cwd=ROOT, capture_output=True, text=True)
    lines = process.stdout.strip().splitlines()
    if process.returncode != 0 or not lines:
        raise HarnessError(
            f"the peak-RSS launcher `{' '.join(launcher)}` exited with {process.returncode}:\n"
            + process.stderr.strip()[-2000:]
        )
    return json.loads(lines[-1])


def compare_command(run_dir: Path) -> list[str]:
    return cli_command("compare", str(run_dir.resolve()))


def measure_compare(run_dir: Path) -> dict[str, Any]:
    """Peak RSS and wall time of `harness compare <run_dir>`; fails unless it reached a verdict."""
    measured = measure_peak_rss(compare_command(run_dir))
    if measured["exit_code"] not in COMPLETED:
        raise HarnessError(
            f"`{' '.join(measured['command'])}` exited with {measured['exit_code']} before reaching a "
            "verdict; its last lines:\n" + "\n".join(measured["output_tail"])
        )
    return measured


def outputs_on_disk(results: Results) -> dict[str, Any]:
    """Bytes of each runner's saved outputs, in all and per sample of the recipe's sample set."""
    run, record = results.details(RunDetails), results.stage("run")
    if run is None or record is None:
        return {"total_bytes": 0, "runners": {}}
    runners = {}
    for name, runner in run.executed().items():
        artifact = record.artifacts.get(runner.outputs or "")
        if artifact is None:
            continue
        prefix = f"{artifact.path}/{SAMPLES}/"
        own = [m.size_bytes for m in artifact.members if m.path.startswith(prefix)]
        runners[name] = {
            "total_bytes": artifact.size_bytes,
            "files": len(artifact.members),
            "sample_files": len(own),
            "bytes_per_sample": sum(own) / len(own) if own else None,
        }
    return {"total_bytes": sum(r["total_bytes"] for r in runners.values()), "runners": runners}


def run_stage_overhead(results: Results) -> dict[str, Any]:
    """The run stage's wall time against the time spent inside the backends' infer calls (and setup)."""
    record, run = results.stage("run"), results.details(RunDetails)
    executed = run.executed() if run is not None else {}
    inference = sum(r.inference_s for r in executed.values())
    setup = sum(r.setup_s for r in executed.values())
    ran = record is not None and record.status == "ok"
    wall = record.duration_s if record is not None else None
    return {
        "status": record.status if record is not None else None,
        "wall_s": wall,
        "inference_s": inference,
        "setup_s": setup,
        "wall_over_inference": ratio(wall, inference) if ran else None,
        "wall_less_setup_over_inference": ratio(wall - setup, inference)
        if ran and wall is not None
        else None,
    }


def polygraphy_json_bytes(run_dir: Path, out: Path) -> dict[str, int]:
    """The saved outputs of the recipe's samples as Polygraphy JSON (`harness golden`): bytes per runner."""
    shutil.rmtree(out, ignore_errors=True)
    command = cli_command("golden", str(run_dir.resolve()), "--out", str(out.resolve()))
    process = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if process.returncode != 0:
        raise HarnessError(
            f"`{' '.join(command)}` exited with {process.returncode}: {process.stderr[-2000:]}"
        )
    sizes = {
        folder.name: sum(f.stat().st_size for f in folder.glob("*.json"))
        for folder in sorted((out / SAMPLES).iterdir())
        if folder.is_dir() and folder.name != "inputs"
    }
    shutil.rmtree(out, ignore_errors=True)  # hundreds of MB: measured, not kept
    return sizes


def _reusable(run_dir: Path, recipe: str, params: Mapping[str, Any]) -> Results | None:
    results = saved_results(run_dir)
    if results is None or results.recipe.name != recipe:
        return None
    if any(results.recipe.params.get(k) != v for k, v in params.items()):
        return None
    run = results.stage("run")
    if run is None or run.status != "ok" or len(outputs_on_disk(results)["runners"]) < 2:
        return None
    return results


def ensure_memory_run(settings: BenchSettings, samples: int) -> Results:
    """A run folder of `samples` samples whose run stage ran (not from the cache): reused or converted."""
    run_dir = memory_run_dir(settings, samples)
    params = memory_params(settings, samples)
    reused = _reusable(run_dir, settings.recipe, params)
    if reused is not None:
        return reused
    command = cli_command(
        "convert", settings.recipe, *param_args(params), "--out", str(run_dir.resolve()), "--no-cache"
    )
    _wall, _code, results = run_harness(command, run_dir / RESULTS_FILE, settings.cache_dir)
    return results


def memory_data(settings: BenchSettings) -> dict[str, Any]:
    """Every measurement of the benchmark, by sample count (the raw data of bench.json)."""
    few, many = settings.memory_samples
    runs: dict[str, Any] = {}
    for count in (few, many):
        results = ensure_memory_run(settings, count)
        run_dir = memory_run_dir(settings, count)
        runs[str(count)] = {
            "run_dir": str(run_dir),
            "params": memory_params(settings, count),
            "compare": measure_compare(run_dir),
            "outputs_on_disk": outputs_on_disk(results),
            "run_stage": run_stage_overhead(results),
        }
    few_run = memory_run_dir(settings, few)
    runs[str(few)]["polygraphy_json_bytes"] = polygraphy_json_bytes(
        few_run, settings.out_dir / "memory-golden"
    )
    return {
        "recipe": settings.recipe,
        "command": " ".join(compare_command(Path("<run dir>"))[1:]),
        "runs": runs,
        "peak_rss_ratio": ratio(
            runs[str(many)]["compare"]["peak_rss_bytes"], runs[str(few)]["compare"]["peak_rss_bytes"]
        ),
    }


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value / MIB:.1f}"


def memory_result(settings: BenchSettings, data: Mapping[str, Any]) -> BenchResult:
    """Tables and targets of the measured `data` (see memory_data)."""
    few, many = settings.memory_samples
    runs = data["runs"]
    params = ", ".join(f"{k}={v}" for k, v in settings.memory_params.items())
    memory = Table(
        caption=(
            f"`harness compare <run dir>` on {data['recipe']} runs ({params}), one fresh process each, "
            "measured once; peak RSS is the process's ru_maxrss"
        ),
        header=(
            "samples",
            "peak RSS MiB",
            "wall",
            "exit code",
            "outputs on disk MiB",
            "run stage / inference",
        ),
        rows=tuple(
            (
                n,
                _mib(r["compare"]["peak_rss_bytes"]),
                fmt_seconds(r["compare"]["wall_s"]),
                str(r["compare"]["exit_code"]),
                _mib(r["outputs_on_disk"]["total_bytes"]),
                fmt_ratio(r["run_stage"]["wall_over_inference"]),
            )
            for n, r in runs.items()
        ),
    )
    json_sizes = runs[str(few)].get("polygraphy_json_bytes", {})
    disk_rows = []
    for name, saved in runs[str(few)]["outputs_on_disk"]["runners"].items():
        files = saved["sample_files"]
        as_json = json_sizes.get(name)
        disk_rows.append(
            (
                name,
                str(files),
                _mib(saved["bytes_per_sample"]),
                _mib(as_json / files) if as_json is not None and files else "–",
                fmt_ratio(
                    ratio(as_json / files, saved["bytes_per_sample"])
                    if as_json is not None and files
                    else None
                ),
            )
        )
    disk = Table(
        caption=f"one sample's outputs on disk, {few}-sample run: as saved and as Polygraphy JSON (`harness golden`)",
        header=("runner", "samples", ".npz MiB per sample", "Polygraphy JSON MiB per sample", "JSON / .npz"),
        rows=tuple(disk_rows),
    )
    overhead = runs[str(many)]["run_stage"]
    targets = (
        Target(
            "memory",
            f"peak RSS of `harness compare`, {many} / {few} samples",
            data["peak_rss_ratio"],
            GROWTH_LIMIT,
            "<=",
        ),
        Target(
            "memory",
            f"run stage wall / time in infer calls, {many}-sample run",
            overhead["wall_over_inference"],
            OVERHEAD_LIMIT,
            "<=",
            "" if overhead["wall_over_inference"] is not None else f"its run stage was {overhead['status']}",
        ),
    )
    notes = (
        f"run stage of the {many}-sample run: {fmt_seconds(overhead['wall_s'])} wall, "
        f"{fmt_seconds(overhead['inference_s'])} in infer calls, {fmt_seconds(overhead['setup_s'])} setting "
        f"backends up; without setup: {fmt_ratio(overhead['wall_less_setup_over_inference'])}",
    )
    return BenchResult("memory", TITLE, dict(data), targets, (memory, disk), notes)


@register_benchmark("memory", TITLE, rank=3)
def memory_benchmark(settings: BenchSettings) -> BenchResult:
    return memory_result(settings, memory_data(settings))
