"""TopKAgreement: the reference's top-k indices along the class axis are found in the candidate's."""

from __future__ import annotations

import numpy as np
from trt_harness.harness.checks.base import (
    CheckEvaluator,
    WorstList,
    axes_in_range,
    fmt,
    index_text,
    register_check,
    rows_of,
)
from trt_harness.models.checks import TopKAgreement
from trt_harness.models.core.errors import UsageError
from trt_harness.models.results.comparisons import CheckOutcome, CheckWorst


def top_indices(rows: np.ndarray, k: int) -> np.ndarray:
    """The k largest of each row, largest first; of equal values the lower index first."""
    return np.argsort(-rows, axis=1, kind="stable")[:, :k]


@register_check
class TopKAgreementEvaluator(CheckEvaluator[TopKAgreement]):
    kind = "topk_agreement"

    counts = ("positions", "constant", "failing")

    def __init__(self, check: TopKAgreement, output: str) -> None:
        super().__init__(check, output)
        self.positions = 0
        self.constant = 0  # positions whose reference is constant along the axis: no top k to judge
        self.failing = 0
        self.worst = WorstList()

    def update_impl(self, ref: np.ndarray, cand: np.ndarray, sample: int) -> None:
        check = self.check
        (axis,) = axes_in_range((check.axis,), ref.ndim, self)
        classes = ref.shape[axis]
        if check.cand_k > classes:
            raise UsageError(
                f"{self.where()}: k={check.cand_k} but axis {check.axis} has only {classes} entries; "
                "lower k (or candidate_k) in the recipe"
            )
        r, position_shape = rows_of(ref, (axis,))
        c, _ = rows_of(cand, (axis,))
        if not r.size:
            return
        judged = np.ptp(r, axis=1) != 0
        ref_top = top_indices(r, check.k)
        cand_top = top_indices(c, check.cand_k)
        if check.ordered:
            agree = np.all(ref_top == cand_top, axis=1)
        else:
            agree = np.all(np.any(ref_top[:, :, None] == cand_top[:, None, :], axis=2), axis=1)
        failed = judged & ~agree
        self.positions += int(np.count_nonzero(judged))
        self.constant += int(judged.size - np.count_nonzero(judged))
        self.failing += int(np.count_nonzero(failed))
        for position in np.flatnonzero(failed)[: self.worst.k]:
            where = np.unravel_index(int(position), position_shape) if position_shape else ()
            index = (sample, *(int(i) for i in where))
            found = float(np.isin(ref_top[position], cand_top[position]).mean())
            detail = (
                f"reference top {check.k} {ref_top[position].tolist()}, "
                f"candidate top {check.cand_k} {cand_top[position].tolist()}"
            )
            self.worst.offer(CheckWorst(index, found, detail))

    def result_impl(self) -> CheckOutcome:
        check = self.check
        n = self.positions
        agreement = 1.0 - self.failing / n if n else None
        worst = self.worst.entries
        how = (
            f"in the same order as the candidate's top {check.k}"
            if check.ordered
            else (f"within the candidate's top {check.cand_k}")
        )
        failure = (
            f"the reference's top {check.k} lie {how} at {fmt(agreement)} of {n:,} positions, below "
            f"{fmt(check.min_agreement)}; first at position {index_text(worst[0].index)}: {worst[0].detail} "
            "(index: sample, position)"
            if worst and agreement is not None
            else ""
        )
        no_signal = ""
        if self.constant and not n:
            no_signal = (
                f"the reference is constant along axis {check.axis} at every one of its {self.constant:,} "
                "positions, so it has no top k"
            )
        return self.outcome(
            met=agreement is not None and agreement >= check.min_agreement,
            value=agreement,
            threshold=check.min_agreement,
            relation=">=",
            failing=self.failing,
            total=n,
            unit="positions",
            worst=worst,
            failure=failure,
            no_signal=no_signal,
        )
