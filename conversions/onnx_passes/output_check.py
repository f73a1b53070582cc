"""Compare what ONNX Runtime returns for one output before and after a pass, whatever its type.

ORT returns a tensor as a numpy array (numbers, bools, or strings as objects), a sequence as a list,
a map as a dict, and an empty optional as None. Floating-point and complex tensors may move within
|after - before| <= atol + rtol * |before| (NaN and Inf only match themselves); everything else
(integers, bools, strings, the structure of sequences, maps and optionals) must be equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Mismatch:
    """Why a value after a pass is not the one before it; `where` locates it inside a sequence or map."""

    reason: str
    where: str = ""

    def located(self, step: str) -> Mismatch:
        return Mismatch(self.reason, f"{step}{self.where}")

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}" if self.where else self.reason


def describe(value: object) -> str:
    """`float32[2, 3]`, `sequence of 4`, `map of 2`, `empty optional`: what a value is, for messages."""
    if value is None:
        return "empty optional"
    if isinstance(value, list):
        return f"sequence of {len(value)}"
    if isinstance(value, dict):
        return f"map of {len(value)}"
    array = np.asarray(value)
    return f"{array.dtype}{list(array.shape)}"


def max_difference(reference: object, result: object, *, rtol: float, atol: float) -> float | Mismatch:
    """The largest |result - reference| over every float element (0 when there are none), or the mismatch."""
    if reference is None or result is None:
        return 0.0 if reference is None and result is None else _kinds(reference, result)
    if isinstance(reference, list) or isinstance(result, list):
        if not (isinstance(reference, list) and isinstance(result, list)):
            return _kinds(reference, result)
        if len(reference) != len(result):
            return Mismatch(f"sequence length changed from {len(reference)} to {len(result)}")
        return _worst(
            ((f"[{i}]", a, b) for i, (a, b) in enumerate(zip(reference, result, strict=True))), rtol, atol
        )
    if isinstance(reference, dict) or isinstance(result, dict):
        if not (isinstance(reference, dict) and isinstance(result, dict)):
            return _kinds(reference, result)
        if set(reference) != set(result):
            return Mismatch(f"map keys changed from {sorted(reference)} to {sorted(result)}")
        return _worst(((f"[{k!r}]", reference[k], result[k]) for k in reference), rtol, atol)
    return _tensor_difference(np.asarray(reference), np.asarray(result), rtol=rtol, atol=atol)


def _worst(items: object, rtol: float, atol: float) -> float | Mismatch:
    worst = 0.0
    for step, before, after in items:  # type: ignore[attr-defined]
        diff = max_difference(before, after, rtol=rtol, atol=atol)
        if isinstance(diff, Mismatch):
            return diff.located(step)
        worst = max(worst, diff)
    return worst


def _kinds(reference: object, result: object) -> Mismatch:
    return Mismatch(f"changed from {describe(reference)} to {describe(result)}")


def _tensor_difference(
    reference: np.ndarray, result: np.ndarray, *, rtol: float, atol: float
) -> float | Mismatch:
    if reference.dtype != result.dtype or reference.shape != result.shape:
        return _kinds(reference, result)
    if reference.size == 0:
        return 0.0
    if not (np.issubdtype(reference.dtype, np.inexact) or _is_ml_float(reference.dtype)):
        # integers, bools, strings (object arrays): exact, element by element
        unequal = np.asarray(reference != result)
        if unequal.any():
            index = tuple(int(i) for i in np.argwhere(unequal)[0])
            return Mismatch(
                f"{int(unequal.sum())} of {reference.size} elements changed, e.g. at {list(index)}: "
                f"{reference[index]!r} -> {result[index]!r}"
            )
        return 0.0
    wide = np.complex128 if np.iscomplexobj(reference) else np.float64
    ref, got = reference.astype(wide), result.astype(wide)
    same = (ref == got) | (np.isnan(ref) & np.isnan(got))
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(got - ref))
    diff = np.where(np.isnan(diff), np.inf, diff)
    bound = atol + rtol * np.where(np.isfinite(ref), np.abs(ref), 0.0)
    worst = float(diff.max())
    if not np.all(diff <= bound):
        return Mismatch(f"max |after - before| = {worst:.6g}, allowed atol={atol:g} + rtol={rtol:g}·|before|")
    return worst


def _is_ml_float(dtype: np.dtype) -> bool:
    """bfloat16 and the float8 types (ml_dtypes) are floats that numpy does not class as inexact."""
    try:
        np.finfo(dtype)
    except (TypeError, ValueError):
        return False
    return True
