"""The contract every check evaluator keeps, the registry that finds one by its declaration's kind,
and the bounded list of worst places each evaluator reports.

An evaluator sees one output of one runner pair, one sample at a time (`update`), and keeps only
fixed-size state, like the statistics' accumulator; `result` gives the typed `CheckOutcome`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Generic, TypeVar

import numpy as np
from trt_harness.models.checks import Check
from trt_harness.models.core.errors import UsageError
from trt_harness.models.core.registry import Registry
from trt_harness.models.results.comparisons import CheckOutcome, CheckWorst

C = TypeVar("C", bound=Check)

# how many worst rows / samples / positions an outcome names
WORST_K = 5


class CheckEvaluator(Generic[C]):
    """Streams one check over one output of one pair. Subclasses set `kind` (the declaration's tag)
    and write `update_impl` (one sample, same shapes on both sides) and `result_impl`."""

    kind: ClassVar[str]

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
    """The k lowest-scoring places seen so far (a lower score is worse; NaN is worst of all)."""

    def __init__(self, k: int = WORST_K) -> None:
        self.k = k
        self._entries: list[tuple[float, int, CheckWorst]] = []
        self._seen = 0

    @staticmethod
    def _key(score: float) -> float:
        return -math.inf if math.isnan(score) else score

    def floor(self) -> float:
        """Scores above this cannot enter the list."""
        return self._entries[-1][0] if len(self._entries) == self.k else math.inf

    def offer(self, score: float, entry: CheckWorst) -> None:
        key = self._key(score)
        if key > self.floor() or (key == self.floor() and len(self._entries) == self.k):
            return
        self._seen += 1
        # of equal scores the one met first stays first (sort is stable, the counter breaks ties)
        self._entries = sorted([*self._entries, (key, self._seen, entry)], key=lambda e: (e[0], e[1]))[
            : self.k
        ]

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
        return f"{x:.6g}"
    return f"{x:.3e}"
