"""Streaming numerical comparison of one backend's outputs against a reference backend's.

`OutputAccumulator` consumes one (reference, candidate) array pair per sample and keeps only
fixed-size state (float64 sums, two histograms, a bounded worst-k list), so memory does not grow
with the number of samples. `compare_runs` drives one accumulator per backend pair and output name.

Definitions (all accumulated in float64):

- abs error = |cand - ref|; rel error = abs error / max(|ref|, REL_ERR_FLOOR).
- Error statistics cover the elements where both sides are finite. A NaN or Inf on one side at a
  position where the other side does not hold the same non-finite value (NaN/NaN, +Inf/+Inf and
  -Inf/-Inf agree) is a *non-finite mismatch*; it always fails the comparison and counts as out of
  tolerance. An abs error that overflows float64 counts as a non-finite mismatch too.
- Median and quantile *values* are estimated from a histogram with 8 bins per power of two (the
  float64 exponent plus the top 3 mantissa bits, so its bins are fixed for every output). The
  estimate lies in the same bin as the exact order statistic, so it is within 12.5% of numpy's
  (linearly interpolated) value. Max, min, mean, RMSE, cosine similarity and all counts are exact.

Verdicts (`Tolerance.check`), following Polygraphy's `SimpleThreshold.passed`
(polygraphy/comparator/compare.py), which passes unless *both* the absolute and the relative
statistic exceed their tolerance:

- "elemwise": pass iff every element satisfies |cand - ref| <= atol + rtol * |ref|.
- "max" / "mean": pass iff that statistic of abs error <= atol OR of rel error <= rtol.
- "median" / "quantile": the same OR, decided exactly rather than from the histogram estimate:
  the q-quantile (numpy method="lower", q = 0.5 for median, `Tolerance.quantile` otherwise) of the
  abs error is <= atol iff at least floor(q * (n - 1)) + 1 elements have abs error <= atol.

Any non-finite mismatch fails whatever the check.

No signal: a reference that is all zero, or whose every element lies within atol of zero (unless a
non-trivial argmax agreement is gated, which then carries the signal), or whose argmax agreement is
trivial (the reference is constant along the class axis at every position) fails the output with
"no signal: ..." unless its tolerance sets `accept_no_signal`: such a pass would have checked nothing.

The recipe's own checks (`Recipe.checks`, evaluated by `harness.checks`) stream beside the
statistics over the same samples and gate the same comparison.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from trt_harness.harness.backends.base import backend_classes, display_name
from trt_harness.harness.checks.base import CheckEvaluator, evaluator_for, evaluator_from_state
from trt_harness.models.checks import Check
from trt_harness.models.core.errors import HarnessError, UsageError
from trt_harness.models.recipe import Tolerance
from trt_harness.models.results.comparisons import (
    HIST_BUCKETS,
    HIST_SHIFT,
    MissingOutput,
    OutputComparison,
    WorstElement,
    histogram_bins,
    quantile_from_histogram,
)
from trt_harness.models.results.shards import (
    AccumulatorState,
    ExactSumState,
    MissingCount,
    RunComparisonState,
    ShapeMismatchState,
)

# Polygraphy's epsilon for zero reference values (float64 machine epsilon).
REL_ERR_FLOOR = 2.220446049250313e-16

# Elements processed per step: float64 scratch buffers of this size stay in L2 cache.
_CHUNK = 1 << 16

_CHECKS = ("elemwise", "max", "mean", "median", "quantile")


def default_pairs(backends: Iterable[str]) -> list[tuple[str, str]]:
    """(reference, candidate) pairs over every two backends, neighbours first.

    Backends are ordered by their registered rank (torch, onnxrt, tensorrt), unregistered ones
    after them alphabetically; with all three this gives torch<->onnxrt, onnxrt<->tensorrt,
    torch<->tensorrt. The first of each pair is the reference.
    """
    rank = {cls.name: i for i, cls in enumerate(backend_classes())}
    ordered = sorted(set(backends), key=lambda b: (rank.get(b, len(rank)), b))
    return [
        (ordered[i], ordered[i + gap]) for gap in range(1, len(ordered)) for i in range(len(ordered) - gap)
    ]


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    # Not np.dot: OpenBLAS multithreads dot products of more than 10k elements, which stalls by
    # orders of magnitude when the cores are busy (CI, a parallel test run).
    return float(np.einsum("i,i->", a, b))


def _fmt(x: float) -> str:
    """Short number for messages: 0.0032 -> "3.2e-3", 0.25 -> "0.25"."""
    if x == 0 or not math.isfinite(x) or 1e-2 <= abs(x) < 1e4:
        return f"{x:.4g}"
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _shape_text(shape: tuple[int, ...]) -> str:
    """A shape as Python writes a tuple: (13, 6), (4,), ()."""
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _fmt_pct(fraction: float) -> str:
    pct = 100.0 * fraction
    return f"{pct:.1f}%" if pct >= 1 else f"{pct:.2g}%"


_FLOAT_FIELDS = (
    "max_abs_err",
    "min_abs_err",
    "mean_abs_err",
    "std_abs_err",
    "median_abs_err",
    "quantile_abs_err",
    "max_rel_err",
    "mean_rel_err",
    "median_rel_err",
    "quantile_rel_err",
    "rmse",
    "cosine_similarity",
    "argmax_agreement",
)


class _Scratch:
    """Per-update float64 work buffers, reused across the chunks of one sample."""

    def __init__(self, size: int) -> None:
        self.ref = np.empty(size, dtype=np.float64)
        self.cand = np.empty(size, dtype=np.float64)
        self.err = np.empty(size, dtype=np.float64)
        self.keys = np.empty(size, dtype=np.int64)
        self.mask = np.empty(size, dtype=bool)


class ExactSum:
    """A float64 sum kept exactly, so that merging partial sums gives the same total in any order.

    Shewchuk's algorithm (as in Python's `math.fsum`): the running sum is a short list of
    non-overlapping floats whose exact sum is the exact sum of every term added; `value` rounds it
    once. Summing shards' partials therefore gives, bit for bit, what one pass over all terms gives.
    Inf/NaN terms (a float64 square that overflowed) are summed apart.
    """

    __slots__ = ("nonfinite", "partials")

    def __init__(self, partials: Iterable[float] = (), nonfinite: float = 0.0) -> None:
        self.partials: list[float] = []
        self.nonfinite = nonfinite
        for x in partials:
            self.add(x)

    def add(self, x: float) -> None:
        if not math.isfinite(x):
            self.nonfinite += x
            return
        partials = self.partials
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            if not math.isfinite(hi):  # beyond float64: the sum is +-Inf whatever comes later
                self.nonfinite += hi
                del partials[i:]
                return
            lo = y - (hi - x)
            if lo:
                partials[i] = lo
                i += 1
            x = hi
        partials[i:] = [x]

    def merge(self, other: ExactSum) -> None:
        self.nonfinite += other.nonfinite
        for x in other.partials:
            self.add(x)

    @property
    def value(self) -> float:
        return self.nonfinite + math.fsum(self.partials) if self.nonfinite else math.fsum(self.partials)


class OutputAccumulator:
    """Online comparison of one output between a reference and a candidate backend.

    Call `update(ref, cand)` once per sample, then `result()`. State is O(1) in the number of
    samples. `class_axis` enables argmax agreement over that axis (classification logits).
    """

    def __init__(
        self,
        output: str,
        ref_backend: str,
        cand_backend: str,
        tolerance: Tolerance,
        *,
        worst_k: int = 10,
        class_axis: int | None = None,
    ) -> None:
        if tolerance.check not in _CHECKS:
            raise UsageError(
                f"output '{output}': tolerance check '{tolerance.check}' is unknown; use one of {', '.join(_CHECKS)}"
            )
        if not (tolerance.atol >= 0 and tolerance.rtol >= 0 and 0 <= tolerance.quantile <= 1):
            raise UsageError(
                f"output '{output}': tolerance {tolerance} is invalid; atol and rtol must be >= 0 "
                "and quantile within [0, 1]"
            )
        if worst_k < 0:
            raise UsageError(f"output '{output}': worst_k must be >= 0, got {worst_k}")
        self.output = output
        self.ref_backend = ref_backend
        self.cand_backend = cand_backend
        self.tolerance = tolerance
        self.worst_k = worst_k
        self.class_axis = class_axis
        self._quantile_check = {"median": 0.5, "quantile": tolerance.quantile}.get(tolerance.check)

        self._samples = 0
        self._elements = 0
        self._finite = 0
        self._out_of_tol = 0
        self._nonfinite_mismatches = 0
        self._ref_nan = self._ref_inf = self._cand_nan = self._cand_inf = 0
        # exact sums: a dataset split across jobs merges to the very same totals (see ExactSum)
        self._abs_sum, self._abs_sq_sum, self._rel_sum = ExactSum(), ExactSum(), ExactSum()
        self._abs_max = self._rel_max = -math.inf
        self._abs_min = math.inf
        self._rel_min = math.inf
        self._dot_rc, self._dot_rr, self._dot_cc = ExactSum(), ExactSum(), ExactSum()
        self._within_atol = self._within_rtol = 0
        self._argmax_equal = self._argmax_positions = 0
        self._argmax_constant = 0  # positions whose reference is constant along the class axis
        self._ref_abs_max = 0.0  # over the finite elements, for the no-signal test
        self._abs_counts = np.zeros(HIST_BUCKETS, dtype=np.int64)
        self._rel_counts = np.zeros(HIST_BUCKETS, dtype=np.int64)
        # (abs_err, (sample, *index), ref, cand), worst first
        self._worst: list[tuple[float, tuple[int, ...], float, float]] = []
        self._shape: tuple[int, ...] = ()
        self._shape_mismatches = 0
        self._first_shape_mismatch: tuple[int, tuple[int, ...], tuple[int, ...]] | None = None

    def _pair_text(self) -> str:
        return (
            f"output '{self.output}' ({display_name(self.ref_backend)} vs {display_name(self.cand_backend)})"
        )

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        """Add one sample's reference and candidate arrays (same shape; any real dtype)."""
        ref = np.asarray(ref)
        cand = np.asarray(cand)
        if ref.shape != cand.shape:
            # a verdict, not an error: variable-length outputs (detections) may differ in length, and
            # a mislabelled output has another output's shape (the cross-match names that)
            if self._first_shape_mismatch is None:
                self._first_shape_mismatch = (self._samples, ref.shape, cand.shape)
            self._shape_mismatches += 1
            self._samples += 1
            return
        for side, arr in ((self.ref_backend, ref), (self.cand_backend, cand)):
            if arr.dtype.kind not in "biuf":
                raise HarnessError(
                    f"{self._pair_text()}: {display_name(side)} gives dtype {arr.dtype}, which cannot be "
                    "compared numerically; only bool, integer and real floating outputs are supported"
                )
        if self.class_axis is not None:
            self._update_argmax(ref, cand)

        self._shape = ref.shape
        ref_flat = ref.reshape(-1)
        cand_flat = cand.reshape(-1)
        size = ref_flat.size
        scratch = _Scratch(min(size, _CHUNK))
        # inf - inf and overflows are expected here and handled as non-finite elements
        with np.errstate(invalid="ignore", over="ignore"):
            for start in range(0, size, _CHUNK):
                stop = min(start + _CHUNK, size)
                self._update_chunk(ref_flat[start:stop], cand_flat[start:stop], start, scratch)
        self._elements += size
        self._samples += 1

    def _update_argmax(self, ref: np.ndarray, cand: np.ndarray) -> None:
        if not -ref.ndim <= self.class_axis < ref.ndim:
            raise UsageError(
                f"{self._pair_text()}: class axis {self.class_axis} is out of range for shape {ref.shape}; "
                "set the recipe's class axis to the axis that holds the class scores"
            )
        if ref.size == 0:
            return
        agree = np.argmax(ref, axis=self.class_axis) == np.argmax(cand, axis=self.class_axis)
        self._argmax_equal += int(np.count_nonzero(agree))
        self._argmax_positions += agree.size
        if self.tolerance.min_argmax_agreement is not None:
            self._argmax_constant += int(np.count_nonzero(np.ptp(ref, axis=self.class_axis) == 0))

    def _update_chunk(self, ref: np.ndarray, cand: np.ndarray, offset: int, scratch: _Scratch) -> None:
        n = ref.size
        r = scratch.ref[:n]
        c = scratch.cand[:n]
        err = scratch.err[:n]
        np.copyto(r, ref, casting="unsafe")
        np.copyto(c, cand, casting="unsafe")
        np.subtract(c, r, out=err)
        np.abs(err, out=err)
        abs_sum = float(err.sum())
        positions = None
        if not math.isfinite(abs_sum):
            # Rare path: some element is NaN/Inf on a side (or the error overflows float64).
            finite = np.isfinite(err)
            positions = np.flatnonzero(finite)
            self._count_nonfinite(r, c, finite, offset)
            r, c, err = r[finite], c[finite], err[finite]
            abs_sum = float(err.sum())
        if err.size:
            self._accumulate_finite(r, c, err, abs_sum, offset, positions, scratch)

    def _count_nonfinite(self, r: np.ndarray, c: np.ndarray, finite_err: np.ndarray, offset: int) -> None:
        r_nan, c_nan = np.isnan(r), np.isnan(c)
        r_inf, c_inf = np.isinf(r), np.isinf(c)
        self._ref_nan += int(np.count_nonzero(r_nan))
        self._ref_inf += int(np.count_nonzero(r_inf))
        self._cand_nan += int(np.count_nonzero(c_nan))
        self._cand_inf += int(np.count_nonzero(c_inf))
        agreeing = (r_nan & c_nan) | (r_inf & (r == c))
        mismatched = np.flatnonzero(~finite_err & ~agreeing)
        self._nonfinite_mismatches += mismatched.size
        self._out_of_tol += mismatched.size
        if self.worst_k and mismatched.size:
            first = mismatched[: self.worst_k]
            self._merge_worst(np.full(first.size, math.inf), offset + first, r[first], c[first])

    def _accumulate_finite(
        self,
        r: np.ndarray,
        c: np.ndarray,
        err: np.ndarray,
        abs_sum: float,
        offset: int,
        positions: np.ndarray | None,
        scratch: _Scratch,
    ) -> None:
        n = err.size
        tol = self.tolerance
        self._finite += n
        self._abs_sum.add(abs_sum)
        self._abs_sq_sum.add(_dot(err, err))
        self._dot_rc.add(_dot(r, c))
        self._dot_rr.add(_dot(r, r))
        self._dot_cc.add(_dot(c, c))
        chunk_max = float(err.max())
        self._abs_max = max(self._abs_max, chunk_max)
        self._abs_min = min(self._abs_min, float(err.min()))
        if self.worst_k and chunk_max > self._worst_floor():
            self._collect_worst(err, r, c, offset, positions)

        mask = scratch.mask[:n]
        abs_ref = np.abs(r, out=r)
        self._ref_abs_max = max(self._ref_abs_max, float(abs_ref.max()))
        # Every error <= atol is within atol + rtol*|ref|: skip the elementwise test then.
        if chunk_max > tol.atol:
            limit = np.multiply(abs_ref, tol.rtol, out=c)
            limit += tol.atol
            self._out_of_tol += int(np.count_nonzero(np.greater(err, limit, out=mask)))
        if self._quantile_check is not None:
            self._within_atol += int(np.count_nonzero(np.less_equal(err, tol.atol, out=mask)))

        self._add_to_histogram(self._abs_counts, err, scratch)
        rel = np.maximum(abs_ref, REL_ERR_FLOOR, out=abs_ref)
        np.divide(err, rel, out=rel)
        rel_max = float(rel.max())
        if rel_max == math.inf:  # a huge float64 error over a ~0 reference: count it as the largest float
            rel_max = float(np.finfo(np.float64).max)
            np.minimum(rel, rel_max, out=rel)
        self._rel_sum.add(float(rel.sum()))
        self._rel_max = max(self._rel_max, rel_max)
        self._rel_min = min(self._rel_min, float(rel.min()))
        if self._quantile_check is not None:
            self._within_rtol += int(np.count_nonzero(np.less_equal(rel, tol.rtol, out=mask)))
        self._add_to_histogram(self._rel_counts, rel, scratch)

    @staticmethod
    def _add_to_histogram(counts: np.ndarray, values: np.ndarray, scratch: _Scratch) -> None:
        keys = np.right_shift(values.view(np.int64), HIST_SHIFT, out=scratch.keys[: values.size])
        counts += np.bincount(keys, minlength=HIST_BUCKETS)

    def _worst_floor(self) -> float:
        # Only errors above this can enter the worst-k list; zero errors never do.
        return self._worst[-1][0] if len(self._worst) == self.worst_k else 0.0

    def _collect_worst(
        self, err: np.ndarray, r: np.ndarray, c: np.ndarray, offset: int, positions: np.ndarray | None
    ) -> None:
        k = self.worst_k
        idx = np.flatnonzero(err > self._worst_floor())
        if idx.size > k:
            values = err[idx]
            kth = np.partition(values, idx.size - k)[idx.size - k]
            idx = idx[values >= kth]
            if idx.size > k:  # ties at the k-th value: keep the earliest positions
                idx = idx[np.lexsort((idx, -err[idx]))[:k]]
        flat = offset + (idx if positions is None else positions[idx])
        self._merge_worst(err[idx], flat, r[idx], c[idx])

    def _merge_worst(self, errs: np.ndarray, flat: np.ndarray, r: np.ndarray, c: np.ndarray) -> None:
        # Unravel now: with dynamic axes each sample may have its own shape.
        if self._shape:
            indices = np.column_stack(np.unravel_index(flat, self._shape)).tolist()
        else:
            indices = [[] for _ in range(flat.size)]
        new = [
            (e, (self._samples, *index), rv, cv)
            for e, index, rv, cv in zip(errs.tolist(), indices, r.tolist(), c.tolist(), strict=True)
        ]
        # stable sort: of equal errors, the one met first (the earlier element) stays first
        self._worst = sorted(self._worst + new, key=lambda w: -w[0])[: self.worst_k]

    def result(self) -> OutputComparison:
        """The statistics so far and the verdict; the accumulator can keep being updated."""
        tol = self.tolerance
        n = self._finite
        stats: dict[str, float | None] = dict.fromkeys(_FLOAT_FIELDS)
        if n:
            mean_abs = self._abs_sum.value / n
            abs_sq_sum = self._abs_sq_sum.value
            q = tol.quantile
            stats.update(
                max_abs_err=self._abs_max,
                min_abs_err=self._abs_min,
                mean_abs_err=mean_abs,
                std_abs_err=math.sqrt(max(abs_sq_sum / n - mean_abs * mean_abs, 0.0)),
                median_abs_err=quantile_from_histogram(self._abs_counts, 0.5, self._abs_min, self._abs_max),
                quantile_abs_err=quantile_from_histogram(self._abs_counts, q, self._abs_min, self._abs_max),
                max_rel_err=self._rel_max,
                mean_rel_err=self._rel_sum.value / n,
                median_rel_err=quantile_from_histogram(self._rel_counts, 0.5, self._rel_min, self._rel_max),
                quantile_rel_err=quantile_from_histogram(self._rel_counts, q, self._rel_min, self._rel_max),
                rmse=math.sqrt(abs_sq_sum / n),
                cosine_similarity=self._cosine(),
            )
        if self._argmax_positions:
            stats["argmax_agreement"] = self._argmax_equal / self._argmax_positions
        worst = tuple(WorstElement(abs_err=e, index=i, ref=rv, cand=cv) for e, i, rv, cv in self._worst)
        reasons = self._failure_reasons(stats, worst)
        statistics_passed = not reasons
        no_signal = self._no_signal()
        if no_signal and not tol.accept_no_signal:
            reasons.append(
                f"no signal: {no_signal}; if that is expected, set Tolerance(accept_no_signal=True) "
                "for this output in the recipe and say why"
            )
        quantile_check = self._quantile_check is not None
        return OutputComparison(
            output=self.output,
            ref_backend=self.ref_backend,
            cand_backend=self.cand_backend,
            tolerance=tol,
            passed=not reasons,
            reason="; ".join(reasons),
            samples=self._samples,
            elements=self._elements,
            finite_elements=n,
            out_of_tolerance=self._out_of_tol,
            nonfinite_mismatches=self._nonfinite_mismatches,
            ref_nan=self._ref_nan,
            ref_inf=self._ref_inf,
            cand_nan=self._cand_nan,
            cand_inf=self._cand_inf,
            within_atol=self._within_atol if quantile_check else None,
            within_rtol=self._within_rtol if quantile_check else None,
            argmax_positions=self._argmax_positions,
            worst=worst,
            abs_err_histogram=histogram_bins(self._abs_counts),
            rel_err_histogram=histogram_bins(self._rel_counts),
            shape_mismatches=self._shape_mismatches,
            no_signal=no_signal,
            statistics_passed=statistics_passed,
            **stats,
        )

    def _no_signal(self) -> str:
        """Why the reference gives the comparison nothing to judge, "" when it does (module doc)."""
        if not self._finite:
            return ""  # nothing finite compared fails on its own
        ref_name = display_name(self.ref_backend)
        tol = self.tolerance
        gated_argmax = tol.min_argmax_agreement is not None and self._argmax_positions > 0
        trivial_argmax = gated_argmax and self._argmax_constant == self._argmax_positions
        if self._ref_abs_max == 0:
            return f"the {ref_name} reference is all zero ({self._finite:,} finite elements)"
        if self._ref_abs_max <= tol.atol and (not gated_argmax or trivial_argmax):
            return (
                f"every {ref_name} reference element is within atol={_fmt(tol.atol)} of zero "
                f"(max |ref| {_fmt(self._ref_abs_max)}), so any candidate near zero passes"
            )
        if trivial_argmax:
            return (
                f"argmax agreement is trivial: the {ref_name} reference is constant along class axis "
                f"{self.class_axis} at all {self._argmax_positions:,} positions"
            )
        return ""

    def _cosine(self) -> float:
        # Same conventions as Polygraphy's cosine similarity: two zero vectors are identical.
        dot_rr, dot_cc = self._dot_rr.value, self._dot_cc.value
        norms = math.sqrt(dot_rr) * math.sqrt(dot_cc)
        if norms == 0:
            return 1.0 if dot_rr == dot_cc else 0.0
        return max(-1.0, min(1.0, self._dot_rc.value / norms))

    def _failure_reasons(self, stats: Mapping[str, float | None], worst: Sequence[WorstElement]) -> list[str]:
        tol = self.tolerance
        ref_name, cand_name = display_name(self.ref_backend), display_name(self.cand_backend)
        reasons = []
        if self._first_shape_mismatch is not None:
            sample, ref_shape, cand_shape = self._first_shape_mismatch
            reasons.append(
                f"shapes differ in {self._shape_mismatches} of {self._samples} samples: {ref_name} "
                f"{_shape_text(ref_shape)}, {cand_name} {_shape_text(cand_shape)} (sample {sample}); "
                "those samples are not compared"
            )
            if not self._finite and not self._elements:
                return reasons
        if self._nonfinite_mismatches:
            # with worst_k=0 no element is kept, so there is no place to name
            first = next((w for w in worst if math.isinf(w.abs_err)), None)
            where = (
                f"; first at {list(first.index)} ({ref_name} {first.ref}, {cand_name} {first.cand})"
                if first
                else ""
            )
            reasons.append(
                f"{self._nonfinite_mismatches} elements are NaN/Inf on one side only "
                f"(NaN/Inf: {ref_name} {self._ref_nan}/{self._ref_inf}, "
                f"{cand_name} {self._cand_nan}/{self._cand_inf}){where}"
            )
        if tol.min_argmax_agreement is not None:
            agreement = stats.get("argmax_agreement")
            if agreement is None:
                reasons.append(
                    f"the tolerance asks for argmax agreement >= {tol.min_argmax_agreement:g} but output "
                    f"'{self.output}' has no class axis; set it in the recipe's class_axes"
                )
            elif agreement < tol.min_argmax_agreement:
                reasons.append(
                    f"argmax agrees at {_fmt_pct(agreement)} of {self._argmax_positions} positions, "
                    f"below the required {_fmt_pct(tol.min_argmax_agreement)}"
                )
        if not self._finite:
            # NaN/Inf in the same places on both sides match, but a comparison of nothing is no pass
            if not self._elements:
                reasons.append(f"'{self.output}' has no elements on either side: nothing was compared")
            elif not self._nonfinite_mismatches:
                reasons.append(
                    f"none of the {self._elements} elements is finite on both sides (NaN/Inf: {ref_name} "
                    f"{self._ref_nan}/{self._ref_inf}, {cand_name} {self._cand_nan}/{self._cand_inf}): "
                    "nothing was compared; check the weights and inputs"
                )
            return reasons
        check = tol.check
        if check == "elemwise":
            exceeding = self._out_of_tol - self._nonfinite_mismatches
            if exceeding:
                finite_worst = next((w for w in worst if math.isfinite(w.abs_err)), None)
                at = f" at {list(finite_worst.index)}" if finite_worst else ""
                reasons.append(
                    f"{exceeding} of {self._elements} elements ({_fmt_pct(exceeding / self._elements)}) "
                    f"exceed atol+rtol*|ref| (atol={_fmt(tol.atol)}, rtol={_fmt(tol.rtol)}); "
                    f"max abs err {_fmt(self._abs_max)}{at}"
                )
        elif check in ("max", "mean"):
            abs_stat, rel_stat = stats[f"{check}_abs_err"], stats[f"{check}_rel_err"]
            if abs_stat > tol.atol and rel_stat > tol.rtol:
                reasons.append(
                    f"{check} abs err {_fmt(abs_stat)} > atol={_fmt(tol.atol)} and "
                    f"{check} rel err {_fmt(rel_stat)} > rtol={_fmt(tol.rtol)}"
                )
        else:
            q = self._quantile_check
            needed = math.floor(q * (self._finite - 1)) + 1
            if self._within_atol < needed and self._within_rtol < needed:
                label = "median" if check == "median" else f"quantile {q:g}"
                stat = "median" if check == "median" else "quantile"
                reasons.append(
                    f"{label}: only {_fmt_pct(self._within_atol / self._finite)} of elements have "
                    f"abs err <= atol={_fmt(tol.atol)} and {_fmt_pct(self._within_rtol / self._finite)} "
                    f"rel err <= rtol={_fmt(tol.rtol)}, {needed} of {self._finite} needed "
                    f"({label} abs err ~{_fmt(stats[f'{stat}_abs_err'])}, "
                    f"rel err ~{_fmt(stats[f'{stat}_rel_err'])})"
                )
        return reasons

    # --- merging (shards of a sample set judged in separate jobs) ------------------------------------
    # Self-contained: state() captures every field above, merge() combines two states as if the
    # other's samples had come after this one's in one run. Exact: counts, extremes and histogram
    # bins add; sums are ExactSum; the worst-k list keeps one run's order (worst first, ties earliest).

    def state(self) -> AccumulatorState:
        """Everything this accumulator knows, as a typed value (written by the compare stage)."""
        mismatch = self._first_shape_mismatch
        return AccumulatorState(
            output=self.output,
            ref_backend=self.ref_backend,
            cand_backend=self.cand_backend,
            tolerance=self.tolerance,
            worst_k=self.worst_k,
            class_axis=self.class_axis,
            samples=self._samples,
            elements=self._elements,
            finite=self._finite,
            out_of_tol=self._out_of_tol,
            nonfinite_mismatches=self._nonfinite_mismatches,
            ref_nan=self._ref_nan,
            ref_inf=self._ref_inf,
            cand_nan=self._cand_nan,
            cand_inf=self._cand_inf,
            **{
                name: ExactSumState(tuple(total.partials), total.nonfinite)
                for name, total in (
                    ("abs_sum", self._abs_sum),
                    ("abs_sq_sum", self._abs_sq_sum),
                    ("rel_sum", self._rel_sum),
                    ("dot_rc", self._dot_rc),
                    ("dot_rr", self._dot_rr),
                    ("dot_cc", self._dot_cc),
                )
            },
            abs_max=self._abs_max,
            abs_min=self._abs_min,
            rel_max=self._rel_max,
            rel_min=self._rel_min,
            within_atol=self._within_atol,
            within_rtol=self._within_rtol,
            argmax_equal=self._argmax_equal,
            argmax_positions=self._argmax_positions,
            argmax_constant=self._argmax_constant,
            ref_abs_max=self._ref_abs_max,
            abs_counts=tuple((int(b), int(self._abs_counts[b])) for b in np.flatnonzero(self._abs_counts)),
            rel_counts=tuple((int(b), int(self._rel_counts[b])) for b in np.flatnonzero(self._rel_counts)),
            worst=tuple(WorstElement(abs_err=e, index=i, ref=r, cand=c) for e, i, r, c in self._worst),
            shape=tuple(self._shape),
            shape_mismatches=self._shape_mismatches,
            first_shape_mismatch=ShapeMismatchState(mismatch[0], tuple(mismatch[1]), tuple(mismatch[2]))
            if mismatch is not None
            else None,
        )

    @classmethod
    def from_state(cls, state: AccumulatorState) -> OutputAccumulator:
        """An accumulator that goes on from `state` (updates and merges continue its sample numbering)."""
        accumulator = cls(
            state.output,
            state.ref_backend,
            state.cand_backend,
            state.tolerance,
            worst_k=state.worst_k,
            class_axis=state.class_axis,
        )
        accumulator.merge(state)
        return accumulator

    def merge(self, other: AccumulatorState) -> None:
        """Add another accumulator's state, whose samples come after this one's (shard i+1 after i)."""
        mine = (
            self.output,
            self.ref_backend,
            self.cand_backend,
            self.tolerance,
            self.worst_k,
            self.class_axis,
        )
        theirs = (
            other.output,
            other.ref_backend,
            other.cand_backend,
            other.tolerance,
            other.worst_k,
            other.class_axis,
        )
        if mine != theirs:
            raise UsageError(
                f"cannot merge the comparison of {self._pair_text()} with one of output '{other.output}' "
                f"({other.ref_backend} vs {other.cand_backend}): output, pair, tolerance, worst_k and "
                "class axis must be the same; merge shards of one recipe run with the same settings"
            )
        offset = self._samples
        for name in (
            "elements",
            "finite",
            "out_of_tol",
            "nonfinite_mismatches",
            "ref_nan",
            "ref_inf",
            "cand_nan",
            "cand_inf",
            "within_atol",
            "within_rtol",
            "argmax_equal",
            "argmax_positions",
            "argmax_constant",
            "shape_mismatches",
        ):
            setattr(self, f"_{name}", getattr(self, f"_{name}") + getattr(other, name))
        for name in ("abs_sum", "abs_sq_sum", "rel_sum", "dot_rc", "dot_rr", "dot_cc"):
            total: ExactSumState = getattr(other, name)
            getattr(self, f"_{name}").merge(ExactSum(total.partials, total.nonfinite))
        self._abs_max = max(self._abs_max, other.abs_max)
        self._rel_max = max(self._rel_max, other.rel_max)
        self._abs_min = min(self._abs_min, other.abs_min)
        self._rel_min = min(self._rel_min, other.rel_min)
        self._ref_abs_max = max(self._ref_abs_max, other.ref_abs_max)
        for counts, pairs in ((self._abs_counts, other.abs_counts), (self._rel_counts, other.rel_counts)):
            for bucket, count in pairs:
                counts[bucket] += count
        shifted = [(w.abs_err, (w.index[0] + offset, *w.index[1:]), w.ref, w.cand) for w in other.worst]
        # stable: of equal errors this run's (the earlier samples) stay first, as in one run
        self._worst = sorted(self._worst + shifted, key=lambda w: -w[0])[: self.worst_k]
        if self._first_shape_mismatch is None and other.first_shape_mismatch is not None:
            m = other.first_shape_mismatch
            self._first_shape_mismatch = (m.sample + offset, m.ref_shape, m.cand_shape)
        if other.samples > other.shape_mismatches:  # the shape of the last compared sample
            self._shape = tuple(other.shape)
        self._samples += other.samples


