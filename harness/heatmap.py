"""Streaming map of where an output's absolute error lies, for outputs with two spatial axes.

`ErrorHeatmap.update(ref, cand)` adds one sample: |cand - ref| is averaged over every axis but the
two spatial ones (e.g. height x width of an image, sequence x hidden of a text encoder's state), and
over blocks of neighbouring positions so the stored map has at most `max_side` cells a side. The
state is a fixed-size sum and count per cell, whatever the number of samples. The first `max_items`
samples (batch rows, when axis 0 is not a spatial axis) also get a map of their own.

A map is a visual aid: it never fails a stage. What cannot be drawn (samples of different spatial
sizes, axes an output does not have, reference and candidate of different shapes) is left out with
a note in the record (`ErrorMap.omitted`); the comparison judges such outputs on its own.

Non-finite values follow `harness.comparison`: NaN/NaN, +Inf/+Inf and -Inf/-Inf agree (error 0);
any other position with a NaN or Inf on one side is a non-finite mismatch, left out of the mean
and counted per cell. A cell with no finite element has the value None.
"""

from __future__ import annotations

import math

import numpy as np
from trt_harness.models.core.errors import HarnessError, UsageError
from trt_harness.models.results.comparisons import ErrorMap, SampleErrorMap

# Positions processed per step, so float64 scratch stays small for large outputs.
_CHUNK_ELEMENTS = 1 << 20
# Samples (batch rows) that get a map of their own besides the map over all samples.
MAX_ITEMS = 4


