"""RowCosine: the cosine similarity of every row (e.g. every token's embedding) must reach a floor."""

from __future__ import annotations

import math
from collections.abc import Mapping

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
from trt_harness.models.checks import RowCosine
from trt_harness.models.results.comparisons import CheckOutcome, CheckWorst


@register_check
class RowCosineEvaluator(CheckEvaluator[RowCosine]):
    kind = "row_cosine"

    counts = ("rows", "failing", "ref_zero_rows")

    def __init__(self, check: RowCosine, output: str) -> None:
        super().__init__(check, output)
        self.rows = 0
        self.failing = 0
        self.lowest = math.inf
        self.worst = WorstList()
        self.ref_zero_rows = 0

    def update_impl(self, ref: np.ndarray, cand: np.ndarray, sample: int) -> None:
        axes = axes_in_range(self.check.axes, ref.ndim, self)
        r, row_shape = rows_of(ref, axes)
        c, _ = rows_of(cand, axes)
        if not r.size:
            return
        # einsum, not np.dot/matmul: BLAS threads stall on busy CI cores (see harness.comparison)
        dot = np.einsum("ij,ij->i", r, c)
        ref_norm = np.sqrt(np.einsum("ij,ij->i", r, r))
        cand_norm = np.sqrt(np.einsum("ij,ij->i", c, c))
        norms = ref_norm * cand_norm
        with np.errstate(invalid="ignore", divide="ignore"):
            cosine = np.clip(dot / norms, -1.0, 1.0)
        # Polygraphy's convention: two zero rows are identical, a zero row against another scores 0
        zero = norms == 0
        cosine[zero] = np.where((ref_norm == 0) & (cand_norm == 0), 1.0, 0.0)[zero]
        self.ref_zero_rows += int(np.count_nonzero(ref_norm == 0))
        below = ~(cosine >= self.check.min_cosine)  # NaN (a non-finite row) fails
        self.rows += cosine.size
        self.failing += int(np.count_nonzero(below))
        if np.isnan(cosine).any():
            self.lowest = math.nan  # a non-finite row is the worst there can be, and stays so
        elif not math.isnan(self.lowest):
            self.lowest = min(self.lowest, float(cosine.min()))
        for row in self.worst.lowest(cosine):
            index = (sample, *np.unravel_index(int(row), row_shape)) if row_shape else (sample,)
            index = tuple(int(i) for i in index)
            value = float(cosine[row])
            self.worst.offer(CheckWorst(index, value, f"cosine {fmt(value)}"))

    def extremes(self) -> dict[str, float | None]:
        return {"lowest": self.lowest}

    def merge_extremes(self, other: Mapping[str, float | None]) -> None:
        theirs = other.get("lowest")
        theirs = math.inf if theirs is None else theirs
        # a non-finite row (NaN) stays the worst, whichever shard met it
        self.lowest = math.nan if math.isnan(self.lowest) or math.isnan(theirs) else min(self.lowest, theirs)

    def result_impl(self) -> CheckOutcome:
        check = self.check
        lowest = None if not self.rows else self.lowest
        worst = self.worst.entries
        failure = (
            f"{self.failing:,} of {self.rows:,} rows have cosine similarity below {fmt(check.min_cosine)}; "
            f"worst row {index_text(worst[0].index)}: {worst[0].detail} (index: sample, row)"
            if worst
            else ""
        )
        no_signal = ""
        if self.rows and self.ref_zero_rows == self.rows:
            no_signal = f"every one of the {self.rows:,} reference rows is zero"
        return self.outcome(
            met=self.failing == 0,
            value=lowest,
            threshold=check.min_cosine,
            relation=">=",
            failing=self.failing,
            total=self.rows,
            unit="rows",
            worst=worst,
            failure=failure,
            no_signal=no_signal,
        )
