"""A run compared with another: views of a `RunDiff` for the diff page (`harness diff`), the report's
baseline section (`harness convert --baseline`) and the terminal table.

Every value is formatted here from the typed diff; the templates only lay it out, and
`reports.diff.diff_text` prints the same rows as plain text.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from trt_harness.models.results.comparisons import SAMPLES
from trt_harness.models.results.diff import (
    ComparisonChange,
    DetectionChange,
    RunDiff,
    RunSide,
    StatChange,
    TimingChange,
)
from trt_harness.reports import formatting as fmt
from trt_harness.reports.sections.common import RunView, slugify, tolerance_text

# the badge colour of each status
STATE = {
    "unchanged": "pass",
    "improved": "pass",
    "within factor": "pass",
    "fixed": "pass",
    "regressed": "fail",
    "new failure": "fail",
    "still failing": "fail",
    "added": "skipped",
    "removed": "skipped",
}


def value_text(kind: str, value: float | None) -> str:
    if value is None:
        return fmt.MISSING
    if kind == "count":
        return fmt.number(int(value)) if value == int(value) else fmt.number(value)
    if kind == "fraction":
        return fmt.percent(value)
    if kind == "similarity":
        return fmt.closeness(value)
    return fmt.sci(value, 2)


def change_text(s: StatChange) -> str:
    """How a statistic moved: a ratio for errors (×2.5), a difference for counts and fractions (+3)."""
    if s.before is None or s.after is None:
        return fmt.MISSING if s.before == s.after else ("new" if s.before is None else "gone")
    if not s.changed:
        return "="
    if s.kind == "error":
        return "from 0" if s.ratio is None else ratio_text(s.ratio)
    delta = s.after - s.before
    sign = "+" if delta > 0 else "−"
    if s.kind == "count":
        return f"{sign}{fmt.number(abs(int(delta)) if delta == int(delta) else abs(delta))}"
    if s.kind == "fraction":
        return f"{sign}{fmt.percent(abs(delta))}"
    return f"{sign}{fmt.sci(abs(delta), 1)}"


def ratio_text(ratio: float) -> str:
    """×2.5, ×339, ×1.6e3, ×0.018."""
    if 1e-3 <= ratio < 1e3:
        return f"×{ratio:.3g}"
    mantissa, exponent = f"{ratio:.1e}".split("e")
    return f"×{mantissa}e{int(exponent)}"


def seconds_text(seconds: float | None) -> str:
    """A stage's or an inference's time: 1.9 s, 34 ms, 120 µs."""
    if seconds is not None and 0 < seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    return fmt.duration(seconds)


def change_state(s: StatChange) -> str:
    """The cell's class: regressed (beyond the factor), worse, better, or '' (equal, or no direction)."""
    if s.regressed:
        return "regressed"
    if s.worse:
        return "worse"
    return "better" if s.better_now else ""


def verdict_text(passed: bool | None) -> str:
    return fmt.MISSING if passed is None else ("pass" if passed else "FAIL")


def created_text(side: RunSide) -> str:
    stamp = datetime.datetime.fromtimestamp(side.created_unix, datetime.UTC)
    return stamp.strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class StatRow:
    label: str
    before: str
    after: str
    change: str
    state: str  # see change_state
    gated: bool


@dataclass(frozen=True)
class ChangeView:
    """One comparison (or detection pair) of the diff, formatted."""

    output: str
    title: str  # "Torch vs ORT at batch1, fp16"
    status: str
    state: str  # badge class, see STATE
    verdict_before: str
    verdict_after: str
    rows: tuple[StatRow, ...]
    regressions: tuple[str, ...]
    notes: tuple[str, ...]  # failure reasons, tolerance changes, images that changed
    uid: str

    @property
    def gated_rows(self) -> tuple[StatRow, ...]:
        return tuple(r for r in self.rows if r.gated)

    def row(self, label_start: str) -> StatRow | None:
        return next((r for r in self.rows if r.label.startswith(label_start)), None)


@dataclass(frozen=True)
class TimingRow:
    name: str
    before: str
    after: str
    change: str
    status_before: str
    status_after: str


@dataclass(frozen=True)
class ValueRow:
    what: str
    before: str
    after: str


