"""The outputs: per output, each runner pair's verdict, statistics, histogram, error map and worst elements."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup
from trt_harness.models.results.comparisons import (
    SAMPLES,
    ErrorMap,
    MissingOutput,
    OutputComparison,
    SampleErrorMap,
)
from trt_harness.models.results.stages import CompareDetails
from trt_harness.reports import formatting as fmt
from trt_harness.reports.sections.common import (
    RunView,
    quantile_label,
    slugify,
    tolerance_text,
    worst_error_text,
)
from trt_harness.reports.svg import error_map_scale, heatmap_svg, histogram_svg

DEFAULT_AXIS_NAMES = ("height", "width")
SAMPLE_HEATMAP_SIZE = (260.0, 150.0)  # px, the largest per-sample map


@dataclass(frozen=True)
class StatRow:
    label: str
    cells: tuple[str, ...]
    bad: tuple[bool, ...]


@dataclass(frozen=True)
class PairResult:
    """One runner pair's result for one output: compared, missing on one side, or not compared."""

    ref: str
    cand: str
    label: str
    state: str  # "pass", "fail" or "skipped"
    summary: str
    output: str = ""
    uid: str = ""  # unique within the page, for ids inside charts
    comparison: OutputComparison | None = None
    heatmap: ErrorMap | None = None
    sample_set: str = SAMPLES
    failure_label: str = ""  # `label` with the sample set always named, for failure lines
    axis_names: tuple[str, str] = DEFAULT_AXIS_NAMES  # the heatmap's axes, as the recipe names them

    @property
    def key(self) -> str:
        """Unique among the pairs of one output: the pairs of each sample set get their own."""
        at = "" if self.sample_set == SAMPLES else f"-{slugify(self.sample_set)}"
        return f"{self.ref}-{self.cand}{at}"

    @functools.cached_property
    def histogram(self) -> Markup | None:
        if self.comparison is None:
            return None
        return histogram_svg(
            self.comparison.abs_err_histogram,
            atol=self.comparison.tolerance.atol,
            label=f"abs error histogram of {self.output}, {self.label}",
        )

    @functools.cached_property
    def _heatmap_scale(self) -> tuple[float, float]:
        """One colour scale for the map over all samples and the per-sample maps, so they compare."""
        assert self.heatmap is not None
        return error_map_scale([self.heatmap, *self.heatmap.per_sample])

    @functools.cached_property
    def heatmap_chart(self) -> Markup | None:
        if self.heatmap is None or self.comparison is None or self.heatmap.omitted or not self.heatmap.values:
            return None
        label = f"abs error heatmap of {self.output}, {self.label}"
        return heatmap_svg(
            self.heatmap,
            atol=self.comparison.tolerance.atol,
            label=label,
            uid=self.uid,
            axis_names=self.axis_names,
            scale=self._heatmap_scale,
        )

    @functools.cached_property
    def sample_heatmaps(self) -> list[tuple[SampleErrorMap, Markup]]:
        """The per-sample (batch row) maps, small, on the colour scale of the map over all samples."""
        if self.heatmap is None or self.comparison is None:
            return []
        return [
            (
                m,
                heatmap_svg(
                    m,
                    atol=self.comparison.tolerance.atol,
                    label=f"abs error heatmap of {self.output}, {self.label}, {m.label}",
                    uid=f"{self.uid}-{index}",
                    axis_names=self.axis_names,
                    scale=self._heatmap_scale,
                    max_size=SAMPLE_HEATMAP_SIZE,
                ),
            )
            for index, m in enumerate(self.heatmap.per_sample)
            if m.values
        ]

    @property
    def worst(self) -> list[dict[str, str]]:
        if self.comparison is None:
            return []
        return [
            {
                "index": "[" + ", ".join(str(i) for i in w.index) + "]",
                "ref": fmt.precise(w.ref),
                "cand": fmt.precise(w.cand),
                "abs_err": fmt.sci(w.abs_err, 2),
            }
            for w in self.comparison.worst
        ]


