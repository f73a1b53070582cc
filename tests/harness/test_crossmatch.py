from __future__ import annotations

import json

import numpy as np
import pytest
from trt_harness.harness.crossmatch import CLEAR_GAP, CrossMatch, cross_match
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.core.serde import from_json, to_json


def _depth_outputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    depth = rng.random((1, 1, 32, 32)).astype(np.float32) * 10
    return {"depth": depth, "depth_min": depth - rng.random(depth.shape).astype(np.float32)}


def _perturbed(outputs: dict[str, np.ndarray], rng: np.random.Generator, scale: float = 1e-5):
    return {k: v + rng.standard_normal(v.shape).astype(v.dtype) * scale for k, v in outputs.items()}


def test_swapped_same_shape_outputs_are_reported_with_exact_message():
    rng = np.random.default_rng(0)
    ref = _depth_outputs(rng)
    cand = _perturbed({"depth": ref["depth_min"], "depth_min": ref["depth"]}, rng)
    result = cross_match(ref, cand, ref_backend="torch", cand_backend="onnxrt")
    assert not result
    assert result.mismatches == (
        "ordering mismatch: ORT 'depth' matches Torch 'depth_min'",
        "ordering mismatch: ORT 'depth_min' matches Torch 'depth'",
    )
    assert result.best_match == {"depth": "depth_min", "depth_min": "depth"}


def test_outputs_in_order_pass():
    rng = np.random.default_rng(1)
    ref = _depth_outputs(rng)
    result = cross_match(ref, _perturbed(ref, rng), ref_backend="torch", cand_backend="tensorrt")
    assert result and result.mismatches == ()
    assert result.score("depth", "depth") < 1e-5 < result.score("depth", "depth_min")


def test_display_names_for_tensorrt_against_onnxrt():
    rng = np.random.default_rng(2)
    ref = _depth_outputs(rng)
    cand = {"depth": ref["depth_min"], "depth_min": ref["depth"]}
    result = cross_match(ref, cand, ref_backend="onnxrt", cand_backend="tensorrt")
    assert "ordering mismatch: TensorRT 'depth' matches ORT 'depth_min'" in result.mismatches


def test_swapped_outputs_of_different_shapes_are_detected():
    rng = np.random.default_rng(3)
    ref = {"boxes": rng.random((10, 4)), "scores": rng.random((10,))}
    cand = {"boxes": ref["scores"], "scores": ref["boxes"]}
    result = cross_match(ref, cand, ref_backend="torch", cand_backend="onnxrt")
    assert result.score("boxes", "boxes") is None
    assert set(result.mismatches) == {
        "ordering mismatch: ORT 'boxes' matches Torch 'scores'",
        "ordering mismatch: ORT 'scores' matches Torch 'boxes'",
    }


def test_same_element_count_is_compatible():
    ref = {"a": np.arange(12.0).reshape(3, 4), "b": np.ones((2, 6))}
    cand = {"a": np.arange(12.0).reshape(4, 3), "b": np.ones(12)}
    result = cross_match(ref, cand, ref_backend="torch", cand_backend="onnxrt")
    assert result and result.score("a", "a") == 0.0 and result.score("a", "b") is not None


def test_near_identical_outputs_do_not_flip():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(1000)
    x_clamped = x.copy()
    x_clamped[np.argmax(x)] -= 0.05  # relative L2 difference ~1.6e-3, well under CLEAR_GAP
    ref = {"x": x, "x_clamped": x_clamped}
    # the candidate "x" happens to be closer to ref "x_clamped": rounding noise, not a permutation
    cand = {"x": x_clamped + 1e-9, "x_clamped": x_clamped}
    result = cross_match(ref, cand, ref_backend="torch", cand_backend="onnxrt")
    assert result.best_match["x"] == "x_clamped"
    assert result.score("x", "x") < CLEAR_GAP / 5
    assert result, result.mismatches


def test_constant_outputs():
    ref = {"zeros": np.zeros(8), "also_zeros": np.zeros(8), "ones": np.ones(8), "twos": np.full(8, 2.0)}
    same = cross_match(ref, dict(ref), ref_backend="torch", cand_backend="onnxrt")
    assert same and same.best_match["zeros"] == "zeros" and same.best_match["also_zeros"] == "also_zeros"
    swapped = cross_match(
        ref, {**ref, "ones": ref["twos"], "twos": ref["ones"]}, ref_backend="torch", cand_backend="onnxrt"
    )
    assert set(swapped.mismatches) == {
        "ordering mismatch: ORT 'ones' matches Torch 'twos'",
        "ordering mismatch: ORT 'twos' matches Torch 'ones'",
    }


def test_output_without_compatible_reference_is_listed_not_a_mismatch():
    ref = {"a": np.ones(4)}
    cand = {"a": np.ones(4), "extra": np.ones(5), "renamed": np.ones(4)}
    result = cross_match(ref, cand, ref_backend="torch", cand_backend="onnxrt")
    assert result and result.unmatched == ("extra",)
    assert result.best_match["renamed"] == "a"  # recorded, but a naming problem is not an ordering one


def test_nonfinite_elements_are_ignored_in_scores():
    ref = {"a": np.array([1.0, np.nan, 3.0]), "b": np.array([5.0, 6.0, 7.0])}
    cand = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([5.0, 6.0, np.inf])}
    result = cross_match(ref, cand, ref_backend="torch", cand_backend="onnxrt")
    assert result and result.score("a", "a") == 0.0 and result.score("b", "b") == 0.0


def test_several_samples_accumulate():
    rng = np.random.default_rng(5)
    refs = [_depth_outputs(rng) for _ in range(3)]
    # swapped in one sample only: the other samples' good matches outweigh it
    cands = [_perturbed(r, rng) for r in refs]
    cands[0] = {"depth": refs[0]["depth_min"], "depth_min": refs[0]["depth"]}
    one_bad = cross_match(refs, cands, ref_backend="torch", cand_backend="onnxrt")
    assert one_bad.samples == 3
    single = cross_match(refs[0], cands[0], ref_backend="torch", cand_backend="onnxrt")
    assert not single
    assert one_bad.score("depth", "depth") < single.score("depth", "depth")

    all_swapped = [{"depth": r["depth_min"], "depth_min": r["depth"]} for r in refs]
    assert not cross_match(refs, all_swapped, ref_backend="torch", cand_backend="onnxrt")


def test_sample_count_mismatch_is_an_error():
    with pytest.raises(HarnessError, match="2 candidate samples but 1 reference"):
        cross_match([{"a": np.ones(1)}], [{"a": np.ones(1)}] * 2, ref_backend="torch", cand_backend="onnxrt")


def test_json_round_trip():
    rng = np.random.default_rng(6)
    ref = {**_depth_outputs(rng), "flag": np.ones(3)}
    cand = {"depth": ref["depth_min"], "depth_min": ref["depth"], "flag": np.ones(3), "extra": np.ones(2)}
    result = cross_match(ref, cand, ref_backend="torch", cand_backend="onnxrt")
    restored = from_json(CrossMatch, json.loads(json.dumps(to_json(result), allow_nan=False)))
    assert restored == result and bool(restored) is False
