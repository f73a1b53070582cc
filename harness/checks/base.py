"""The contract every check evaluator keeps, the registry that finds one by its declaration's kind,
and the bounded list of worst places each evaluator reports.

An evaluator sees one output of one runner pair, one sample at a time (`update`), and keeps only
fixed-size state, like the statistics' accumulator; `result` gives the typed `CheckOutcome`.
Like the accumulator it merges exactly (`state`/`merge`, for a sample set split over shards): its
integer tallies add, its extremes combine in `merge_extremes`, its worst lists keep one run's order.
A worst place's `detail` never names its sample, which merging renumbers: `index[0]` does.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, Generic, TypeVar

import numpy as np
from trt_harness.models.checks import Check
from trt_harness.models.core.errors import UsageError
from trt_harness.models.core.registry import Registry
from trt_harness.models.results.comparisons import CheckOutcome, CheckWorst
from trt_harness.models.results.shards import CheckState

C = TypeVar("C", bound=Check)

# how many worst rows / samples / positions an outcome names
WORST_K = 5


class CheckEvaluator(Generic[C]):
    """Streams one check over one output of one pair. Subclasses set `kind` (the declaration's tag)
    and write `update_impl` (one sample, same shapes on both sides) and `result_impl`."""

    kind: ClassVar[str]
    # the names of its integer tallies (attributes), which merging adds
    counts: ClassVar[tuple[str, ...]] = ()
    # the names of its WorstList attributes
    worst_lists: ClassVar[tuple[str, ...]] = ("worst",)

    def __init__(self, check: C, output: str) -> None:
        self.check = check
        self.output = output
        self.samples = 0
        self.skipped = 0  # samples whose two sides differ in shape (the statistics fail those)

    def where(self) -> str:
        return f"check '{self.check.name}' of output '{self.output}'"

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        ref, cand = np.asarray(ref), np.asarray(cand)
        if ref.shape != cand.shape:
            self.skipped += 1
        else:
            self.update_impl(ref, cand, self.samples)
        self.samples += 1

    def update_impl(self, ref: np.ndarray, cand: np.ndarray, sample: int) -> None:
        raise NotImplementedError

    def result(self) -> CheckOutcome:
        return self.result_impl()

    # --- merging (see the module doc) ---------------------------------------------------------------

    def extremes(self) -> dict[str, float | None]:
        """Its values that are not tallies (a lowest cosine, a worst value), by name."""
        return {}

    def merge_extremes(self, other: Mapping[str, float | None]) -> None:
        """Combine another evaluator's `extremes` (of later samples) into this one's."""

    def state(self, ref_backend: str, cand_backend: str) -> CheckState:
        return CheckState(
            output=self.output,
            ref_backend=ref_backend,
            cand_backend=cand_backend,
            check=self.check,
            samples=self.samples,
            skipped=self.skipped,
            counts={name: getattr(self, name) for name in self.counts},
            extremes=self.extremes(),
            worst={name: getattr(self, name).entries for name in self.worst_lists},
        )

    def merge(self, other: CheckState) -> None:
        """Add another evaluator's state, whose samples come after this one's (shard i+1 after i)."""
        if other.check != self.check or other.output != self.output:
            raise UsageError(
                f"cannot merge {self.where()} with check '{other.check.name}' of output '{other.output}' "
                "declared otherwise; merge shards of one recipe run with the same recipe"
            )
        offset = self.samples
        for name in self.counts:
            setattr(self, name, getattr(self, name) + other.counts.get(name, 0))
        self.merge_extremes(other.extremes)
        for name in self.worst_lists:
            getattr(self, name).merge(other.worst.get(name, ()), offset)
        self.samples += other.samples
        self.skipped += other.skipped

    def result_impl(self) -> CheckOutcome:
        raise NotImplementedError

    def outcome(
        self,
        *,
        met: bool,
        value: float | None,
        threshold: float | None,
        relation: str,
        failing: int,
        total: int,
        unit: str,
        worst: Sequence[CheckWorst] = (),
        failure: str = "",
        no_signal: str = "",
    ) -> CheckOutcome:
        """The outcome with its verdict: `met` and a signal (or an accepted lack of one); `failure`
        says in words why `met` is false."""
        reasons = []
        if not total:
            reasons.append(f"nothing to judge: no {unit} were compared")
        elif not met:
            reasons.append(failure)
        if no_signal and not self.check.accept_no_signal:
            reasons.append(
                f"no signal: {no_signal}; set accept_no_signal=True on the check if that is expected"
            )
        return CheckOutcome(
            name=self.check.name,
            kind=self.kind,
            passed=not reasons,
            value=value,
            threshold=threshold,
            relation=relation,
            failing=failing,
            total=total,
            unit=unit,
            worst=tuple(worst),
            reason="; ".join(reasons),
            no_signal=no_signal,
            samples=self.samples,
        )


CHECKS: Registry[type[CheckEvaluator]] = Registry(
    "check", package="trt_harness.harness.checks", hint="declare checks with the types of models.checks"
)


def register_check(cls: type[CheckEvaluator]) -> type[CheckEvaluator]:
    return CHECKS.register(cls.kind, cls)


def evaluator_for(check: Check, output: str) -> CheckEvaluator:
    return CHECKS.get(check.kind)(check, output)


def evaluator_from_state(state: CheckState) -> CheckEvaluator:
    """An evaluator that goes on from `state` (its sample numbering continues)."""
    evaluator = evaluator_for(state.check, state.output)
    evaluator.merge(state)
    return evaluator


def axes_in_range(axes: Sequence[int], ndim: int, evaluator: CheckEvaluator) -> tuple[int, ...]:
    """`axes` made non-negative; a usage error naming the check when one is out of range or repeated."""
    if any(not -ndim <= a < ndim for a in axes):
        raise UsageError(
            f"{evaluator.where()}: axis {list(axes)} is out of range for an output of {ndim} dimensions; "
            "fix the check's axes in the recipe"
        )
    normalized = tuple(a % ndim for a in axes)
    if len(set(normalized)) != len(normalized):
        raise UsageError(f"{evaluator.where()}: axes {list(axes)} repeat an axis")
    return normalized


def rows_of(array: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    """`array` as float64 (rows, elements of a row) with a row spanning `axes`, and the shape that
    row numbers unravel into (the other axes)."""
    other = tuple(a for a in range(array.ndim) if a not in axes)
    row_shape = tuple(array.shape[a] for a in other)
    width = math.prod(array.shape[a] for a in axes)
    moved = np.transpose(array, (*other, *axes)).reshape(math.prod(row_shape), width)
    return moved.astype(np.float64, copy=False), row_shape


class WorstList:
    """The k lowest-scoring places seen so far (a lower score is worse; NaN is worst of all); of
    equal scores the one met first stays first. A place's score is `score_of(place)`, its value
    unless the evaluator says otherwise."""

    def __init__(self, k: int = WORST_K, score_of: Callable[[CheckWorst], float] | None = None) -> None:
        self.k = k
        self.score_of = score_of or (lambda place: place.value)
        self._entries: list[tuple[float, int, CheckWorst]] = []
        self._seen = 0

    @staticmethod
    def _key(score: float) -> float:
        return -math.inf if math.isnan(score) else score

    def floor(self) -> float:
        """Scores above this cannot enter the list."""
        return self._entries[-1][0] if len(self._entries) == self.k else math.inf

    def offer(self, entry: CheckWorst) -> None:
        key = self._key(self.score_of(entry))
        if key > self.floor() or (key == self.floor() and len(self._entries) == self.k):
            return
        self._seen += 1
        # of equal scores the one met first stays first (sort is stable, the counter breaks ties)
        self._entries = sorted([*self._entries, (key, self._seen, entry)], key=lambda e: (e[0], e[1]))[
            : self.k
        ]

    def merge(self, entries: Sequence[CheckWorst], offset: int) -> None:
        """Offer a later shard's list, its samples renumbered to follow this one's: the k lowest of
        both are the k lowest of every place either shard met, in one run's order."""
        for entry in entries:
            self.offer(dataclasses.replace(entry, index=(entry.index[0] + offset, *entry.index[1:])))

    def lowest(self, scores: np.ndarray) -> np.ndarray:
        """Indices of the at most k lowest of `scores` (NaN first), lowest first, earliest on ties."""
        keys = np.where(np.isnan(scores), -np.inf, scores)
        return np.lexsort((np.arange(keys.size), keys))[: self.k]

    @property
    def entries(self) -> tuple[CheckWorst, ...]:
        return tuple(e for _, _, e in self._entries)


def index_text(index: Sequence[int]) -> str:
    return "[" + ", ".join(str(i) for i in index) + "]"


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0 or not math.isfinite(x) or 1e-3 <= abs(x) < 1e5:
        text = f"{x:.6g}"
        if float(text) == 1 and x != 1:  # a cosine just below 1 must not read as 1
            return f"1 - {1 - x:.2g}"
        return text
    return f"{x:.3e}"