@dataclass(frozen=True)
class OutputSection:
    name: str
    slug: str
    pairs: tuple[PairResult, ...]
    note: str | None = None  # why nothing was compared

    @property
    def state(self) -> str:
        states = {p.state for p in self.pairs}
        if "fail" in states:
            return "fail"
        return "pass" if "pass" in states else "skipped"

    @property
    def compared(self) -> tuple[PairResult, ...]:
        return tuple(p for p in self.pairs if p.comparison is not None)

    @property
    def failing_pairs(self) -> tuple[PairResult, ...]:
        return tuple(p for p in self.pairs if p.state == "fail")

    @property
    def tolerance(self) -> str | None:
        """The output's pass criterion (one per output, shared by its pairs)."""
        texts = dict.fromkeys(
            tolerance_text(p.comparison.tolerance) for p in self.compared if p.comparison is not None
        )
        return " / ".join(texts) or None

    @property
    def stat_groups(self) -> list[tuple[str, list[StatRow]]]:
        return stat_groups([p.comparison for p in self.compared if p.comparison is not None])


def stat_groups(comparisons: Sequence[OutputComparison]) -> list[tuple[str, list[StatRow]]]:
    """The statistics of each compared pair, in two tables: absolute error, then relative error and agreement."""
    if not comparisons:
        return []

    def row(label: str, value: Any, bad: Any = None) -> StatRow:
        return StatRow(
            label,
            tuple(value(c) for c in comparisons),
            tuple(bool(bad(c)) if bad else False for c in comparisons),
        )

    def estimate(key: str) -> Any:
        return lambda c: "≈" + fmt.sci(getattr(c, key), 2)

    def out_of_tolerance(c: OutputComparison) -> str:
        return f"{c.out_of_tolerance:,} ({fmt.percent(c.out_of_tolerance_fraction)})"

    quantiles = {quantile_label(c.tolerance) for c in comparisons}
    q = quantiles.pop() if len(quantiles) == 1 else "quantile"
    absolute = [
        row("verdict", lambda c: "pass" if c.passed else "FAIL", lambda c: not c.passed),
        row("samples × elements", lambda c: f"{c.samples:,} × {c.elements // max(c.samples, 1):,}"),
        row("out of tolerance", out_of_tolerance, lambda c: c.out_of_tolerance > 0),
        row("max abs error", lambda c: fmt.sci(c.max_abs_err, 2)),
        row("mean abs error", lambda c: fmt.sci(c.mean_abs_err, 2)),
        row("median abs error", estimate("median_abs_err")),
        row(f"{q} abs error", estimate("quantile_abs_err")),
        row("RMSE", lambda c: fmt.sci(c.rmse, 2)),
    ]
    relative = [
        row("max rel error", lambda c: fmt.sci(c.max_rel_err, 2)),
        row("mean rel error", lambda c: fmt.sci(c.mean_rel_err, 2)),
        row("median rel error", estimate("median_rel_err")),
        row(f"{q} rel error", estimate("quantile_rel_err")),
        row("cosine similarity", lambda c: fmt.closeness(c.cosine_similarity)),
        row(
            "non-finite mismatches", lambda c: f"{c.nonfinite_mismatches:,}", lambda c: c.nonfinite_mismatches
        ),
        row("NaN ref / cand", lambda c: f"{c.ref_nan:,} / {c.cand_nan:,}", lambda c: c.ref_nan != c.cand_nan),
        row("Inf ref / cand", lambda c: f"{c.ref_inf:,} / {c.cand_inf:,}", lambda c: c.ref_inf != c.cand_inf),
    ]
    if any(c.argmax_agreement is not None for c in comparisons):
        relative.append(
            row(
                "argmax agreement",
                lambda c: (
                    fmt.MISSING
                    if c.argmax_agreement is None
                    else f"{fmt.percent(c.argmax_agreement)} of {c.argmax_positions:,}"
                ),
                lambda c: c.argmax_agreement is not None and c.argmax_agreement < 1.0,
            )
        )
    if any(c.within_atol is not None for c in comparisons):
        absolute.append(
            row(
                "within atol / rtol",
                lambda c: fmt.MISSING if c.within_atol is None else f"{c.within_atol:,} / {c.within_rtol:,}",
            )
        )
    return [("absolute error", absolute), ("relative error", relative)]


