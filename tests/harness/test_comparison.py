from __future__ import annotations

import json
import math
import tracemalloc
from unittest import mock

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import trt_harness.harness.comparison as comparison
from hypothesis import given, settings
from hypothesis import strategies as st
from trt_harness.harness.comparison import (
    REL_ERR_FLOOR,
    ComparisonReport,
    OutputAccumulator,
    OutputComparison,
    compare_runs,
    default_pairs,
)
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.core.serde import from_json, to_json
from trt_harness.models.recipe import Tolerance

# The histogram has 8 bins per power of two: a median/quantile estimate is within 1/8 of the exact value.
HIST_RESOLUTION = 0.125


def _small_chunks(size: int = 1000):
    """Force several chunks per sample so chunk boundaries are exercised on small arrays."""
    return mock.patch.object(comparison, "_CHUNK", size)


def _random_samples(rng: np.random.Generator, count: int, shape: tuple[int, ...], noise: float = 1e-3):
    refs = [rng.standard_normal(shape).astype(np.float32) for _ in range(count)]
    cands = [
        (r + rng.standard_normal(shape) * noise * rng.exponential(size=shape)).astype(np.float32)
        for r in refs
    ]
    return refs, cands


def _accumulate(refs, cands, tolerance: Tolerance | None = None, **kwargs) -> OutputComparison:
    acc = OutputAccumulator("out", "torch", "onnxrt", tolerance or Tolerance(), **kwargs)
    for r, c in zip(refs, cands, strict=True):
        acc.update(r, c)
    return acc.result()


def _numpy_errors(refs, cands):
    ref = np.concatenate([np.asarray(r, np.float64).ravel() for r in refs])
    cand = np.concatenate([np.asarray(c, np.float64).ravel() for c in cands])
    abs_err = np.abs(cand - ref)
    rel_err = abs_err / np.maximum(np.abs(ref), REL_ERR_FLOOR)
    return ref, cand, abs_err, rel_err


def _assert_stats_match_numpy(result: OutputComparison, refs, cands, tolerance: Tolerance) -> None:
    ref, cand, abs_err, rel_err = _numpy_errors(refs, cands)
    assert result.elements == result.finite_elements == ref.size
    assert result.samples == len(refs)
    assert result.max_abs_err == pytest.approx(abs_err.max(), rel=1e-12, abs=1e-300)
    assert result.min_abs_err == pytest.approx(abs_err.min(), rel=1e-12, abs=1e-300)
    assert result.mean_abs_err == pytest.approx(abs_err.mean(), rel=1e-9, abs=1e-300)
    assert result.std_abs_err == pytest.approx(abs_err.std(), rel=1e-6, abs=1e-12 * abs_err.max())
    assert result.max_rel_err == pytest.approx(rel_err.max(), rel=1e-12, abs=1e-300)
    assert result.mean_rel_err == pytest.approx(rel_err.mean(), rel=1e-9, abs=1e-300)
    assert result.rmse == pytest.approx(np.sqrt(np.mean(abs_err**2)), rel=1e-9, abs=1e-300)
    norms = np.linalg.norm(ref) * np.linalg.norm(cand)
    expected_cos = np.dot(ref, cand) / norms if norms else (1.0 if not ref.any() and not cand.any() else 0.0)
    assert result.cosine_similarity == pytest.approx(np.clip(expected_cos, -1, 1), rel=1e-9, abs=1e-12)
    exceeding = np.count_nonzero(abs_err > tolerance.atol + tolerance.rtol * np.abs(ref))
    assert result.out_of_tolerance == exceeding
    assert result.out_of_tolerance_fraction == pytest.approx(exceeding / ref.size)
    for estimate, exact in (
        (result.median_abs_err, np.median(abs_err)),
        (result.quantile_abs_err, np.quantile(abs_err, tolerance.quantile)),
        (result.median_rel_err, np.median(rel_err)),
        (result.quantile_rel_err, np.quantile(rel_err, tolerance.quantile)),
    ):
        assert abs(estimate - exact) <= HIST_RESOLUTION * exact * (1 + 1e-9)
    assert sum(count for _lo, _hi, count in result.abs_err_histogram) == ref.size
    assert sum(count for _lo, _hi, count in result.rel_err_histogram) == ref.size


