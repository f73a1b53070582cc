"""What every report section shares: the run being shown, runner names, facts and text helpers.

A section is a class built from the typed `Results` (and the run folder, for files it draws); its
template partial (`templates/sections/<name>.html.j2`) only lays it out. Strings that come from a
model stay plain strings; the templates escape them. Only the charts of `reports.svg` are markup.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from trt_harness.models.recipe import Tolerance
from trt_harness.models.results.comparisons import SAMPLES, OutputComparison
from trt_harness.models.results.document import Results
from trt_harness.models.results.stages import RunDetails, SamplesDetails, StageDetails, StageRecord
from trt_harness.reports import formatting as fmt

D = TypeVar("D", bound=StageDetails)


@dataclass(frozen=True)
class Fact:
    label: str
    value: str
    mono: bool = False


@dataclass(frozen=True)
class OpCountRow:
    op: str
    counts: tuple[int, ...]
    changed: tuple[bool, ...]


def op_count_rows(snapshots: Sequence[dict[str, int]], baseline_first: bool) -> list[OpCountRow]:
    """One row per op type (and "all nodes"): its count in each snapshot, changes marked.

    `baseline_first`: a change is against the first snapshot (variants of one model); otherwise
    against the snapshot before (passes applied in turn).
    """
    ops = sorted({op for snapshot in snapshots for op in snapshot})
    rows = []
    for op in [*ops, "all nodes"]:
        counts = tuple(
            sum(snapshot.values()) if op == "all nodes" else int(snapshot.get(op, 0))
            for snapshot in snapshots
        )
        base = [counts[0] if baseline_first else counts[i - 1] for i in range(len(counts))]
        rows.append(OpCountRow(op, counts, tuple(i > 0 and n != base[i] for i, n in enumerate(counts))))
    return rows


def slugify(name: str) -> str:
    """An id-safe form of an output name: lower case ASCII letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def tolerance_text(tolerance: Tolerance) -> str:
    """The pass criterion in words, e.g. "atol 1e-4 + rtol 1e-3·|ref|"."""
    atol, rtol = fmt.compact(tolerance.atol), fmt.compact(tolerance.rtol)
    if tolerance.check == "elemwise":
        return f"atol {atol} + rtol {rtol}·|ref|"
    stat = quantile_label(tolerance) if tolerance.check == "quantile" else tolerance.check
    return f"{stat} abs ≤ {atol} or {stat} rel ≤ {rtol}"


def quantile_label(tolerance: Tolerance) -> str:
    return f"p{100 * tolerance.quantile:g}"


def worst_error_text(c: OutputComparison) -> str:
    """The statistic the verdict was decided on, e.g. "max abs 2.0e-1"."""
    check = c.tolerance.check
    if check in ("elemwise", "max"):
        text = f"max abs {fmt.sci(c.max_abs_err)}"
        return text if check == "elemwise" else f"{text}, max rel {fmt.sci(c.max_rel_err)}"
    if check == "mean":
        return f"mean abs {fmt.sci(c.mean_abs_err)}, mean rel {fmt.sci(c.mean_rel_err)}"
    if check == "median":
        return f"median abs ≈{fmt.sci(c.median_abs_err)}, median rel ≈{fmt.sci(c.median_rel_err)}"
    stat = quantile_label(c.tolerance)
    return f"{stat} abs ≈{fmt.sci(c.quantile_abs_err)}, {stat} rel ≈{fmt.sci(c.quantile_rel_err)}"


class RunView:
    """The run a section shows: its results, its run folder, and how its runners are named."""

    def __init__(self, results: Results, run_dir: Path | None = None) -> None:
        self.results = results
        self.run_dir = run_dir
        run = results.details(RunDetails)
        self.runners = dict(run.runners) if run else {}

    def stage(self, name: str) -> StageRecord:
        return self.results.stage(name) or StageRecord(name, "skipped", reason="not recorded")

    def details(self, kind: type[D]) -> D | None:
        return self.results.details(kind)

    def display(self, runner: str) -> str:
        record = self.runners.get(runner)
        return record.display_name if record else runner

    def pair_label(self, ref: str, cand: str) -> str:
        return f"{self.display(ref)} vs {self.display(cand)}"

    def sample_set_label(self, sample_set: str) -> str:
        if sample_set == SAMPLES:
            return ""
        samples = self.details(SamplesDetails)
        recorded = samples.sets.get(sample_set) if samples else None
        return recorded.label if recorded and recorded.label else f"at {sample_set}"

    def sample_set_name(self, sample_set: str) -> str:
        """The sample set as a failure line names it, the recipe's own samples too."""
        if sample_set == SAMPLES:
            return "on the samples"
        label = self.sample_set_label(sample_set)
        return label if label == f"at {sample_set}" else f"at {sample_set} ({label.removeprefix('at ')})"