def _pool(grid: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """Sum over blocks of `block`, the last row/column of blocks possibly partial."""
    block_h, block_w = block
    height, width = grid.shape
    padded = np.zeros(
        (math.ceil(height / block_h) * block_h, math.ceil(width / block_w) * block_w), dtype=grid.dtype
    )
    padded[:height, :width] = grid
    out_h, out_w = padded.shape[0] // block_h, padded.shape[1] // block_w
    return padded.reshape(out_h, block_h, out_w, block_w).sum(axis=(1, 3))


class _PooledGrid:
    """Sums and counts per block of one fixed (height, width)."""

    def __init__(self, height: int, width: int, max_side: int) -> None:
        self.source_hw = (height, width)
        self.block = (max(1, math.ceil(height / max_side)), max(1, math.ceil(width / max_side)))
        shape = (math.ceil(height / self.block[0]), math.ceil(width / self.block[1]))
        self.sum = np.zeros(shape, dtype=np.float64)
        self.count = np.zeros(shape, dtype=np.int64)
        self.nonfinite = np.zeros(shape, dtype=np.int64)

    def add(self, err_sum: np.ndarray, finite: np.ndarray, mismatches: np.ndarray) -> None:
        self.sum += _pool(err_sum, self.block)
        self.count += _pool(finite, self.block)
        self.nonfinite += _pool(mismatches, self.block)

    @property
    def values(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.sum / np.maximum(self.count, 1), np.nan)

    def cells(self) -> tuple[tuple[tuple[float | None, ...], ...], float | None]:
        values = self.values
        finite = values[np.isfinite(values)]
        cells = tuple(tuple(None if math.isnan(v) else float(v) for v in row) for row in values.tolist())
        return cells, float(finite.max()) if finite.size else None


def _error_grids(ref: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sum of finite |cand - ref|, finite count, non-finite mismatches) per (H, W) of (rest, H, W) arrays."""
    height, width = ref.shape[-2:]
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
    return err_sum, finite_count, mismatch_count


class ErrorHeatmap:
    """Mean absolute error per (block of) spatial position, accumulated over samples."""

    def __init__(self, spatial_axes: tuple[int, int], max_side: int = 64, max_items: int = MAX_ITEMS) -> None:
        if len(spatial_axes) != 2:
            raise UsageError(f"spatial_axes must name two axes (height, width), got {spatial_axes!r}")
        if max_side < 1:
            raise UsageError(f"max_side must be at least 1, got {max_side}")
        self.spatial_axes = (int(spatial_axes[0]), int(spatial_axes[1]))
        self.max_side = max_side
        self.max_items = max_items
        self.samples = 0
        self.omitted: str | None = None  # why the map over all samples is not drawn
        self._total: _PooledGrid | None = None
        self._items: list[tuple[str, _PooledGrid]] = []

    def _axes_for(self, ndim: int) -> tuple[int, int] | None:
        h_axis, w_axis = self.spatial_axes
        if not (-ndim <= h_axis < ndim and -ndim <= w_axis < ndim):
            return None
        h_axis, w_axis = h_axis % ndim, w_axis % ndim
        if h_axis == w_axis:
            raise UsageError(f"heatmap spatial axes {self.spatial_axes} name the same axis twice")
        return h_axis, w_axis

    def _omit(self, reason: str) -> None:
        if self.omitted is None:
            self.omitted = reason

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        """Add one sample's reference and candidate arrays (any real dtype); what cannot be drawn is noted."""
        ref, cand = np.asarray(ref), np.asarray(cand)
        index = self.samples
        self.samples += 1
        if ref.shape != cand.shape:
            self._omit(
                f"sample {index}: reference shape {list(ref.shape)} and candidate shape "
                f"{list(cand.shape)} differ (the comparison reports it)"
            )
            return
        axes = self._axes_for(ref.ndim)
        if axes is None:
            self._omit(
                f"spatial axes {list(self.spatial_axes)} are out of range for an output with {ref.ndim} "
                "dimensions; set the recipe's spatial_axes to two of the output's axes"
            )
            return
        h_axis, w_axis = axes
        height, width = ref.shape[h_axis], ref.shape[w_axis]
        # (batch rows, rest, H, W): a row of its own per index of axis 0 unless axis 0 is spatial
        batched = ref.ndim > 2 and 0 not in axes and ref.shape[0] > 1
        rows = ref.shape[0] if batched else 1
        ref = np.moveaxis(ref, (h_axis, w_axis), (-2, -1)).reshape(rows, -1, height, width)
        cand = np.moveaxis(cand, (h_axis, w_axis), (-2, -1)).reshape(rows, -1, height, width)
        if self._total is None and self.omitted is None:
            self._total = _PooledGrid(height, width, self.max_side)
        elif self._total is not None and self._total.source_hw != (height, width):
            first_h, first_w = self._total.source_hw
            self._omit(
                f"the samples have different spatial sizes ({first_h}x{first_w}, then {height}x{width} "
                f"in sample {index}): no map over all of them; the per-sample maps show each"
            )
            self._total = None
        for row in range(rows):
            grids = _error_grids(ref[row], cand[row])
            if self._total is not None:
                self._total.add(*grids)
            if len(self._items) < self.max_items:
                item = _PooledGrid(height, width, self.max_side)
                item.add(*grids)
                self._items.append(
                    (f"sample {index}, batch row {row}" if batched else f"sample {index}", item)
                )

    @property
    def nbytes(self) -> int:
        """The state's size: fixed by the first sample's spatial size, whatever the number of samples."""
        grids = [grid for _, grid in self._items] + ([self._total] if self._total is not None else [])
        return sum(g.sum.nbytes + g.count.nbytes + g.nonfinite.nbytes for g in grids)

    @property
    def values(self) -> np.ndarray:
        """The current map: mean abs error per cell, NaN where a cell has no finite element."""
        if self._total is None:
            raise HarnessError(
                "heatmap has no map over all samples: "
                + (self.omitted or "no samples yet; call update(ref, cand) first")
            )
        return self._total.values

    def record(self, output: str, ref_backend: str, cand_backend: str) -> ErrorMap:
        if not self.samples:
            raise HarnessError("heatmap has no samples yet: call update(ref, cand) first")
        per_sample = []
        for label, grid in self._items:
            cells, top = grid.cells()
            per_sample.append(
                SampleErrorMap(
                    label=label,
                    shape=(len(cells), len(cells[0]) if cells else 0),
                    source_hw=grid.source_hw,
                    block_hw=grid.block,
                    values=cells,
                    max=top,
                    nonfinite_mismatches=int(grid.nonfinite.sum()),
                )
            )
        total = self._total
        cells, top = total.cells() if total is not None else ((), None)
        return ErrorMap(
            output=output,
            ref_backend=ref_backend,
            cand_backend=cand_backend,
            shape=(len(cells), len(cells[0]) if cells else 0),
            source_hw=total.source_hw if total is not None else (0, 0),
            block_hw=total.block if total is not None else (1, 1),
            spatial_axes=self.spatial_axes,
            samples=self.samples,
            values=cells,
            max=top,
            nonfinite_mismatches=int(total.nonfinite.sum()) if total is not None else 0,
            omitted=self.omitted,
            per_sample=tuple(per_sample),
        )