class OutputsSection:
    """Every output of the recipe (and any other a backend produced), with a row per runner pair."""

    def __init__(self, run: RunView) -> None:
        self.run = run
        self.compare = run.details(CompareDetails)

    @property
    def output_names(self) -> list[str]:
        names = list(self.run.results.recipe.output_names)
        if self.compare is not None:
            for entry in [*self.compare.comparisons, *self.compare.missing]:
                if entry.output not in names:
                    names.append(entry.output)
        return names

    @property
    def pairs(self) -> list[tuple[str, str, str]]:
        """(reference, candidate, sample set): every compared pair in its group's order, then the pairs
        the compare stage recorded as not compared (e.g. TensorRT built, not executed)."""
        if self.compare is None:
            return []
        compared = [(ref, cand, g.sample_set) for g in self.compare.groups for ref, cand in g.pairs]
        skipped = [(p.ref_backend, p.cand_backend, SAMPLES) for p in self.compare.not_compared]
        return [*compared, *(p for p in skipped if p not in compared)]

    def _not_compared_reason(self, ref: str, cand: str) -> str:
        if self.compare is not None:
            for pair in self.compare.not_compared:
                if (pair.ref_backend, pair.cand_backend) == (ref, cand):
                    return pair.reason
        return "not compared"

    @functools.cached_property
    def outputs(self) -> list[OutputSection]:
        compare = self.compare
        comparisons = (
            {(c.output, c.ref_backend, c.cand_backend, c.sample_set): c for c in compare.comparisons}
            if compare
            else {}
        )
        missing = (
            {(m.output, m.ref_backend, m.cand_backend, m.sample_set): m for m in compare.missing}
            if compare
            else {}
        )
        maps = {(m.output, m.ref_backend, m.cand_backend): m for m in compare.error_maps} if compare else {}
        sections = []
        used_slugs: set[str] = set()
        for index, output in enumerate(self.output_names):
            slug = slugify(output) or f"{index}"
            while slug in used_slugs:
                slug = f"{slug}-{index}"
            used_slugs.add(slug)
            pairs = [
                self._pair_result(output, ref, cand, sample_set, comparisons, missing, maps, slug)
                for ref, cand, sample_set in self.pairs
            ]
            note = None
            if all(p.comparison is None for p in pairs):  # a failing comparison is falsy
                compare_stage = self.run.stage("compare")
                note = compare_stage.reason or "no backend pair compared this output"
            sections.append(OutputSection(output, slug, tuple(pairs), note))
        return sections

    def _pair_result(
        self,
        output: str,
        ref: str,
        cand: str,
        sample_set: str,
        comparisons: dict[tuple[str, str, str, str], OutputComparison],
        missing: dict[tuple[str, str, str, str], MissingOutput],
        maps: dict[tuple[str, str, str], ErrorMap],
        slug: str,
    ) -> PairResult:
        label = " ".join(
            filter(None, (self.run.pair_label(ref, cand), self.run.sample_set_label(sample_set)))
        )
        failure_label = f"{self.run.pair_label(ref, cand)} {self.run.sample_set_name(sample_set)}"
        comparison = comparisons.get((output, ref, cand, sample_set))
        if comparison is not None:
            summary = f"{worst_error_text(comparison)} (tol {tolerance_text(comparison.tolerance)})"
            if comparison.tolerance.check == "elemwise" or comparison.out_of_tolerance:
                summary += f", {comparison.out_of_tolerance:,} of {comparison.elements:,} out of tolerance"
            heatmap = maps.get((output, ref, cand)) if sample_set == SAMPLES else None
            state = "pass" if comparison.passed else "fail"
            uid = f"{slug}-{ref}-{cand}-{slugify(sample_set)}"
            axis_names = tuple(self.run.results.recipe.spatial_axis_names.get(output, DEFAULT_AXIS_NAMES))
            return PairResult(
                ref,
                cand,
                label,
                state,
                summary,
                output,
                uid,
                comparison,
                heatmap,
                sample_set,
                failure_label,
                (str(axis_names[0]), str(axis_names[1])),
            )
        gone = missing.get((output, ref, cand, sample_set))
        if gone is not None:
            summary = f"missing from {self.run.display(gone.missing_from)} in {gone.samples_missing} of {gone.samples} samples"
            return PairResult(
                ref, cand, label, "fail", summary, sample_set=sample_set, failure_label=failure_label
            )
        return PairResult(
            ref, cand, label, "skipped", self._not_compared_reason(ref, cand), sample_set=sample_set
        )

    @property
    def failing_outputs(self) -> list[OutputSection]:
        return [o for o in self.outputs if o.state == "fail"]