@dataclass(frozen=True)
class ComparisonReport:
    """Every output comparison of one group of runner pairs, in pair order then output order."""

    comparisons: tuple[OutputComparison, ...]
    missing: tuple[MissingOutput, ...]
    samples: int
    pairs: tuple[tuple[str, str], ...]
    # the accumulators' state, to merge with other shards' (see RunComparison.merge)
    state: RunComparisonState | None = field(default=None, compare=False, repr=False)

    @property
    def passed(self) -> bool:
        return not self.missing and all(self.comparisons)

    def __bool__(self) -> bool:
        return self.passed

    def failures(self) -> list[str]:
        """One line per failing output, naming the output and the runner pair."""
        lines = [
            f"'{c.output}' {display_name(c.ref_backend)} vs {display_name(c.cand_backend)}: {c.reason}"
            for c in self.comparisons
            if not c
        ]
        lines += [m.reason for m in self.missing]
        return lines


def _missing(output: str, pair: tuple[str, str], side: str, count: int, samples: int) -> MissingOutput:
    present_in = pair[1] if side == pair[0] else pair[0]
    reason = (
        f"output '{output}' is missing from {display_name(side)} in {count} of {samples} samples but "
        f"{display_name(present_in)} produces it; check the export's output names"
    )
    return MissingOutput(output, pair[0], pair[1], side, count, samples, reason)


