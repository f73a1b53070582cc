"""Ordering-mismatch check: does each candidate output best match the reference output of its name?

An exporter or a builder can keep the names but permute the outputs (the classic case is two
outputs of the same shape). Comparing by name then reports a large error and hides the cause;
scoring every candidate output against every shape-compatible reference output tells.

Score = relative L2 error ||cand - ref|| / max(||ref||, ||cand||) over the elements finite on both
sides, summed over samples (0 = identical, about 1.4 for unrelated data, two zero outputs score 0).
Two outputs are compatible when they have the same shape or the same number of elements (compared
flattened) in every sample.

A candidate output is an ordering mismatch when another reference output matches it clearly better
than the reference output of its own name: score_other <= score_same / CLEAR_RATIO, and
score_same - score_other >= CLEAR_GAP, and score_other <= GOOD_MATCH. A same-name output of an
incompatible shape counts as score_same = inf. The margins keep near-identical outputs (e.g. a
value and its clamped copy, or duplicate constants) from flipping on rounding noise.

A candidate output whose name the reference lacks is not judged (a naming problem, which the
comparison reports as a missing output); its best match is still recorded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from trt_harness.harness.backends.base import display_name
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.results.comparisons import CrossMatch

CLEAR_RATIO = 10.0
CLEAR_GAP = 1e-2
GOOD_MATCH = 0.25

Outputs = Mapping[str, np.ndarray]


class _PairSums:
    """Sums over samples behind the score of one (candidate, reference) output pair."""

    def __init__(self) -> None:
        self.diff_sq = self.ref_sq = self.cand_sq = 0.0
        self.finite = 0
        self.compatible = True

    def add(self, ref: np.ndarray, cand: np.ndarray) -> None:
        if not self.compatible:
            return
        if ref.shape != cand.shape and ref.size != cand.size:
            self.compatible = False
            return
        ref = ref.reshape(-1).astype(np.float64)
        cand = cand.reshape(-1).astype(np.float64)
        finite = np.isfinite(ref) & np.isfinite(cand)
        if not finite.all():
            ref, cand = ref[finite], cand[finite]
        diff = cand - ref
        self.diff_sq += float(np.einsum("i,i->", diff, diff))
        self.ref_sq += float(np.einsum("i,i->", ref, ref))
        self.cand_sq += float(np.einsum("i,i->", cand, cand))
        self.finite += ref.size

    def score(self) -> float | None:
        if not self.compatible or not self.finite:
            return None
        scale = math.sqrt(max(self.ref_sq, self.cand_sq))
        diff = math.sqrt(self.diff_sq)
        return 0.0 if diff == 0 else diff / scale


def cross_match(
    ref: Outputs | Sequence[Outputs],
    cand: Outputs | Sequence[Outputs],
    *,
    ref_backend: str,
    cand_backend: str,
) -> CrossMatch:
    """Score every candidate output against every compatible reference output, over one or more samples.

    `ref` and `cand` are `{output name: array}` for one sample, or equally long lists of them.
    """
    ref_samples = [ref] if isinstance(ref, Mapping) else list(ref)
    cand_samples = [cand] if isinstance(cand, Mapping) else list(cand)
    if len(ref_samples) != len(cand_samples):
        raise HarnessError(
            f"cross-match of {display_name(cand_backend)} against {display_name(ref_backend)} got "
            f"{len(cand_samples)} candidate samples but {len(ref_samples)} reference samples; "
            "pass the outputs of the same samples from both backends"
        )
    ref_names = tuple(dict.fromkeys(name for sample in ref_samples for name in sample))
    cand_names = tuple(dict.fromkeys(name for sample in cand_samples for name in sample))
    sums = {(c, r): _PairSums() for c in cand_names for r in ref_names}
    for ref_sample, cand_sample in zip(ref_samples, cand_samples, strict=True):
        for c_name, c_array in cand_sample.items():
            c_array = np.asarray(c_array)
            for r_name in ref_names:
                if r_name in ref_sample:
                    sums[(c_name, r_name)].add(np.asarray(ref_sample[r_name]), c_array)
                else:
                    sums[(c_name, r_name)].compatible = False

    scores = tuple(tuple(sums[(c, r)].score() for r in ref_names) for c in cand_names)
    best_match: dict[str, str | None] = {}
    mismatches = []
    mismatched = []
    for c_name, row in zip(cand_names, scores, strict=True):
        scored = {r: s for r, s in zip(ref_names, row, strict=True) if s is not None}
        if not scored:
            best_match[c_name] = None
            continue
        # min() keeps the first of equal scores: put the same name first so ties keep it.
        ordered = sorted(scored, key=lambda r: r != c_name)
        best = min(ordered, key=lambda r: scored[r])
        best_match[c_name] = best
        if c_name not in ref_names or best == c_name:
            continue
        same = scored.get(c_name, math.inf)
        other = scored[best]
        if other <= same / CLEAR_RATIO and same - other >= CLEAR_GAP and other <= GOOD_MATCH:
            mismatched.append(c_name)
            mismatches.append(
                f"ordering mismatch: {display_name(cand_backend)} '{c_name}' matches "
                f"{display_name(ref_backend)} '{best}'"
            )
    return CrossMatch(
        ref_backend=ref_backend,
        cand_backend=cand_backend,
        ref_outputs=ref_names,
        cand_outputs=cand_names,
        scores=scores,
        best_match=best_match,
        mismatched=tuple(mismatched),
        mismatches=tuple(mismatches),
        unmatched=tuple(c for c in cand_names if best_match[c] is None),
        samples=len(ref_samples),
    )
