"""FunctionCheck: a user's function over one sample's (reference, candidate) arrays decides."""

from __future__ import annotations

import math

import numpy as np
from trt_harness.harness.checks.base import CheckEvaluator, WorstList, fmt, register_check
from trt_harness.models.checks import CheckResult, FunctionCheck
from trt_harness.models.core.errors import UsageError
from trt_harness.models.results.comparisons import CheckOutcome, CheckWorst


@register_check
class FunctionCheckEvaluator(CheckEvaluator[FunctionCheck]):
    kind = "function"

    def __init__(self, check: FunctionCheck, output: str) -> None:
        super().__init__(check, output)
        self.function = check.resolve()
        self.judged = 0
        self.failing = 0
        self.extreme: float | None = None
        self.threshold: float | None = None
        # failing samples are named before passing ones, each list by value
        self.worst_failing = WorstList()
        self.worst_passing = WorstList()

    def _score(self, value: float) -> float:
        """Lower is worse, whichever way the function's values run."""
        return value if self.check.better == "higher" else -value

    def update_impl(self, ref: np.ndarray, cand: np.ndarray, sample: int) -> None:
        check = self.check
        try:
            result = self.function(ref, cand)
        except Exception as e:  # the user's code: name it and the sample, as a usage error
            raise UsageError(
                f"{self.where()}: {check.function} raised {type(e).__name__} on sample {sample}: {e}; "
                "fix the check function"
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
        # NaN is the worst value there is, and once met stays the worst
        if self.extreme is None or (
            not math.isnan(self.extreme)
            and (math.isnan(value) or self._score(value) < self._score(self.extreme))
        ):
            self.extreme = value
        verdict = "passed" if result.passed else "failed"
        detail = f"sample {sample}: {fmt(value)}, {verdict}" + (
            f" ({result.detail})" if result.detail else ""
        )
        worst = self.worst_passing if result.passed else self.worst_failing
        worst.offer(self._score(value), CheckWorst((sample,), value, detail))

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
            failure=f"{self.check.function} fails {self.failing} of {self.judged} samples; worst {worst[0].detail}"
            if worst
            else "",
        )