class RunComparison:
    """State of `compare_runs`: one accumulator per (pair, output), plus missing-output counts."""

    def __init__(
        self,
        tolerance_for: Callable[[str], Tolerance],
        class_axes: Mapping[str, int],
        worst_k: int,
        checks: Mapping[str, Sequence[Check]],
    ) -> None:
        self.tolerance_for = tolerance_for
        self.class_axes = class_axes
        self.worst_k = worst_k
        self.checks = checks
        self.accumulators: dict[tuple[tuple[str, str], str], OutputAccumulator] = {}
        self.evaluators: dict[tuple[tuple[str, str], str], list[CheckEvaluator]] = {}
        self.missing_counts: dict[tuple[tuple[str, str], str, str], int] = {}
        self.output_order: dict[str, int] = {}
        self.samples = 0

    def add(self, sample: Mapping[str, Mapping[str, np.ndarray]], pairs: Sequence[tuple[str, str]]) -> None:
        for pair in pairs:
            ref_backend, cand_backend = pair
            for backend in pair:
                if backend not in sample:
                    raise HarnessError(
                        f"sample {self.samples} has no outputs from {display_name(backend)} ({backend}), "
                        f"which the comparison {display_name(ref_backend)} vs {display_name(cand_backend)} "
                        f"needs; it has outputs from {sorted(sample)}"
                    )
            ref_outputs, cand_outputs = sample[ref_backend], sample[cand_backend]
            for output in [*ref_outputs, *(o for o in cand_outputs if o not in ref_outputs)]:
                self.output_order.setdefault(output, len(self.output_order))
                if output not in cand_outputs or output not in ref_outputs:
                    side = cand_backend if output not in cand_outputs else ref_backend
                    key = (pair, output, side)
                    self.missing_counts[key] = self.missing_counts.get(key, 0) + 1
                    continue
                accumulator = self.accumulators.get((pair, output))
                if accumulator is None:
                    accumulator = OutputAccumulator(
                        output,
                        ref_backend,
                        cand_backend,
                        self.tolerance_for(output),
                        worst_k=self.worst_k,
                        class_axis=self.class_axes.get(output),
                    )
                    self.accumulators[(pair, output)] = accumulator
                    self.evaluators[(pair, output)] = [
                        evaluator_for(check, output) for check in self.checks.get(output, ())
                    ]
                accumulator.update(ref_outputs[output], cand_outputs[output])
                for evaluator in self.evaluators.get((pair, output), ()):
                    evaluator.update(ref_outputs[output], cand_outputs[output])
        self.samples += 1

    def report(self, pairs: Sequence[tuple[str, str]]) -> ComparisonReport:
        pair_rank = {pair: i for i, pair in enumerate(pairs)}
        comparisons = tuple(
            self._judged(key)
            for key in sorted(self.accumulators, key=lambda k: (pair_rank[k[0]], self.output_order[k[1]]))
        )
        missing = tuple(
            _missing(output, pair, side, n, self.samples)
            for (pair, output, side), n in sorted(
                self.missing_counts.items(),
                key=lambda item: (pair_rank[item[0][0]], self.output_order[item[0][1]], item[0][2]),
            )
        )
        return ComparisonReport(
            comparisons=comparisons,
            missing=missing,
            samples=self.samples,
            pairs=tuple(pairs),
            state=self.state(pairs),
        )

    def _judged(self, key: tuple[tuple[str, str], str]) -> OutputComparison:
        """The statistics' result with the recipe's checks of that output and pair folded into its verdict."""
        comparison = self.accumulators[key].result()
        outcomes = tuple(evaluator.result() for evaluator in self.evaluators.get(key, ()))
        if not outcomes:
            return comparison
        failed = [o.failure_text for o in outcomes if not o]
        reason = "; ".join(filter(None, (comparison.reason, *failed)))
        return dataclasses.replace(
            comparison, checks=outcomes, passed=comparison.passed and not failed, reason=reason
        )

    # --- merging: see OutputAccumulator.merge ----------------------------------------------------------

    def state(self, pairs: Sequence[tuple[str, str]]) -> RunComparisonState:
        return RunComparisonState(
            pairs=tuple(tuple(p) for p in pairs),
            samples=self.samples,
            output_order=tuple(sorted(self.output_order, key=self.output_order.__getitem__)),
            accumulators=tuple(a.state() for a in self.accumulators.values()),
            missing=tuple(
                MissingCount(pair[0], pair[1], output, side, count)
                for (pair, output, side), count in self.missing_counts.items()
            ),
            checks=tuple(e.state(*key[0]) for key, evaluators in self.evaluators.items() for e in evaluators),
        )

    def merge(self, other: RunComparisonState) -> None:
        """Add a later shard's state (its samples come after this one's)."""
        for output in other.output_order:
            self.output_order.setdefault(output, len(self.output_order))
        for state in other.accumulators:
            key = ((state.ref_backend, state.cand_backend), state.output)
            if key in self.accumulators:
                self.accumulators[key].merge(state)
            else:
                # an accumulator numbers the samples it was given, as one run's does from the first
                # sample that had the output on both sides
                self.accumulators[key] = OutputAccumulator.from_state(state)
        for check in other.checks:
            evaluators = self.evaluators.setdefault(
                ((check.ref_backend, check.cand_backend), check.output), []
            )
            mine = next((e for e in evaluators if e.check.name == check.check.name), None)
            if mine is not None:
                mine.merge(check)
            else:
                evaluators.append(evaluator_from_state(check))
        for m in other.missing:
            key = ((m.ref_backend, m.cand_backend), m.output, m.side)
            self.missing_counts[key] = self.missing_counts.get(key, 0) + m.count
        self.samples += other.samples


