"""FunctionCheck: a user's function over one sample's (reference, candidate) arrays decides."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from trt_harness.harness.checks.base import CheckEvaluator, WorstList, fmt, register_check
from trt_harness.models.checks import CheckFunction, CheckResult, FunctionCheck
from trt_harness.models.core.errors import UsageError
from trt_harness.models.results.comparisons import CheckOutcome, CheckWorst


@register_check
class FunctionCheckEvaluator(CheckEvaluator[FunctionCheck]):
    kind = "function"

    counts = ("judged", "failing")
    worst_lists = ("worst_failing", "worst_passing")

    def __init__(self, check: FunctionCheck, output: str) -> None:
        super().__init__(check, output)
        # resolved at the first sample: merging shards' states needs no import of the user's code
        self._function: CheckFunction | None = None
        self.judged = 0
        self.failing = 0
        self.extreme: float | None = None
        self.threshold: float | None = None
        # failing samples are named before passing ones, each list by value
        score = lambda place: self._score(place.value)  # noqa: E731
        self.worst_failing = WorstList(score_of=score)
        self.worst_passing = WorstList(score_of=score)

    def _score(self, value: float) -> float:
        """Lower is worse, whichever way the function's values run."""
        return value if self.check.better == "higher" else -value

    def update_impl(self, ref: np.ndarray, cand: np.ndarray, sample: int) -> None:
        check = self.check
        if self._function is None:
            self._function = check.resolve()
        try:
            result = self._function(ref, cand)
        except Exception as e:  # the user's code: name it and the sample, as a usage error
            message = str(e).strip().splitlines()[0] if str(e).strip() else "(no message)"
            raise UsageError(
                f"{self.where()}: {check.function} raised {type(e).__name__} on sample {sample}: "
                f"{message}; fix the check function"
            ) from e
        if not isinstance(result, CheckResult):
            raise UsageError(
                f"{self.where()}: {check.function} returned {type(result).__name__}; a check function "
                "must return models.checks.CheckResult(value, passed)"
            )
        value = float(result.value)
        self.judged += 1
        if result.threshold is not None and self.threshold is None:
            self.threshold = float(result.threshold)
        if not result.passed:
            self.failing += 1
        self._meet(value)
        verdict = "passed" if result.passed else "failed"
        detail = f"{fmt(value)}, {verdict}" + (f" ({result.detail})" if result.detail else "")
        worst = self.worst_passing if result.passed else self.worst_failing
        worst.offer(CheckWorst((sample,), value, detail))

    def _meet(self, value: float | None) -> None:
        """Keep the worst value; NaN is the worst there is, and once met stays the worst."""
        if value is None:
            return
        if self.extreme is None or (
            not math.isnan(self.extreme)
            and (math.isnan(value) or self._score(value) < self._score(self.extreme))
        ):
            self.extreme = value

    def extremes(self) -> dict[str, float | None]:
        return {"extreme": self.extreme, "threshold": self.threshold}

    def merge_extremes(self, other: Mapping[str, float | None]) -> None:
        self._meet(other.get("extreme"))
        if self.threshold is None:  # the first threshold a sample gave, as in one run
            self.threshold = other.get("threshold")

    def result_impl(self) -> CheckOutcome:
        worst = (*self.worst_failing.entries, *self.worst_passing.entries)[: self.worst_failing.k]
        relation = "" if self.threshold is None else (">=" if self.check.better == "higher" else "<=")
        return self.outcome(
            met=self.failing == 0,
            value=self.extreme,
            threshold=self.threshold,
            relation=relation,
            failing=self.failing,
            total=self.judged,
            unit="samples",
            worst=worst,
            failure=f"{self.check.function} fails {self.failing} of {self.judged} samples; worst sample {worst[0].index[0]}: {worst[0].detail}"
            if worst
            else "",
        )