def test_statistics_match_numpy_over_several_chunks_and_samples():
    rng = np.random.default_rng(1)
    refs, cands = _random_samples(rng, 5, (7, 300))
    tolerance = Tolerance(atol=1e-4, rtol=1e-3, quantile=0.9)
    with _small_chunks():
        result = _accumulate(refs, cands, tolerance)
    _assert_stats_match_numpy(result, refs, cands, tolerance)
    assert result.abs_err_quantile(0.5) == result.median_abs_err


def test_histogram_bins_are_contiguous_log_bins_covering_the_errors():
    rng = np.random.default_rng(2)
    refs, cands = _random_samples(rng, 2, (1000,))
    cands[0][:10] = refs[0][:10]  # some exact zeros
    result = _accumulate(refs, cands)
    bins = result.abs_err_histogram
    assert bins[0][0] == 0.0 and bins[0][2] == 10
    _, _, abs_err, _ = _numpy_errors(refs, cands)
    for lo, hi, count in bins[1:]:
        assert 0 < lo < hi <= lo * (1 + HIST_RESOLUTION)
        assert count == np.count_nonzero((abs_err >= lo) & (abs_err < hi))


def _traced_updates(count: int, rng: np.random.Generator) -> tuple[int, int]:
    acc = OutputAccumulator("out", "torch", "onnxrt", Tolerance(atol=0, rtol=0), class_axis=-1)
    tracemalloc.start()
    try:
        for _ in range(count):
            ref = rng.standard_normal((4, 5000)).astype(np.float32)
            acc.update(ref, ref + np.float32(1e-3) * rng.standard_normal(ref.shape).astype(np.float32))
            del ref
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return current, peak


def test_memory_does_not_grow_with_the_number_of_samples():
    rng = np.random.default_rng(3)
    current_10, peak_10 = _traced_updates(10, rng)
    current_200, peak_200 = _traced_updates(200, rng)
    assert peak_200 < 1.2 * peak_10
    # what the accumulator keeps after the updates: no per-sample growth beyond a few KB
    assert current_200 - current_10 < 16 * 1024


@pytest.mark.parametrize("check", ["elemwise", "max", "mean", "median", "quantile"])
def test_nan_in_candidate_only_fails_even_with_huge_tolerance(check):
    ref = np.linspace(-1, 1, 500, dtype=np.float32).reshape(5, 100)
    cand = ref.copy()
    cand[3, 17] = np.nan
    result = _accumulate([ref], [cand], Tolerance(atol=1e30, rtol=1e30, check=check))
    assert not result
    assert result.nonfinite_mismatches == 1
    assert (result.cand_nan, result.ref_nan) == (1, 0)
    assert "NaN" in result.reason and "[0, 3, 17]" in result.reason
    assert result.worst[0].index == (0, 3, 17) and math.isinf(result.worst[0].abs_err)


def test_nan_mismatch_without_kept_worst_elements_still_fails_with_counts():
    ref = np.ones((4, 5), dtype=np.float32)
    cand = ref.copy()
    cand[2, 1] = np.nan
    result = _accumulate([ref], [cand], Tolerance(atol=1e-3), worst_k=0)
    assert not result and result.worst == ()
    assert "1 elements are NaN/Inf on one side only" in result.reason and "first at" not in result.reason


def test_inf_in_reference_only_fails():
    ref = np.ones(10, dtype=np.float32)
    ref[4] = np.inf
    result = _accumulate([ref], [np.ones(10, dtype=np.float32)], Tolerance(atol=1e30))
    assert not result and result.ref_inf == 1 and result.nonfinite_mismatches == 1


