from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trt_harness.harness.heatmap import ErrorHeatmap
from trt_harness.models.core.errors import HarnessError, UsageError
from trt_harness.models.core.serde import to_json


def recorded(heatmap: ErrorHeatmap) -> dict:
    """The error map as results.json holds it."""
    return to_json(heatmap.record("y", "torch", "onnxrt"))


def reference_map(
    pairs: list[tuple[np.ndarray, np.ndarray]], axes: tuple[int, int], max_side: int
) -> np.ndarray:
    """The heatmap computed in one go with numpy: pooled sums of |a - b| over pooled element counts."""
    errors = np.stack(
        [np.moveaxis(np.abs(b.astype(np.float64) - a.astype(np.float64)), axes, (-2, -1)) for a, b in pairs]
    )
    height, width = errors.shape[-2:]
    errors = errors.reshape(-1, height, width)
    block_h, block_w = math.ceil(height / max_side), math.ceil(width / max_side)
    out_h, out_w = math.ceil(height / block_h), math.ceil(width / block_w)
    result = np.empty((out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            block = errors[:, i * block_h : (i + 1) * block_h, j * block_w : (j + 1) * block_w]
            result[i, j] = block.mean()
    return result


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 9), min_size=2, max_size=4),
    axes_seed=st.integers(0, 1000),
    max_side=st.integers(1, 6),
    samples=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_numpy_mean_over_other_axes_samples_and_blocks(
    shape: list[int], axes_seed: int, max_side: int, samples: int, seed: int
) -> None:
    ndim = len(shape)
    h_axis = axes_seed % ndim
    w_axis = (h_axis + 1 + (axes_seed // ndim) % (ndim - 1)) % ndim
    rng = np.random.default_rng(seed)
    pairs = [
        (rng.normal(size=shape).astype(np.float32), rng.normal(size=shape).astype(np.float32))
        for _ in range(samples)
    ]
    heatmap = ErrorHeatmap((h_axis - ndim, w_axis), max_side=max_side)  # a negative axis works too
    for ref, cand in pairs:
        heatmap.update(ref, cand)
    expected = reference_map(pairs, (h_axis, w_axis), max_side)
    np.testing.assert_allclose(heatmap.values, expected, rtol=1e-12, atol=1e-12)
    data = recorded(heatmap)
    assert data["shape"] == list(expected.shape)
    assert max(data["shape"]) <= max_side
    assert data["source_hw"] == [shape[h_axis], shape[w_axis]]
    assert data["max"] == pytest.approx(expected.max())
    assert data["samples"] == samples


def test_state_does_not_grow_with_samples_and_the_map_is_bounded() -> None:
    rng = np.random.default_rng(0)
    heatmap = ErrorHeatmap((2, 3), max_side=16)
    shape = (2, 3, 100, 250)
    heatmap.update(rng.normal(size=shape), rng.normal(size=shape))
    state = {name: value.nbytes for name, value in vars(heatmap).items() if isinstance(value, np.ndarray)}
    for _ in range(5):
        heatmap.update(rng.normal(size=shape), rng.normal(size=shape))
    assert {
        name: value.nbytes for name, value in vars(heatmap).items() if isinstance(value, np.ndarray)
    } == state
    assert sum(state.values()) <= 3 * 16 * 16 * 8
    data = recorded(heatmap)
    assert data["shape"] == [15, 16]  # blocks of 7 x 16 pixels
    assert len(data["values"]) == 15 and all(len(row) == 16 for row in data["values"])
    assert len(json.dumps(data)) < 16 * 16 * 30


def test_error_lands_in_the_cell_where_it_is() -> None:
    ref = np.zeros((1, 64, 64), dtype=np.float32)
    cand = ref.copy()
    cand[0, 40:48, 8:16] = 1.0
    heatmap = ErrorHeatmap((1, 2), max_side=8)
    heatmap.update(ref, cand)
    values = heatmap.values
    assert values[5, 1] == 1.0
    values[5, 1] = 0.0
    assert not values.any()


def test_agreeing_non_finite_values_are_no_error_and_mismatches_are_counted_apart() -> None:
    ref = np.array([[np.nan, np.inf], [1.0, 2.0]])
    cand = np.array([[np.nan, np.inf], [np.nan, 2.5]])
    heatmap = ErrorHeatmap((0, 1))
    heatmap.update(ref, cand)
    data = recorded(heatmap)
    assert data["values"] == [[0.0, 0.0], [None, 0.5]]
    assert data["nonfinite_mismatches"] == 1
    assert data["max"] == 0.5


def test_spatial_size_must_stay_fixed_and_axes_must_exist() -> None:
    heatmap = ErrorHeatmap((0, 1))
    heatmap.update(np.zeros((4, 5)), np.zeros((4, 5)))
    with pytest.raises(HarnessError, match="spatial size 4x6"):
        heatmap.update(np.zeros((4, 6)), np.zeros((4, 6)))
    with pytest.raises(HarnessError, match="out of range"):
        ErrorHeatmap((0, 3)).update(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(HarnessError, match="shape"):
        ErrorHeatmap((0, 1)).update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(UsageError, match="same axis"):
        ErrorHeatmap((1, -1)).update(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(UsageError, match="max_side"):
        ErrorHeatmap((0, 1), max_side=0)
    with pytest.raises(HarnessError, match="no samples"):
        ErrorHeatmap((0, 1)).record("y", "torch", "onnxrt")