def _checks_of(checks: Mapping[str, Sequence[Check]], outputs: Sequence[str] | None) -> None:
    """Checks of outputs the recipe does not have, or two of one name on one output: a usage error."""
    for output, declared in checks.items():
        if outputs is not None and output not in outputs:
            raise UsageError(
                f"the recipe declares checks for output '{output}', which it does not have; "
                f"key Recipe.checks by one of {list(outputs)}"
            )
        names = [c.name for c in declared]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UsageError(f"output '{output}' has two checks named {twice}; give each check its own name")


def merge_states(states: Sequence[RunComparisonState], worst_k: int = 10) -> ComparisonReport:
    """One report from the states of consecutive shards of one comparison group, in shard order."""
    if not states:
        raise HarnessError("nothing to merge: no comparison states were given")
    pairs = list(states[0].pairs)
    for state in states[1:]:
        if list(state.pairs) != pairs:
            raise UsageError(
                f"cannot merge comparisons of pairs {list(state.pairs)} and {pairs}: shards of one group "
                "compare the same runner pairs; run every shard with the same --backends and --precision"
            )
    # tolerances and checks come with the states
    run = RunComparison(lambda _output: Tolerance(), {}, worst_k, {})
    for state in states:
        run.merge(state)
    return run.report(pairs)


