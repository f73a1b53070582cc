"""The index page over every run in an artifacts folder: one row per run, linking to its report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.artifacts import write_text_atomic


@dataclass(frozen=True)
class RunRow:
    """One run of the index: a run directory and what its results.json says (or why it could not be read)."""

    dir: str
    recipe: str = ""
    passed: bool = False
    exit_code: int | None = None
    status: str = ""
    summary: str = ""
    outputs: int = 0
    failing_outputs: tuple[str, ...] = ()
    created: str = ""
    has_report: bool = False
    error: str | None = None


def _row(run_dir: Path, results: dict[str, Any]) -> RunRow:
    from reports.view import ReportView

    view = ReportView(results)
    outputs = view.outputs
    return RunRow(
        dir=run_dir.name,
        recipe=str(view.recipe.get("name", run_dir.name)),
        passed=bool(view.verdict.get("passed")),
        exit_code=view.verdict.get("exit_code"),
        status=str(view.verdict.get("status", "")),
        summary=str(view.verdict.get("summary", "")),
        outputs=len(outputs),
        failing_outputs=tuple(o.name for o in outputs if o.state == "fail"),
        created=view.created,
        has_report=(run_dir / "report.html").is_file(),
    )


def collect_runs(artifacts: Path) -> list[RunRow]:
    """A row per `*/results.json` under `artifacts`, in directory name order."""
    runs = []
    for results_path in sorted(artifacts.glob("*/results.json")):
        run_dir = results_path.parent
        try:
            results = json.loads(results_path.read_text())
            runs.append(_row(run_dir, results))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            runs.append(RunRow(dir=run_dir.name, error=f"unreadable results.json ({type(e).__name__}: {e})"))
    return runs


def render_index(artifacts: Path) -> str:
    from reports.render import environment

    return (
        environment().get_template("index.html.j2").render(runs=collect_runs(artifacts), root=str(artifacts))
    )


def write_index(artifacts: Path) -> Path:
    """Write `artifacts`/index.html over every run found there, and return its path."""
    path = artifacts / "index.html"
    write_text_atomic(path, render_index(artifacts))
    return path
