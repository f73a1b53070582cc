"""Typed results of comparing two backends' outputs: per-output statistics, missing outputs, the
ordering cross-match, error maps, and the comparison groups of a run.

The statistics are accumulated by `harness.comparison`; the definitions (and the histogram that
median/quantile estimates come from) are documented there and in the README.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from trt_harness.models.recipe import Tolerance

# Histogram bucket of a non-negative float64 = its bit pattern shifted right by 52 - 3: the exponent
# plus the top 3 mantissa bits, i.e. 8 bins per power of two, each at most 1/8 of its lower edge wide.
HIST_SHIFT = 49
# Buckets of all finite non-negative float64 values (bucket 16376 would start at +Inf).
HIST_BUCKETS = 0x7FF0_0000_0000_0000 >> HIST_SHIFT
HIST_EDGES = (np.arange(HIST_BUCKETS + 1, dtype=np.int64) << HIST_SHIFT).view(np.float64)

# the recipe's own sample set; the others are named after the profile shapes they run at
SAMPLES = "samples"

# (lower edge, upper edge, count) of each non-empty bin; a bin starting at 0.0 holds the exact zeros
Bins = tuple[tuple[float, float, int], ...]


def quantile_from_histogram(counts: np.ndarray, q: float, lowest: float, highest: float) -> float:
    """numpy-style (linear) q-quantile of the counted values, each order statistic estimated in its bin.

    Elements of a bin are taken as evenly spread over it, so each estimated order statistic lies in
    the same bin as the exact one; clamped to the exact extremes.
    """
    cumulative = np.cumsum(counts)
    n = int(cumulative[-1])
    position = q * (n - 1)
    below = math.floor(position)
    above = min(below + 1, n - 1)

    def order_statistic(i: int) -> float:
        b = int(np.searchsorted(cumulative, i, side="right"))
        if b == 0:  # exact zeros (and float64 subnormals below 2**-1025)
            return 0.0
        before = int(cumulative[b]) - int(counts[b])
        lo, hi = float(HIST_EDGES[b]), float(HIST_EDGES[b + 1])
        return lo + (hi - lo) * (i - before + 0.5) / int(counts[b])

    frac = position - below
    estimate = order_statistic(below) * (1.0 - frac) + order_statistic(above) * frac
    return min(max(estimate, lowest), highest)


def histogram_bins(counts: np.ndarray) -> Bins:
    nonzero = np.flatnonzero(counts)
    return tuple((float(HIST_EDGES[b]), float(HIST_EDGES[b + 1]), int(counts[b])) for b in nonzero)


def counts_from_bins(bins: Iterable[Sequence[float]]) -> np.ndarray:
    counts = np.zeros(HIST_BUCKETS, dtype=np.int64)
    for lo, _hi, count in bins:
        counts[int(np.array(lo, dtype=np.float64).view(np.int64)) >> HIST_SHIFT] = int(count)
    return counts


@dataclass(frozen=True)
class WorstElement:
    """One of the largest abs errors: `index` is (sample, *position in the output)."""

    abs_err: float  # inf for a non-finite mismatch
    index: tuple[int, ...]
    ref: float
    cand: float


@dataclass(frozen=True)
class CheckWorst:
    """Where a check came out worst: `index` is (sample, *row or element position), `value` its score
    there (the row's cosine, the sample's agreement, the function's value); `detail` in words, never
    naming the sample (merging shards renumbers `index[0]`)."""

    index: tuple[int, ...]
    value: float
    detail: str = ""


@dataclass(frozen=True)
class CheckOutcome:
    """The result of one of the recipe's checks (models.checks) on one output of one runner pair.

    `value` is the check's aggregate over every sample (lowest row cosine, agreement fraction, the
    worst value of a user's function), held to `threshold` by `relation` (">=" or "<="; "" when a
    user's function decides alone); `failing` of `total` `unit`s failed. `no_signal` says why the
    reference gave the check nothing to judge (a failure unless the check accepts it). Truthy when
    it passes.
    """

    name: str
    kind: str
    passed: bool
    value: float | None
    threshold: float | None
    relation: str
    failing: int
    total: int
    unit: str  # what `total` counts: "rows", "elements", "positions", "samples"
    worst: tuple[CheckWorst, ...] = ()  # the worst places, worst first (at most a few)
    reason: str = ""  # "" when passed
    no_signal: str = ""
    samples: int = 0

    def __bool__(self) -> bool:
        return self.passed

    @property
    def failure_text(self) -> str:
        """How a failed check reads in its comparison's reason."""
        return f"check '{self.name}' failed: {self.reason}"


@dataclass(frozen=True)
class OutputComparison:
    """Statistics and verdict for one output of one (reference, candidate) runner pair.

    Error statistics are None when no element pair was finite on both sides (or the output is
    empty). Median/quantile values are histogram estimates (within 12.5%). Truthy when it passes.
    """

    output: str
    ref_backend: str
    cand_backend: str
    tolerance: Tolerance
    passed: bool
    reason: str  # "" when passed
    samples: int
    elements: int
    finite_elements: int
    out_of_tolerance: int  # elements beyond atol + rtol*|ref|, non-finite mismatches included
    nonfinite_mismatches: int
    ref_nan: int
    ref_inf: int
    cand_nan: int
    cand_inf: int
    max_abs_err: float | None
    min_abs_err: float | None
    mean_abs_err: float | None
    std_abs_err: float | None
    median_abs_err: float | None
    quantile_abs_err: float | None  # at tolerance.quantile
    max_rel_err: float | None
    mean_rel_err: float | None
    median_rel_err: float | None
    quantile_rel_err: float | None
    rmse: float | None
    cosine_similarity: float | None
    # exact counts behind a median/quantile verdict; None for the other checks
    within_atol: int | None
    within_rtol: int | None
    argmax_agreement: float | None  # fraction of positions whose argmax over class_axis agrees
    argmax_positions: int
    worst: tuple[WorstElement, ...]
    abs_err_histogram: Bins = field(repr=False)
    rel_err_histogram: Bins = field(repr=False)
    # which sample set and precision group the comparison belongs to (see ComparisonGroup)
    sample_set: str = SAMPLES
    precision: str = "fp32"
    # samples whose two arrays differ in shape (e.g. 13 boxes vs 25): counted, not compared, a failure
    shape_mismatches: int = 0
    # why the reference carries no signal ("" when it does): a failure unless the tolerance accepts it
    no_signal: str = ""
    # the recipe's own checks of this output and pair (Recipe.checks); each gates `passed`
    checks: tuple[CheckOutcome, ...] = ()
    # the built-in statistics' verdict alone; None in results written before checks existed (= passed)
    statistics_passed: bool | None = None

    def __bool__(self) -> bool:
        return self.passed

    @property
    def within_tolerance(self) -> bool:
        """The built-in statistics passed (no-signal and the recipe's checks aside)."""
        return self.passed if self.statistics_passed is None else self.statistics_passed

    @property
    def no_signal_fails(self) -> bool:
        return bool(self.no_signal) and not self.tolerance.accept_no_signal

    @property
    def failed_checks(self) -> tuple[CheckOutcome, ...]:
        return tuple(c for c in self.checks if not c)

    @property
    def statistics_reason(self) -> str:
        """`reason` without the recipe's failed checks: why the statistics (or no signal) failed."""
        reason = self.reason
        for check in self.failed_checks:
            reason = reason.replace(check.failure_text, "")
        return "; ".join(part for part in (p.strip() for p in reason.split("; ")) if part)

    @property
    def out_of_tolerance_fraction(self) -> float:
        return self.out_of_tolerance / self.elements if self.elements else 0.0

    def abs_err_quantile(self, q: float) -> float | None:
        """Histogram estimate (within 12.5%) of any quantile of the abs error."""
        if not self.finite_elements:
            return None
        counts = counts_from_bins(self.abs_err_histogram)
        return quantile_from_histogram(counts, q, self.min_abs_err or 0.0, self.max_abs_err or 0.0)


@dataclass(frozen=True)
class MissingOutput:
    """An output one runner of a pair produced and the other did not (in some samples)."""

    output: str
    ref_backend: str
    cand_backend: str
    missing_from: str
    samples_missing: int
    samples: int
    reason: str
    sample_set: str = SAMPLES
    precision: str = "fp32"


@dataclass(frozen=True)
class CrossMatch:
    """Scores of every candidate output (rows) against every reference output (columns).

    `scores[i][j]` is None when candidate `cand_outputs[i]` and reference `ref_outputs[j]` are not
    compatible (or share no finite element). `best_match` maps each candidate output to its best
    scoring reference output (the same name on ties), None when nothing is compatible; those
    candidate outputs are listed in `unmatched`. `mismatched` lists the candidate outputs judged
    to carry another output's values, `mismatches` says so in words. Truthy when none is.
    """

    ref_backend: str
    cand_backend: str
    ref_outputs: tuple[str, ...]
    cand_outputs: tuple[str, ...]
    scores: tuple[tuple[float | None, ...], ...]
    best_match: dict[str, str | None]
    mismatched: tuple[str, ...]
    mismatches: tuple[str, ...]
    unmatched: tuple[str, ...]
    samples: int

    def __bool__(self) -> bool:
        return not self.mismatches

    def score(self, cand_output: str, ref_output: str) -> float | None:
        return self.scores[self.cand_outputs.index(cand_output)][self.ref_outputs.index(ref_output)]


@dataclass(frozen=True)
class SampleErrorMap:
    """The error map of one sample (and batch row, `label` says which), cells as in `ErrorMap`."""

    label: str
    shape: tuple[int, int]
    source_hw: tuple[int, int]
    block_hw: tuple[int, int]
    values: tuple[tuple[float | None, ...], ...]
    max: float | None
    nonfinite_mismatches: int


@dataclass(frozen=True)
class ErrorMap:
    """Mean abs error of one output per (block of) spatial position, over a pair's samples.

    `values` is `shape` cells, None where a cell had no finite element; each cell averages a
    `block_hw` block of the output's (height, width) = `source_hw`. `omitted` says why the map over
    all samples could not be drawn (e.g. samples of different spatial sizes; `values` is then empty);
    `per_sample` holds the maps of the first few samples (batch rows), drawn whatever their sizes.
    """

    output: str
    ref_backend: str
    cand_backend: str
    shape: tuple[int, int]
    source_hw: tuple[int, int]
    block_hw: tuple[int, int]
    spatial_axes: tuple[int, int]
    samples: int
    values: tuple[tuple[float | None, ...], ...]
    max: float | None
    nonfinite_mismatches: int
    omitted: str | None = None
    per_sample: tuple[SampleErrorMap, ...] = ()


@dataclass(frozen=True)
class ComparisonGroup:
    """Runner pairs (reference first) compared on one sample set at one precision."""

    sample_set: str
    precision: str
    pairs: tuple[tuple[str, str], ...]
    samples: int = 0


@dataclass(frozen=True)
class PairNotCompared:
    """A pair of FP32 runners that would be compared but was not, and why (e.g. one did not execute)."""

    ref_backend: str
    cand_backend: str
    reason: str
