"""Streaming map of where an output's absolute error lies, for outputs with two spatial axes.

`ErrorHeatmap.update(ref, cand)` adds one sample: |cand - ref| is averaged over every axis but the
two spatial ones, and over blocks of neighbouring pixels so the stored map has at most `max_side`
cells a side. The state is a fixed-size sum and count per cell, whatever the number of samples.

Non-finite values follow `harness.comparison`: NaN/NaN, +Inf/+Inf and -Inf/-Inf agree (error 0);
any other position with a NaN or Inf on one side is a non-finite mismatch, left out of the mean
and counted per cell. A cell with no finite element has the value None.
"""

from __future__ import annotations

import math

import numpy as np
from trt_harness.models.core.errors import HarnessError, UsageError
from trt_harness.models.results.comparisons import ErrorMap

# Positions processed per step, so float64 scratch stays small for large outputs.
_CHUNK_ELEMENTS = 1 << 20


class ErrorHeatmap:
    """Mean absolute error per (block of) spatial position, accumulated over samples."""

    def __init__(self, spatial_axes: tuple[int, int], max_side: int = 64) -> None:
        if len(spatial_axes) != 2:
            raise UsageError(f"spatial_axes must name two axes (height, width), got {spatial_axes!r}")
        if max_side < 1:
            raise UsageError(f"max_side must be at least 1, got {max_side}")
        self.spatial_axes = (int(spatial_axes[0]), int(spatial_axes[1]))
        self.max_side = max_side
        self.samples = 0
        self._source_hw: tuple[int, int] | None = None
        self._block: tuple[int, int] = (1, 1)
        self._sum: np.ndarray | None = None
        self._count: np.ndarray | None = None
        self._nonfinite: np.ndarray | None = None

    def _axes_for(self, ndim: int) -> tuple[int, int]:
        h_axis, w_axis = self.spatial_axes
        if not (-ndim <= h_axis < ndim and -ndim <= w_axis < ndim):
            raise HarnessError(
                f"heatmap spatial axes {self.spatial_axes} are out of range for an output with {ndim} "
                "dimensions; set the recipe's spatial_axes to the output's (height, width) axes"
            )
        h_axis, w_axis = h_axis % ndim, w_axis % ndim
        if h_axis == w_axis:
            raise UsageError(f"heatmap spatial axes {self.spatial_axes} name the same axis twice")
        return h_axis, w_axis

    def _start(self, height: int, width: int) -> None:
        self._source_hw = (height, width)
        self._block = (max(1, math.ceil(height / self.max_side)), max(1, math.ceil(width / self.max_side)))
        shape = (math.ceil(height / self._block[0]), math.ceil(width / self._block[1]))
        self._sum = np.zeros(shape, dtype=np.float64)
        self._count = np.zeros(shape, dtype=np.int64)
        self._nonfinite = np.zeros(shape, dtype=np.int64)

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        """Add one sample's reference and candidate arrays (same shape, any real dtype)."""
        ref, cand = np.asarray(ref), np.asarray(cand)
        if ref.shape != cand.shape:
            raise HarnessError(
                f"heatmap: reference shape {ref.shape} and candidate shape {cand.shape} differ; "
                "both backends must produce the same output shape"
            )
        h_axis, w_axis = self._axes_for(ref.ndim)
        height, width = ref.shape[h_axis], ref.shape[w_axis]
        if self._source_hw is None:
            self._start(height, width)
        elif self._source_hw != (height, width):
            raise HarnessError(
                f"heatmap: spatial size {height}x{width} differs from earlier samples' "
                f"{self._source_hw[0]}x{self._source_hw[1]}; a heatmap needs a fixed spatial size"
            )
        # (rest, H, W): every other axis flattened in front.
        ref = np.moveaxis(ref, (h_axis, w_axis), (-2, -1)).reshape(-1, height, width)
        cand = np.moveaxis(cand, (h_axis, w_axis), (-2, -1)).reshape(-1, height, width)
        err_sum = np.zeros((height, width), dtype=np.float64)
        finite_count = np.zeros((height, width), dtype=np.int64)
        mismatch_count = np.zeros((height, width), dtype=np.int64)
        rows = max(1, _CHUNK_ELEMENTS // max(1, height * width))
        for start in range(0, ref.shape[0], rows):
            r = ref[start : start + rows].astype(np.float64)
            c = cand[start : start + rows].astype(np.float64)
            with np.errstate(invalid="ignore", over="ignore"):
                err = np.abs(c - r)
            agree = (r == c) | (np.isnan(r) & np.isnan(c))  # equal infinities and NaN/NaN: no error
            err[agree] = 0.0
            finite = np.isfinite(err)
            err_sum += np.where(finite, err, 0.0).sum(axis=0)
            finite_count += finite.sum(axis=0)
            mismatch_count += (~finite).sum(axis=0)
        assert self._sum is not None and self._count is not None and self._nonfinite is not None
        self._sum += self._pool(err_sum)
        self._count += self._pool(finite_count)
        self._nonfinite += self._pool(mismatch_count)
        self.samples += 1

    def _pool(self, grid: np.ndarray) -> np.ndarray:
        """Sum over blocks of `self._block`, the last row/column of blocks possibly partial."""
        block_h, block_w = self._block
        height, width = grid.shape
        padded = np.zeros(
            (math.ceil(height / block_h) * block_h, math.ceil(width / block_w) * block_w), dtype=grid.dtype
        )
        padded[:height, :width] = grid
        out_h, out_w = padded.shape[0] // block_h, padded.shape[1] // block_w
        return padded.reshape(out_h, block_h, out_w, block_w).sum(axis=(1, 3))

    @property
    def values(self) -> np.ndarray:
        """The current map: mean abs error per cell, NaN where a cell has no finite element."""
        if self._sum is None or self._count is None:
            raise HarnessError("heatmap has no samples yet: call update(ref, cand) first")
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._count > 0, self._sum / np.maximum(self._count, 1), np.nan)

    def record(self, output: str, ref_backend: str, cand_backend: str) -> ErrorMap:
        values = self.values
        assert self._source_hw is not None and self._nonfinite is not None
        finite = values[np.isfinite(values)]
        height, width = values.shape
        return ErrorMap(
            output=output,
            ref_backend=ref_backend,
            cand_backend=cand_backend,
            shape=(height, width),
            source_hw=self._source_hw,
            block_hw=self._block,
            spatial_axes=self.spatial_axes,
            samples=self.samples,
            values=tuple(tuple(None if math.isnan(v) else float(v) for v in row) for row in values.tolist()),
            max=float(finite.max()) if finite.size else None,
            nonfinite_mismatches=int(self._nonfinite.sum()),
        )
