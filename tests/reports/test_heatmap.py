from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trt_harness.harness.heatmap import MAX_ITEMS, ErrorHeatmap
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
    for _ in range(2):  # two batch rows each: the per-sample maps are full after two samples
        heatmap.update(rng.normal(size=shape), rng.normal(size=shape))
    state = heatmap.nbytes
    for _ in range(5):
        heatmap.update(rng.normal(size=shape), rng.normal(size=shape))
    assert heatmap.nbytes == state
    # the map over all samples and MAX_ITEMS per-sample maps, each a sum and two counts per cell
    assert 0 < state <= (1 + MAX_ITEMS) * 3 * 16 * 16 * 8
    data = recorded(heatmap)
    assert data["shape"] == [15, 16]  # blocks of 7 x 16 pixels
    assert len(data["values"]) == 15 and all(len(row) == 16 for row in data["values"])
    assert len(data["per_sample"]) == MAX_ITEMS
    assert len(json.dumps(data)) < (1 + MAX_ITEMS) * 16 * 16 * 30


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


def test_a_map_that_cannot_be_drawn_is_omitted_with_a_note_never_an_error() -> None:
    heatmap = ErrorHeatmap((0, 1))
    heatmap.update(np.zeros((4, 5)), np.ones((4, 5)))
    heatmap.update(np.zeros((4, 6)), np.full((4, 6), 2.0))  # another spatial size: no map over both
    data = recorded(heatmap)
    assert "different spatial sizes (4x5, then 4x6 in sample 1)" in data["omitted"]
    assert data["values"] == [] and data["samples"] == 2
    assert [(m["label"], m["source_hw"], m["max"]) for m in data["per_sample"]] == [
        ("sample 0", [4, 5], 1.0),
        ("sample 1", [4, 6], 2.0),
    ]
    out_of_range = ErrorHeatmap((0, 3))
    out_of_range.update(np.zeros((2, 2)), np.zeros((2, 2)))
    assert "out of range" in recorded(out_of_range)["omitted"]
    mismatched = ErrorHeatmap((0, 1))
    mismatched.update(np.zeros((2, 2)), np.zeros((2, 3)))
    assert "shape [2, 3] differ" in recorded(mismatched)["omitted"]
    with pytest.raises(UsageError, match="same axis"):
        ErrorHeatmap((1, -1)).update(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(UsageError, match="max_side"):
        ErrorHeatmap((0, 1), max_side=0)
    with pytest.raises(HarnessError, match="no samples"):
        ErrorHeatmap((0, 1)).record("y", "torch", "onnxrt")


def test_batch_rows_get_maps_of_their_own_besides_the_batch_average() -> None:
    ref = np.zeros((3, 18, 384), np.float32)
    cand = ref.copy()
    cand[1, 5, 100] = 1.0  # one wrong element, in batch row 1
    heatmap = ErrorHeatmap((1, 2), max_side=64, max_items=4)
    heatmap.update(ref, cand)
    heatmap.update(ref, ref)
    data = recorded(heatmap)
    assert data["shape"] == [18, 64] and data["block_hw"] == [1, 6]
    assert data["max"] == pytest.approx(1.0 / 6 / 6)  # one error in a 1x6 block, over 3 rows x 2 samples
    labels = [m["label"] for m in data["per_sample"]]
    assert labels == [
        "sample 0, batch row 0",
        "sample 0, batch row 1",
        "sample 0, batch row 2",
        "sample 1, batch row 0",
    ]
    row1 = data["per_sample"][1]
    assert row1["max"] == pytest.approx(1.0 / 6) and row1["values"][5][100 // 6] == pytest.approx(1.0 / 6)
    assert data["per_sample"][0]["max"] == 0.0