class DiffView:
    """Everything a page shows of a `RunDiff`; `before`/`after` name its two columns."""

    def __init__(self, diff: RunDiff, before: str = "A", after: str = "B") -> None:
        self.diff = diff
        self.before = before
        self.after = after

    # --- the head ---------------------------------------------------------------------------------

    @property
    def regressed(self) -> bool:
        return not self.diff.passed

    @property
    def word(self) -> str:
        if self.regressed:
            return "REGRESSED"
        return "UNCHANGED" if self.diff.unchanged else "NO REGRESSION"

    @property
    def gate_text(self) -> str:
        d = self.diff
        return (
            f"a regression: a p99/quantile or max abs error above ×{d.factor:g} the {self.before} value "
            f"and above {fmt.compact(d.floor)}, or a comparison that passed in {self.before} and fails in "
            f"{self.after}"
        )

    @property
    def counts(self) -> str:
        changes = [*self.diff.comparisons, *self.diff.detections]
        order = (
            "regressed",
            "new failure",
            "fixed",
            "improved",
            "still failing",
            "within factor",
            "unchanged",
            "added",
            "removed",
        )
        found = {status: sum(1 for c in changes if c.status == status) for status in order}
        parts = [f"{n} {status}" for status, n in found.items() if n]
        return (
            f"{len(self.diff.comparisons)} comparison(s)"
            + (f", {len(self.diff.detections)} detection pair(s)" if self.diff.detections else "")
            + (": " + ", ".join(parts) if parts else "")
        )

    @property
    def sides(self) -> list[tuple[str, RunSide, str]]:
        return [
            (self.before, self.diff.a, created_text(self.diff.a)),
            (self.after, self.diff.b, created_text(self.diff.b)),
        ]

    # --- comparisons ---------------------------------------------------------------------------------

    def title(self, ref: str, cand: str, sample_set: str | None, precision: str) -> str:
        text = f"{self.diff.display(ref)} vs {self.diff.display(cand)}"
        if sample_set is not None and sample_set != SAMPLES:
            text += f" at {sample_set}"
        named = precision == "fp32" or precision.lower() in text.lower()  # "ORT FP16" says it already
        return text if named else f"{text}, {precision}"

    def _rows(self, stats: Sequence[StatChange]) -> tuple[StatRow, ...]:
        return tuple(
            StatRow(
                s.label,
                value_text(s.kind, s.before),
                value_text(s.kind, s.after),
                change_text(s),
                change_state(s),
                s.gated,
            )
            for s in stats
        )

    def _comparison(self, c: ComparisonChange) -> ChangeView:
        notes = []
        if c.reason_before and c.passed_before is False:
            notes.append(f"{self.before}: {c.reason_before}")
        if c.reason_after and c.passed_after is False:
            notes.append(f"{self.after}: {c.reason_after}")
        if c.tolerance_before and c.tolerance_after and c.tolerance_before != c.tolerance_after:
            notes.append(
                f"tolerance changed: {tolerance_text(c.tolerance_before)} → {tolerance_text(c.tolerance_after)}"
            )
        if c.status == "removed":
            notes.append(f"not compared in {self.after}")
        if c.status == "added":
            notes.append(f"not compared in {self.before}")
        uid = slugify(f"{c.output}-{c.ref_backend}-{c.cand_backend}-{c.sample_set}-{c.precision}")
        return ChangeView(
            c.output,
            self.title(c.ref_backend, c.cand_backend, c.sample_set, c.precision),
            c.status,
            STATE[c.status],
            verdict_text(c.passed_before),
            verdict_text(c.passed_after),
            self._rows(c.stats),
            c.regressions,
            tuple(notes),
            uid,
        )

    @property
    def comparisons(self) -> list[ChangeView]:
        return [self._comparison(c) for c in self.diff.comparisons]

    @property
    def outputs(self) -> list[tuple[str, list[ChangeView]]]:
        """The comparisons grouped by output, in the order the runs recorded them."""
        grouped: dict[str, list[ChangeView]] = {}
        for view in self.comparisons:
            grouped.setdefault(view.output, []).append(view)
        return list(grouped.items())

    def _detection(self, d: DetectionChange) -> ChangeView:
        notes = [] if d.gated else ["informational: this precision does not gate detections"]
        if d.newly_failing_images:
            notes.append(
                f"images disagreeing only in {self.after}: {', '.join(map(str, d.newly_failing_images))}"
            )
        if d.fixed_images:
            notes.append(f"images disagreeing only in {self.before}: {', '.join(map(str, d.fixed_images))}")
        if d.images_before and d.images_after and d.images_before != d.images_after:
            notes.append(f"{d.images_before} images in {self.before}, {d.images_after} in {self.after}")
        return ChangeView(
            d.output,
            self.title(d.ref_backend, d.cand_backend, None, d.precision),
            d.status,
            STATE[d.status],
            verdict_text(d.passed_before),
            verdict_text(d.passed_after),
            self._rows(d.stats),
            d.regressions,
            tuple(notes),
            slugify(f"detections-{d.ref_backend}-{d.cand_backend}-{d.precision}"),
        )

    @property
    def detections(self) -> list[ChangeView]:
        return [self._detection(d) for d in self.diff.detections]

    # --- times, environment, settings --------------------------------------------------------------

    def _timing(self, t: TimingChange, name: str) -> TimingRow:
        ratio = t.ratio
        change = fmt.MISSING if ratio is None else ratio_text(ratio)
        return TimingRow(
            name, seconds_text(t.before_s), seconds_text(t.after_s), change, t.status_before, t.status_after
        )

    @property
    def stages(self) -> list[TimingRow]:
        return [self._timing(t, t.name) for t in self.diff.stages]

    @property
    def runners(self) -> list[TimingRow]:
        return [self._timing(t, self.diff.display(t.name)) for t in self.diff.runners]

    @property
    def environment(self) -> list[ValueRow]:
        return [ValueRow(v.what, v.before or "absent", v.after or "absent") for v in self.diff.environment]

    @property
    def settings(self) -> list[ValueRow]:
        return [ValueRow(v.what, v.before or "absent", v.after or "absent") for v in self.diff.settings]


class BaselineSection:
    """The report's side-by-side of a run and the baseline it was gated on (`--baseline DIR`)."""

    def __init__(self, run: RunView) -> None:
        diff = run.results.baseline
        self.view = DiffView(diff, "baseline", "this run") if diff is not None else None