def compare_runs(
    samples: Iterable[Mapping[str, Mapping[str, np.ndarray]]],
    *,
    pairs: Sequence[tuple[str, str]] | None = None,
    tolerance_for: Callable[[str], Tolerance] | None = None,
    class_axes: Mapping[str, int] | None = None,
    worst_k: int = 10,
    checks: Mapping[str, Sequence[Check]] | None = None,
    output_names: Sequence[str] | None = None,
) -> ComparisonReport:
    """Compare backends' outputs sample by sample, matching outputs by name.

    Each item of `samples` is `{backend: {output name: array}}` for one inference; the iterable is
    consumed once and no array is kept. `pairs` lists (reference, candidate) backends; by default
    every two backends of the first sample, ordered as `default_pairs` does. `tolerance_for` maps an
    output name to its Tolerance (e.g. `recipe.tolerance_for`; default `Tolerance()`), `class_axes`
    an output name to the axis for argmax agreement. An output that only one side of a pair
    produces is reported in `missing` and fails the report. `checks` maps an output name to the
    recipe's checks of it (models.checks); they may name the `output_names` (default: the outputs
    the samples have).
    """
    checks = checks or {}
    _checks_of(checks, output_names)
    run = RunComparison(tolerance_for or (lambda _output: Tolerance()), class_axes or {}, worst_k, checks)
    for sample in samples:
        if pairs is None:
            pairs = default_pairs(sample)
            if not pairs:
                raise HarnessError(
                    f"nothing to compare: the first sample has outputs from {sorted(sample)} only; "
                    "at least two backends must run"
                )
        run.add(sample, pairs)
    if not run.samples:
        raise HarnessError("nothing to compare: no samples were given; check the recipe's sample_inputs")
    if output_names is None:  # names derived from what the model returned: the outputs seen
        _checks_of(checks, tuple(run.output_order))
    return run.report(pairs)
