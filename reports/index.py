"""The index page over every run in an artifacts folder: one row per run, linking to its report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trt_harness.models.core.artifacts import write_text_atomic
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.results.diff import RunDiff
from trt_harness.models.results.document import Results, load_results
from trt_harness.models.results.history import HistoryRecord
from trt_harness.reports.page import ReportView
from trt_harness.reports.render import environment
from trt_harness.reports.sections.drift import drift_tables
from trt_harness.reports.trend import trends


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


def _row(run_dir: Path, results: Results) -> RunRow:
    view = ReportView(results)
    outputs = view.outputs
    return RunRow(
        dir=run_dir.name,
        recipe=results.recipe.name,
        passed=results.verdict.passed,
        exit_code=results.verdict.exit_code,
        status=results.verdict.status,
        summary=results.verdict.summary,
        outputs=len(outputs),
        failing_outputs=tuple(o.name for o in outputs if o.state == "fail"),
        created=view.summary.created,
        has_report=(run_dir / "report.html").is_file(),
    )


def collect_runs(artifacts: Path) -> list[RunRow]:
    """A row per `*/results.json` under `artifacts`, in directory name order."""
    runs = []
    for results_path in sorted(artifacts.glob("*/results.json")):
        run_dir = results_path.parent
        try:
            runs.append(_row(run_dir, load_results(results_path)))
        except HarnessError as e:
            runs.append(RunRow(dir=run_dir.name, error=str(e)))
    return runs


def render_index(
    artifacts: Path, *, history: Sequence[HistoryRecord] = (), drift: Sequence[RunDiff] = ()
) -> str:
    """`history`: records of `harness convert --history`, drawn as error trends; `drift`: diffs of a
    reference run against runs under other versions (`harness.drift`), drawn as drift tables."""
    return (
        environment()
        .get_template("index.html.j2")
        .render(
            runs=collect_runs(artifacts),
            root=str(artifacts),
            trends=trends(history),
            drift=drift_tables(drift),
        )
    )


def write_index(
    artifacts: Path, *, history: Sequence[HistoryRecord] = (), drift: Sequence[RunDiff] = ()
) -> Path:
    """Write `artifacts`/index.html over every run found there, and return its path."""
    path = artifacts / "index.html"
    write_text_atomic(path, render_index(artifacts, history=history, drift=drift))
    return path