def test_matching_nonfinite_values_are_not_a_mismatch():
    rng = np.random.default_rng(4)
    refs, cands = _random_samples(rng, 1, (2000,))
    for arr in (refs[0], cands[0]):
        arr[[5, 1500]] = np.nan
        arr[7] = np.inf
        arr[9] = -np.inf
    tolerance = Tolerance(atol=1.0)
    with _small_chunks():
        result = _accumulate(refs, cands, tolerance)
    assert result and result.nonfinite_mismatches == 0
    assert (result.ref_nan, result.cand_nan, result.ref_inf, result.cand_inf) == (2, 2, 2, 2)
    finite = np.isfinite(refs[0])
    assert result.elements == 2000 and result.finite_elements == finite.sum()
    _, _, abs_err, _ = _numpy_errors([refs[0][finite]], [cands[0][finite]])
    assert result.max_abs_err == pytest.approx(abs_err.max())
    assert result.mean_abs_err == pytest.approx(abs_err.mean())


def test_opposite_infinities_are_a_mismatch():
    ref = np.array([np.inf, 1.0], dtype=np.float32)
    cand = np.array([-np.inf, 1.0], dtype=np.float32)
    assert _accumulate([ref], [cand], Tolerance(atol=1e30)).nonfinite_mismatches == 1


def test_float64_overflow_does_not_break_the_statistics():
    ref = np.array([1e308, 1e-300, 1.0])
    cand = np.array([-1e308, 1e300, 1.0])
    result = _accumulate([ref], [cand], Tolerance(atol=1e30))
    assert not result and result.nonfinite_mismatches == 1  # |(-1e308) - 1e308| overflows
    assert result.max_abs_err == pytest.approx(1e300) and math.isfinite(result.max_rel_err)
    assert sum(count for _lo, _hi, count in result.rel_err_histogram) == result.finite_elements == 2


