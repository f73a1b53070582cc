"""ThresholdAgreement: both sides decide `value > threshold` alike for enough of the elements."""

from __future__ import annotations

import numpy as np
from trt_harness.harness.checks.base import CheckEvaluator, WorstList, fmt, index_text, register_check
from trt_harness.models.checks import ThresholdAgreement
from trt_harness.models.results.comparisons import CheckOutcome, CheckWorst


@register_check
class ThresholdAgreementEvaluator(CheckEvaluator[ThresholdAgreement]):
    kind = "threshold_agreement"

    counts = ("elements", "disagreeing", "ref_above")

    def __init__(self, check: ThresholdAgreement, output: str) -> None:
        super().__init__(check, output)
        self.elements = 0
        self.disagreeing = 0
        self.ref_above = 0
        self.worst = WorstList()

    def update_impl(self, ref: np.ndarray, cand: np.ndarray, sample: int) -> None:
        t = self.check.threshold
        ref_above = ref > t
        # NaN is never above the threshold; NaN on one side only is a disagreement all the same
        differs = (ref_above != (cand > t)) | (np.isnan(ref) != np.isnan(cand))
        n, bad = ref.size, int(np.count_nonzero(differs))
        self.elements += n
        self.disagreeing += bad
        self.ref_above += int(np.count_nonzero(ref_above))
        if bad and n:
            first = np.unravel_index(int(np.flatnonzero(differs)[0]), ref.shape)
            index = (sample, *(int(i) for i in first))
            agreement = 1.0 - bad / n
            detail = (
                f"{bad:,} of {n:,} elements disagree; first at {index_text(index[1:])} "
                f"(reference {fmt(float(ref[first]))}, candidate {fmt(float(cand[first]))})"
            )
            self.worst.offer(CheckWorst(index, agreement, detail))

    def result_impl(self) -> CheckOutcome:
        check = self.check
        n = self.elements
        agreement = 1.0 - self.disagreeing / n if n else None
        worst = self.worst.entries
        failure = (
            f"decisions '> {fmt(check.threshold)}' agree on {fmt(agreement)} of {n:,} elements, below "
            f"{fmt(check.min_agreement)}; worst sample {worst[0].index[0]}: {worst[0].detail}"
            if worst and agreement is not None
            else ""
        )
        no_signal = ""
        if n and self.ref_above in (0, n):
            side = "none" if self.ref_above == 0 else "every one"
            no_signal = (
                f"{side} of the {n:,} reference elements is above the threshold {fmt(check.threshold)}, "
                "so agreement says nothing about the decision"
            )
        return self.outcome(
            met=agreement is not None and agreement >= check.min_agreement,
            value=agreement,
            threshold=check.min_agreement,
            relation=">=",
            failing=self.disagreeing,
            total=n,
            unit="elements",
            worst=worst,
            failure=failure,
            no_signal=no_signal,
        )
