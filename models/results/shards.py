"""The mergeable state of the streaming comparison, and which slice of the samples a run judged.

A run started with `--shard i/n` judges samples [i*N//n, (i+1)*N//n) of the recipe's N samples and
writes the full accumulator state of every comparison (`comparison_state.json`) beside its results.
Merging the states of shards 1..n in order gives the state one run over all samples ends with, field
for field: counts and extremes are exact, sums are kept exactly (the non-overlapping float partials
of Shewchuk's algorithm, whose rounded sum does not depend on the order terms came in), histograms
have fixed bins and add bin by bin, and the worst-k list is kept in the order one run meets elements.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from trt_harness.models.checks import Check
from trt_harness.models.recipe import Tolerance
from trt_harness.models.results.comparisons import CheckWorst, WorstElement

STATE_FILE = "comparison_state.json"
STATE_SCHEMA = "trt-harness/comparison-state/1"


@dataclass(frozen=True)
class Shard:
    """Slice `index` (0-based) of `count` of the recipe's `total` samples: samples [first, first + samples)."""

    index: int
    count: int
    first: int
    samples: int
    total: int

    @property
    def label(self) -> str:
        return f"{self.index + 1}/{self.count}"


@dataclass(frozen=True)
class ExactSumState:
    """A float64 sum kept exactly: non-overlapping partials; `nonfinite` holds Inf/NaN terms apart."""

    partials: tuple[float, ...] = ()
    nonfinite: float = 0.0


@dataclass(frozen=True)
class ShapeMismatchState:
    sample: int
    ref_shape: tuple[int, ...]
    cand_shape: tuple[int, ...]


@dataclass(frozen=True)
class AccumulatorState:
    """Everything `OutputAccumulator` knows after its samples; histograms as (bucket, count) pairs."""

    output: str
    ref_backend: str
    cand_backend: str
    tolerance: Tolerance
    worst_k: int
    class_axis: int | None
    samples: int
    elements: int
    finite: int
    out_of_tol: int
    nonfinite_mismatches: int
    ref_nan: int
    ref_inf: int
    cand_nan: int
    cand_inf: int
    abs_sum: ExactSumState
    abs_sq_sum: ExactSumState
    rel_sum: ExactSumState
    dot_rc: ExactSumState
    dot_rr: ExactSumState
    dot_cc: ExactSumState
    abs_max: float
    abs_min: float
    rel_max: float
    rel_min: float
    within_atol: int
    within_rtol: int
    argmax_equal: int
    argmax_positions: int
    abs_counts: tuple[tuple[int, int], ...]
    rel_counts: tuple[tuple[int, int], ...]
    worst: tuple[WorstElement, ...]
    shape: tuple[int, ...]
    shape_mismatches: int
    first_shape_mismatch: ShapeMismatchState | None
    # for the no-signal test: positions whose reference is constant along the class axis, max |ref|
    argmax_constant: int = 0
    ref_abs_max: float = 0.0


@dataclass(frozen=True)
class CheckState:
    """Everything one evaluator of a recipe's check (harness.checks) knows after its samples: its
    integer tallies (merged by adding), its extremes and its lists of worst places (indices numbered
    from its own first sample), each by the name the evaluator gives it."""

    output: str
    ref_backend: str
    cand_backend: str
    check: Check
    samples: int
    skipped: int
    counts: Mapping[str, int] = field(default_factory=dict)
    extremes: Mapping[str, float | None] = field(default_factory=dict)
    worst: Mapping[str, tuple[CheckWorst, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class MissingCount:
    ref_backend: str
    cand_backend: str
    output: str
    side: str
    count: int


@dataclass(frozen=True)
class RunComparisonState:
    """The state of one `compare_runs` call (one comparison group of a run)."""

    pairs: tuple[tuple[str, str], ...]
    samples: int
    output_order: tuple[str, ...]
    accumulators: tuple[AccumulatorState, ...]
    missing: tuple[MissingCount, ...] = ()
    sample_set: str = ""
    precision: str = ""
    checks: tuple[CheckState, ...] = ()  # the recipe's checks' evaluators, one per (pair, output, check)


@dataclass(frozen=True)
class ComparisonStates:
    """The file a run writes: the state of every comparison group, and the slice of samples it judged."""

    schema: str
    groups: tuple[RunComparisonState, ...]
    shard: Shard | None = None