def test_worst_k_matches_brute_force():
    rng = np.random.default_rng(5)
    shape = (3, 40, 50)
    refs, cands = _random_samples(rng, 4, shape)
    with _small_chunks(700):
        result = _accumulate(refs, cands, worst_k=17)
    _, _, abs_err, _ = _numpy_errors(refs, cands)
    order = np.lexsort((np.arange(abs_err.size), -abs_err))[:17]
    per_sample = int(np.prod(shape))
    expected = [(i // per_sample, *np.unravel_index(i % per_sample, shape)) for i in order]
    assert [w.index for w in result.worst] == [tuple(int(x) for x in e) for e in expected]
    for w, i in zip(result.worst, order, strict=True):
        sample, *pos = w.index
        assert w.abs_err == abs_err[i]
        assert w.ref == refs[sample][tuple(pos)] and w.cand == cands[sample][tuple(pos)]


def test_worst_k_skips_zero_errors_and_breaks_ties_by_position():
    ref = np.zeros(3000, dtype=np.float32)
    cand = ref.copy()
    cand[[2500, 100, 1200]] = 1.0
    with _small_chunks():
        result = _accumulate([ref, ref], [ref, cand], worst_k=5)
    assert [w.index for w in result.worst] == [(1, 100), (1, 1200), (1, 2500)]


def test_argmax_agreement():
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((2, 50, 10)).astype(np.float32)
    cand = logits.copy()
    cand[0, :7] = rng.standard_normal((7, 10))
    result = _accumulate([logits], [cand], class_axis=-1)
    expected = np.mean(np.argmax(logits, -1) == np.argmax(cand, -1))
    assert expected < 1 and result.argmax_agreement == pytest.approx(expected)
    assert result.argmax_positions == 100
    assert _accumulate([logits], [cand]).argmax_agreement is None


def test_class_axis_out_of_range_is_a_usage_error():
    with pytest.raises(HarnessError, match="class axis 3"):
        _accumulate([np.zeros((2, 3))], [np.zeros((2, 3))], class_axis=3)


def _two_level_errors(rng: np.random.Generator):
    """90% of elements off by ~1e-6, 10% by ~1e-2, reference values around 10."""
    ref = (10 + rng.random(10_000)).astype(np.float64)
    err = np.where(rng.random(ref.size) < 0.9, 1e-6, 1e-2) * (1 + rng.random(ref.size))
    return ref, ref + err


@pytest.mark.parametrize("check", ["max", "mean", "median", "quantile"])
@pytest.mark.parametrize("quantile", [0.5, 0.85, 0.95])
def test_statistic_checks_pass_iff_abs_or_rel_statistic_within_tolerance(check, quantile):
    rng = np.random.default_rng(7)
    ref, cand = _two_level_errors(rng)
    abs_err = np.abs(cand - ref)
    rel_err = abs_err / np.abs(ref)
    q = {"median": 0.5, "quantile": quantile}.get(check)

    def statistic(values):
        if check == "max":
            return values.max()
        if check == "mean":
            return values.mean()
        return np.quantile(values, q, method="lower")

    abs_stat, rel_stat = statistic(abs_err), statistic(rel_err)
    for atol in (abs_stat * 0.9, abs_stat * 1.1):
        for rtol in (rel_stat * 0.9, rel_stat * 1.1):
            tolerance = Tolerance(atol=atol, rtol=rtol, check=check, quantile=quantile)
            result = _accumulate([ref], [cand], tolerance)
            expected = abs_stat <= atol or rel_stat <= rtol
            assert bool(result) == expected, (atol, rtol)
            assert (result.reason == "") == expected


@pytest.mark.parametrize(("check", "q"), [("median", 0.5), ("quantile", 0.9), ("quantile", 0.37)])
def test_quantile_verdict_is_exact_at_the_boundary(check, q):
    rng = np.random.default_rng(11)
    ref = rng.standard_normal(999)
    cand = ref + rng.standard_normal(ref.size) * 1e-3
    boundary = np.quantile(np.abs(cand - ref), q, method="lower")
    assert _accumulate([ref], [cand], Tolerance(atol=boundary, rtol=0, check=check, quantile=q))
    below = np.nextafter(boundary, 0)
    assert not _accumulate([ref], [cand], Tolerance(atol=below, rtol=0, check=check, quantile=q))


def test_elemwise_check_uses_atol_plus_rtol_times_reference():
    ref = np.array([1.0, 100.0, 0.0])
    cand = np.array([1.0015, 100.05, 1e-3])
    assert _accumulate([ref], [cand], Tolerance(atol=1e-3, rtol=1e-3))  # 1.5e-3 <= 1e-3 + 1e-3 * 1
    failing = _accumulate([ref], [cand], Tolerance(atol=1e-3, rtol=4e-4))
    assert not failing and failing.out_of_tolerance == 2
    assert failing.reason.startswith("2 of 3 elements (66.7%) exceed atol+rtol*|ref| (atol=1e-3, rtol=4e-4)")
    assert failing.reason.endswith("max abs err 0.05 at [0, 1]")


def test_json_round_trip_is_strict_json():
    rng = np.random.default_rng(8)
    refs, cands = _random_samples(rng, 3, (20, 30))
    cands[1][2, 3] = np.nan
    result = _accumulate(refs, cands, Tolerance(check="quantile", quantile=0.9), class_axis=1)
    text = json.dumps(to_json(result), allow_nan=False)
    restored = from_json(OutputComparison, json.loads(text))
    assert to_json(restored) == to_json(result)
    assert bool(restored) == bool(result) and restored.reason == result.reason
    assert restored.abs_err_quantile(0.3) == result.abs_err_quantile(0.3)

    clean = _accumulate(refs[:1], cands[:1])
    assert from_json(OutputComparison, json.loads(json.dumps(to_json(clean)))) == clean


def test_a_shape_mismatch_is_a_failed_comparison_naming_both_shapes():
    acc = OutputAccumulator("boxes", "torch", "tensorrt", Tolerance())
    acc.update(np.zeros((1, 25200, 85)), np.zeros((1, 85, 25200)))
    result = acc.result()
    assert not result and result.shape_mismatches == 1 and result.samples == 1
    for part in ("Torch (1, 25200, 85)", "TensorRT (1, 85, 25200)", "1 of 1 samples"):
        assert part in result.reason


def test_variable_length_outputs_compare_the_samples_that_match_and_fail_on_the_others():
    """Detections: 13 boxes on one side, 25 on the other, for one image of three."""
    acc = OutputAccumulator("boxes", "torch", "onnxrt", Tolerance())
    same = np.ones((13, 6))
    acc.update(same, same)
    acc.update(np.ones((13, 6)), np.ones((25, 6)))
    acc.update(same, same + 1e-9)
    result = acc.result()
    assert not result and result.samples == 3 and result.shape_mismatches == 1
    assert result.elements == 2 * 13 * 6 and result.max_abs_err == pytest.approx(1e-9)
    assert "shapes differ in 1 of 3 samples: Torch (13, 6), ORT (25, 6) (sample 1)" in result.reason


def test_invalid_tolerance_is_rejected():
    with pytest.raises(HarnessError, match="'logits'"):
        OutputAccumulator("logits", "torch", "onnxrt", Tolerance(atol=-1))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_an_output_with_no_finite_element_is_never_a_pass(value):
    """All-NaN or all-Inf on both sides (NaN weights, `x * nan`): matching, but nothing compared."""
    ref = np.full((2, 8), value, dtype=np.float32)
    result = _accumulate([ref, ref], [ref.copy(), ref.copy()], Tolerance(atol=1e30, rtol=1e30))
    assert not result and result.finite_elements == 0 and result.nonfinite_mismatches == 0
    assert "none of the 32 elements is finite on both sides" in result.reason
    assert "nothing was compared" in result.reason


def test_empty_and_scalar_outputs():
    empty = _accumulate([np.zeros((0, 4))], [np.zeros((0, 4))])
    assert not empty and empty.elements == 0 and empty.max_abs_err is None
    assert "no elements on either side: nothing was compared" in empty.reason
    scalar = _accumulate([np.float32(2.0)], [np.float32(3.0)], Tolerance(atol=0.5))
    assert not scalar and scalar.worst[0].index == (0,) and scalar.max_abs_err == 1.0


def test_default_pairs_order():
    assert default_pairs(["tensorrt", "onnxrt", "torch"]) == [
        ("torch", "onnxrt"),
        ("onnxrt", "tensorrt"),
        ("torch", "tensorrt"),
    ]
    assert default_pairs(["tensorrt", "torch"]) == [("torch", "tensorrt")]


def test_compare_runs_matches_outputs_by_name_regardless_of_order():
    rng = np.random.default_rng(9)
    samples = []
    for _ in range(3):
        torch_out = {"boxes": rng.standard_normal((4, 4)), "scores": rng.standard_normal((4, 4)) * 100}
        ort_out = {name: arr + 1e-7 for name, arr in reversed(torch_out.items())}
        trt_out = {"scores": torch_out["scores"] + 1e-7, "boxes": torch_out["boxes"] + 1e-7}
        samples.append({"tensorrt": trt_out, "torch": torch_out, "onnxrt": ort_out})
    report = compare_runs(iter(samples), tolerance_for=lambda _name: Tolerance(atol=1e-6))
    assert report and report.samples == 3 and not report.missing
    assert [(c.ref_backend, c.cand_backend, c.output) for c in report.comparisons] == [
        (ref, cand, output)
        for ref, cand in [("torch", "onnxrt"), ("onnxrt", "tensorrt"), ("torch", "tensorrt")]
        for output in ("boxes", "scores")
    ]
    assert all(c.samples == 3 and c.max_abs_err < 1e-6 for c in report.comparisons)


def test_compare_runs_reports_missing_output_by_name():
    ref = {"depth": np.ones(5), "depth_min": np.zeros(5)}
    samples = [{"torch": ref, "onnxrt": {"depth": np.ones(5)}} for _ in range(2)]
    report = compare_runs(samples)
    assert not report
    (missing,) = report.missing
    assert (missing.output, missing.missing_from, missing.samples_missing) == ("depth_min", "onnxrt", 2)
    assert any("'depth_min'" in line and "ORT" in line for line in report.failures())
    assert [c.output for c in report.comparisons] == ["depth"]


def test_compare_runs_uses_per_output_tolerance_and_class_axis():
    ref = {"logits": np.array([[1.0, 2.0, 3.0]]), "feat": np.array([1.0, 2.0])}
    cand = {"logits": np.array([[1.0, 2.0, 3.1]]), "feat": np.array([1.0, 2.1])}
    tolerances = {"logits": Tolerance(atol=0.2)}
    report = compare_runs(
        [{"torch": ref, "onnxrt": cand}],
        tolerance_for=lambda name: tolerances.get(name, Tolerance()),
        class_axes={"logits": -1},
    )
    by_name = {c.output: c for c in report.comparisons}
    assert by_name["logits"] and not by_name["feat"] and not report
    assert by_name["logits"].argmax_agreement == 1.0 and by_name["feat"].argmax_agreement is None
    assert report.failures() == [f"'feat' Torch vs ORT: {by_name['feat'].reason}"]


def test_compare_runs_report_json_round_trip():
    samples = [{"torch": {"a": np.arange(4.0)}, "onnxrt": {"a": np.arange(4.0) + 1e-3}, "tensorrt": {}}]
    report = compare_runs(samples)
    restored = from_json(ComparisonReport, json.loads(json.dumps(to_json(report), allow_nan=False)))
    assert restored == report and bool(restored) == bool(report)


def test_compare_runs_errors():
    with pytest.raises(HarnessError, match="no samples"):
        compare_runs([])
    with pytest.raises(HarnessError, match="at least two backends"):
        compare_runs([{"torch": {"a": np.zeros(1)}}])
    with pytest.raises(HarnessError, match="sample 1 has no outputs from TensorRT"):
        compare_runs(
            [{"torch": {"a": np.zeros(1)}, "tensorrt": {"a": np.zeros(1)}}, {"torch": {"a": np.zeros(1)}}]
        )


finite_floats = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=40),
    samples=st.integers(1, 4),
    chunk=st.sampled_from([7, 64, 1 << 16]),
    atol=st.sampled_from([0.0, 1e-6, 1e-2]),
    rtol=st.sampled_from([0.0, 1e-5, 1e-1]),
)
def test_accumulator_matches_numpy_property(data, shape, samples, chunk, atol, rtol):
    refs, cands = [], []
    for _ in range(samples):
        ref = data.draw(hnp.arrays(np.float32, shape, elements=finite_floats))
        # mostly small perturbations, some arbitrary values, some exact copies
        noise = data.draw(hnp.arrays(np.float32, shape, elements=finite_floats))
        pick = data.draw(hnp.arrays(np.int8, shape, elements=st.integers(0, 2)))
        cand = np.where(pick == 0, ref, np.where(pick == 1, ref + noise * np.float32(1e-6), noise))
        refs.append(ref)
        cands.append(cand.astype(np.float32))
    tolerance = Tolerance(atol=atol, rtol=rtol, quantile=0.75)
    with _small_chunks(chunk):
        result = _accumulate(refs, cands, tolerance, worst_k=3)
    _assert_stats_match_numpy(result, refs, cands, tolerance)
    _, _, abs_err, _ = _numpy_errors(refs, cands)
    expected_worst = np.sort(abs_err[abs_err > 0])[::-1][:3]
    assert [w.abs_err for w in result.worst] == expected_worst.tolist()
    # the statistics alone: a generated all-zero reference is "no signal", judged on its own
    assert result.within_tolerance == (result.out_of_tolerance == 0)


def test_min_argmax_agreement_is_an_extra_criterion():
    from trt_harness.harness.comparison import OutputAccumulator
    from trt_harness.models.recipe import Tolerance

    ref = np.array([[0.0, 1.0, 0.5], [2.0, 0.0, 1.0]], dtype=np.float32)
    cand = np.array([[0.0, 1.0, 1.1], [2.0, 0.0, 1.0]], dtype=np.float32)  # row 0 argmax flips to class 2
    loose = Tolerance(atol=1.0, rtol=0.0)
    acc = OutputAccumulator("logits", "torch", "onnxrt", loose, class_axis=1)
    acc.update(ref, cand)
    assert acc.result()
    strict = Tolerance(atol=1.0, rtol=0.0, min_argmax_agreement=1.0)
    acc = OutputAccumulator("logits", "torch", "onnxrt", strict, class_axis=1)
    acc.update(ref, cand)
    result = acc.result()
    assert not result and "argmax agrees at 50" in result.reason
    no_axis = OutputAccumulator("logits", "torch", "onnxrt", strict)
    no_axis.update(ref, ref)
    assert not no_axis.result() and "class_axes" in no_axis.result().reason
