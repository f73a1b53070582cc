from __future__ import annotations

import dataclasses
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from trt_harness.harness.detections import DETECTION_IMAGES, detect, write_detection_images
from trt_harness.harness.sample_files import SampleFolder, Tensors
from trt_harness.harness.verdict import verdict_for
from trt_harness.models.core.artifacts import sha256_file
from trt_harness.models.core.errors import ExitCode, HarnessError, UsageError
from trt_harness.models.core.serde import SchemaError, from_json, to_json
from trt_harness.models.detection import DetectionTolerance
from trt_harness.models.recipe import DetectionSpec
from trt_harness.models.recipes import get_recipe
from trt_harness.models.results.detections import DetectionPair, DetectionsReport
from trt_harness.models.results.document import Results, load_results
from trt_harness.models.results.recipe import RecipeRecord
from trt_harness.models.results.stages import CompareDetails, StageRecord

from tests.harness import detection_runs as runs
from tests.harness import results_builders as build


def compare_of(results: Results) -> CompareDetails:
    details = results.details(CompareDetails)
    assert details is not None, results.stage("compare")
    return details


def detections_of(results: Results) -> DetectionsReport | None:
    return compare_of(results).detections


def pair_of(results: Results, cand: str) -> DetectionPair:
    detections = detections_of(results)
    assert detections is not None
    return next(p for p in detections.pairs if p.cand_backend == cand)


# --- end to end: a saved run folder -> rejudge (the compare stage) -> verdict ------------------------


def test_boxes_shifted_by_12px_fail_the_gate_although_tensors_pass(tmp_path: Path) -> None:
    reference = runs.outputs_per_sample(samples=2, batch=1)
    shifted = runs.outputs_per_sample(samples=2, batch=1, perturb=runs.shift_boxes(12.0, images=[1]))
    results = runs.write_run(tmp_path, {"torch": reference, "onnxrt": shifted})

    assert compare_of(results).passed, (
        "the loose tensor tolerance passes; only detections can catch the shift"
    )
    verdict = results.verdict
    assert verdict.exit_code == ExitCode.ACCURACY_FAILED and not verdict.passed
    assert "detections disagree: Torch vs ORT on image 1:" in verdict.summary
    assert "image 0" not in verdict.summary
    pair = pair_of(results, "onnxrt")
    assert pair.gated and not pair.passed and pair.failing_images == (1,)
    detections = detections_of(results)
    assert detections is not None and not detections.passed
    saved = load_results(tmp_path)  # Detections compare by identity: compare what is written
    assert to_json(saved) == to_json(results), "results.json holds what rejudge returned"
    assert saved.verdict == verdict


def test_a_tiny_perturbation_passes(tmp_path: Path) -> None:
    reference = runs.outputs_per_sample(samples=2, batch=1)
    close = runs.outputs_per_sample(samples=2, batch=1, perturb=runs.shift_boxes(0.05))
    close = [out + np.float32(1e-5) * (np.arange(out.size).reshape(out.shape) % 3) for out in close]
    results = runs.write_run(tmp_path, {"torch": reference, "onnxrt": close})

    assert results.verdict.passed, results.verdict.summary
    assert "detections agree on 2 image(s)" in results.verdict.summary
    match = pair_of(results, "onnxrt").images[0].match
    assert match is not None
    assert match.matched_fraction == 1.0 and match.mean_iou is not None and match.mean_iou > 0.99
    assert match.num_ref == 3


def test_score_drift_beyond_the_tolerance_fails(tmp_path: Path) -> None:
    reference = runs.outputs_per_sample(samples=1, batch=1)
    drifted = runs.outputs_per_sample(samples=1, batch=1, perturb=runs.nudge_scores(0.05))
    results = runs.write_run(tmp_path, {"torch": reference, "onnxrt": drifted})
    assert results.verdict.exit_code == ExitCode.ACCURACY_FAILED
    assert "max |score delta|" in results.verdict.summary


def test_reduced_precision_pairs_are_informational_unless_gated(tmp_path: Path) -> None:
    reference = runs.outputs_per_sample(samples=1, batch=1)
    outputs = {
        "torch": reference,
        "onnxrt": reference,
        "onnxrt-fp16": runs.outputs_per_sample(samples=1, batch=1, perturb=runs.shift_boxes(12.0)),
    }
    informational = runs.write_run(tmp_path / "default", outputs)
    fp16 = pair_of(informational, "onnxrt-fp16")
    assert fp16.precision == "fp16" and not fp16.gated and not fp16.passed
    detections = detections_of(informational)
    assert detections is not None and detections.passed and informational.verdict.passed

    gated = runs.write_run(
        tmp_path / "gated", outputs, runs.detector_recipe(gated_precisions=("fp32", "fp16"))
    )
    assert gated.verdict.exit_code == ExitCode.ACCURACY_FAILED
    assert "Torch vs ORT FP16 on image 0" in gated.verdict.summary


def test_batches_are_flattened_into_running_image_indices(tmp_path: Path) -> None:
    reference = runs.outputs_per_sample(samples=3, batch=2)
    shifted = runs.outputs_per_sample(samples=3, batch=2, perturb=runs.shift_boxes(12.0, images=[3]))
    results = runs.write_run(tmp_path, {"torch": reference, "onnxrt": shifted}, batch=2)

    detections = detections_of(results)
    assert detections is not None and detections.images == 6
    assert len(detections.runners["torch"]) == 6
    pair = pair_of(results, "onnxrt")
    assert [image.image for image in pair.images] == list(range(6))
    assert pair.failing_images == (3,)
    assert detections.images_file == DETECTION_IMAGES
    with np.load(tmp_path / DETECTION_IMAGES) as archive:
        assert sorted(archive.files) == [f"image_{i}" for i in range(6)]
    compare = results.stage("compare")
    assert compare is not None
    assert compare.artifacts["detection_images"].sha256 == sha256_file(tmp_path / DETECTION_IMAGES)


def test_outputs_are_read_one_sample_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = runs.outputs_per_sample(samples=5, batch=1)
    original = SampleFolder.__iter__
    alive_when_yielded: list[int] = []

    def watched(self: SampleFolder) -> Iterator[Tensors]:
        produced: list[list[weakref.ref[np.ndarray]]] = []
        for sample in original(self):
            gc.collect()
            # The caller may still hold the previous sample, and the first (the cross-match reads
            # it after the pass); nothing else read before.
            alive_when_yielded.append(sum(ref() is not None for refs in produced[1:-1] for ref in refs))
            produced.append([weakref.ref(array) for array in sample.values()])
            yield sample

    monkeypatch.setattr(SampleFolder, "__iter__", watched)
    results = runs.write_run(tmp_path, {"torch": reference, "onnxrt": reference})
    detections = detections_of(results)
    assert detections is not None and detections.images == 5
    # comparison and detections read both runners' folders, the detection images the inputs
    assert len(alive_when_yielded) >= 5 * 5
    assert alive_when_yielded == [0] * len(alive_when_yielded)


def test_a_runner_without_the_detection_output_fails_its_pairs(tmp_path: Path) -> None:
    reference = runs.outputs_per_sample(samples=1, batch=1)
    results = runs.write_run(tmp_path, {"torch": reference, "onnxrt": [{"something_else": reference[0]}]})
    detections = detections_of(results)
    assert detections is not None and not detections.passed
    image = detections.pairs[0].images[0]
    assert not image.passed and image.match is None and image.missing_from == ("onnxrt",)
    assert "onnxrt" in image.failures[0]
    missing = {(m.output, m.missing_from) for m in compare_of(results).missing}
    assert ("output0", "onnxrt") in missing
    assert results.verdict.exit_code == ExitCode.ACCURACY_FAILED


def test_a_missing_detection_output_is_named_in_the_failure(tmp_path: Path) -> None:
    reference = runs.outputs_per_sample(samples=1, batch=1)
    results = runs.write_run(tmp_path, {"torch": reference, "onnxrt": [{"something_else": reference[0]}]})
    detections = detections_of(results)
    assert detections is not None
    assert "output0" in detections.pairs[0].images[0].failures[0]


def test_recipes_without_a_detection_spec_get_none(tmp_path: Path) -> None:
    reference = runs.outputs_per_sample(samples=1, batch=1)
    recipe = dataclasses.replace(runs.detector_recipe(), detection=None)
    results = runs.write_run(tmp_path, {"torch": reference, "onnxrt": reference}, recipe)
    assert detections_of(results) is None
    assert results.verdict.summary.startswith("all 1 comparisons within tolerance")
    assert "detections" not in results.verdict.summary
    assert not (tmp_path / DETECTION_IMAGES).exists()


def test_a_spec_reading_an_unknown_output_is_a_usage_error(tmp_path: Path) -> None:
    reference = runs.outputs_per_sample(samples=1, batch=1)
    recipe = runs.detector_recipe()
    assert recipe.detection is not None
    recipe = dataclasses.replace(recipe, detection=dataclasses.replace(recipe.detection, output="boxes"))
    with pytest.raises(UsageError, match="'boxes'.*output0"):
        runs.write_run(tmp_path, {"torch": reference, "onnxrt": reference}, recipe)


# --- the images the report draws on --------------------------------------------------------------


def test_detection_images_are_the_inputs_as_uint8_and_rewrite_identically(tmp_path: Path) -> None:
    feeds = runs.input_feeds(samples=2, batch=2)
    target = tmp_path / DETECTION_IMAGES
    assert write_detection_images(feeds, runs.INPUT, target) == 4
    first = target.read_bytes()
    with np.load(target) as archive:
        image = archive["image_3"]
    assert image.dtype == np.uint8 and image.shape == (runs.IMAGE_SIZE, runs.IMAGE_SIZE, 3)
    expected = np.rint(feeds[1][runs.INPUT][1].transpose(1, 2, 0) * 255)
    assert np.abs(image.astype(np.int16) - expected).max() == 0
    write_detection_images(feeds, runs.INPUT, target)
    assert target.read_bytes() == first, "same images, same bytes: the artifact hash must not change"


def test_detection_images_come_from_the_sample_files_and_a_lost_one_is_named(tmp_path: Path) -> None:
    reference = runs.outputs_per_sample(samples=2, batch=1)
    results = runs.write_run(tmp_path, {"torch": reference, "onnxrt": reference})
    detections = detections_of(results)
    assert detections is not None and detections.images_file == DETECTION_IMAGES
    with np.load(tmp_path / DETECTION_IMAGES) as archive:
        drawn = archive["image_1"]
    feed = runs.input_feeds(samples=2, batch=1)[1][runs.INPUT][0]
    assert np.array_equal(drawn, np.rint(feed.transpose(1, 2, 0) * 255).astype(np.uint8))

    lost = tmp_path / "samples" / "samples" / "0000000001.npz"
    lost.unlink()
    from trt_harness.harness.pipeline import rejudge
    from trt_harness.models.results.recipe import ToleranceOverrides

    with pytest.raises(HarnessError, match=r"0000000001\.npz is missing.*harness convert"):
        rejudge(tmp_path, ToleranceOverrides())


# --- post-processing details ------------------------------------------------------------------------


def test_min_wh_drops_degenerate_boxes_in_both_layouts() -> None:
    rows = runs.image_rows(0)[None]
    rows[0, 0, 3] = 0.0005  # a box a fraction of a pixel high, as seeded heads emit
    spec = DetectionSpec(output="output0", layout="yolov5")
    assert len(detect(spec, rows)[0]) == 3
    assert len(detect(DetectionSpec(output="output0", layout="yolov5", min_wh=2.0), rows)[0]) == 2

    anchor_free = np.concatenate([rows[..., :4], rows[..., 5:] * rows[..., 4:5]], axis=-1).transpose(0, 2, 1)
    assert len(detect(DetectionSpec(output="output0", layout="anchor_free"), anchor_free)[0]) == 3
    assert len(detect(DetectionSpec(output="output0", layout="anchor_free", min_wh=2.0), anchor_free)[0]) == 2


def test_min_wh_keeps_non_finite_boxes_so_the_comparison_reports_them() -> None:
    rows = runs.image_rows(0)[None]
    rows[0, 0, 2] = np.nan
    found = detect(DetectionSpec(output="output0", layout="yolov5", min_wh=2.0), rows)[0]
    assert len(found) == 3 and np.isnan(found.boxes).any()


def test_detection_spec_json_round_trips_and_checks_its_values() -> None:
    spec = DetectionSpec(
        output="out",
        layout="anchor_free",
        conf_thres=0.1,
        class_names=("a", "b"),
        tolerance=DetectionTolerance(0.9, 0.8, 0.02),
        gated_precisions=("fp32", "fp16"),
        min_wh=1.5,
    )
    assert from_json(DetectionSpec, to_json(spec)) == spec
    with pytest.raises(UsageError, match="layout 'yolov9'"):
        DetectionSpec(output="out", layout="yolov9")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="gated_precisions"):
        DetectionSpec(output="out", layout="yolov5", gated_precisions=("fp8",))
    with pytest.raises(SchemaError, match="lacks the required key 'layout'"):
        from_json(DetectionSpec, {"output": "out"})
    with pytest.raises(SchemaError, match="layout"):
        from_json(DetectionSpec, {**to_json(spec), "layout": "yolov9"})
    with pytest.raises(SchemaError, match="gated_precisions"):
        from_json(DetectionSpec, {**to_json(spec), "gated_precisions": ["fp8"]})


@pytest.mark.parametrize(
    ("name", "layout", "classes"), [("yolov5", "yolov5", 80), ("yolov8", "anchor_free", 12)]
)
def test_detector_recipes_carry_a_spec_for_their_output(name: str, layout: str, classes: int) -> None:
    recipe = get_recipe(name, image_size=320)
    spec = recipe.detection
    assert spec is not None and spec.layout == layout and spec.output in recipe.output_names
    assert len(spec.class_names) == classes == len(set(spec.class_names))
    assert spec.gated_precisions == ("fp32",)
    recorded = to_json(RecipeRecord.of(recipe, None))["detection"]
    assert recorded == to_json(spec) and from_json(DetectionSpec, recorded) == spec


# --- the gate, from typed ledger entries alone (as in test_verdict.py) ------------------------------


def gate_stages(
    detections: DetectionsReport | None, comparisons_pass: bool = True, crossmatch: tuple[str, ...] = ()
) -> tuple[StageRecord, ...]:
    compare = build.compare_stage(
        [build.comparison("output0", comparisons_pass)],
        crossmatch=[build.crossmatch(*crossmatch)] if crossmatch else (),
        detections=detections,
    )
    return (build.run_stage(("torch", "onnxrt", "onnxrt-fp16")), compare)


def test_gate_names_the_pair_image_and_criterion() -> None:
    pair = build.detection_pair([build.image(0, 1.0), build.image(1, 1.0), build.image(2, 0.4)])
    verdict = verdict_for(gate_stages(build.detections(pair)))
    assert verdict.exit_code == ExitCode.ACCURACY_FAILED and verdict.status == "ACCURACY_FAILED"
    assert verdict.summary.startswith("detections disagree: Torch vs ORT on image 2: matched")
    assert "95%" in verdict.summary and "mean IoU" not in verdict.summary
    assert "image 0" not in verdict.summary and "image 1" not in verdict.summary


def test_gate_lists_every_failing_criterion_and_counts_the_rest() -> None:
    images = [build.image(i, 0.5, mean_iou=0.7, score=0.2) for i in range(5)]
    summary = verdict_for(gate_stages(build.detections(build.detection_pair(images)))).summary
    image_0 = summary.split("on image 0: ")[1].split("on image 1")[0]
    for criterion in ("matched", "mean IoU", "0.7", "max |score delta|", "0.2", "0.01"):
        assert criterion in image_0
    assert "on image 2" in summary and "on image 3" not in summary
    assert summary.endswith("and 2 more")


def test_gate_summary_is_brief() -> None:
    pair = build.detection_pair([build.image(0, 1.0), build.image(1, 1.0), build.image(2, 0.4)])
    verdict = verdict_for(gate_stages(build.detections(pair)))
    assert verdict.summary == "detections disagree: Torch vs ORT on image 2: matched 40% < 95%"
    images = [build.image(i, 0.5, mean_iou=0.7, score=0.2) for i in range(5)]
    summary = verdict_for(gate_stages(build.detections(build.detection_pair(images)))).summary
    assert "on image 0: matched 50% < 95%, mean IoU 0.700 < 0.95, max |score delta| 0.2 > 0.01" in summary


def test_tensor_and_detection_failures_are_both_reported() -> None:
    pair = build.detection_pair([build.image(0, 0.4)])
    verdict = verdict_for(gate_stages(build.detections(pair), comparisons_pass=False))
    assert verdict.exit_code == ExitCode.ACCURACY_FAILED
    assert "1 comparison(s) out of tolerance: output0 (Torch vs ORT on the samples)" in verdict.summary
    assert "detections disagree: Torch vs ORT on image 0" in verdict.summary


def test_tensor_failure_alone_still_fails_when_detections_agree() -> None:
    pair = build.detection_pair([build.image(0, 1.0)])
    verdict = verdict_for(gate_stages(build.detections(pair), comparisons_pass=False))
    assert verdict.exit_code == ExitCode.ACCURACY_FAILED
    assert "detections" not in verdict.summary


def test_informational_pairs_never_fail_the_verdict() -> None:
    gated = build.detection_pair([build.image(0, 1.0)])
    informational = build.detection_pair([build.image(0, 0.1)], gated=False, cand="onnxrt-fp16")
    detections = build.detections(gated, informational)
    assert detections.passed and not informational.passed
    verdict = verdict_for(gate_stages(detections))
    assert verdict.passed
    assert "detections agree on 1 image(s) for 1 gated pair(s)" in verdict.summary


def test_stage_failure_and_ordering_mismatch_keep_priority_over_detections() -> None:
    failing = build.detections(build.detection_pair([build.image(0, 0.0)]))
    mismatch = "ordering mismatch: ORT 'a' matches Torch 'b'"
    verdict = verdict_for(gate_stages(failing, crossmatch=(mismatch,)))
    assert verdict.exit_code == ExitCode.ORDERING_MISMATCH and verdict.summary == mismatch
    stages = (StageRecord("build", "failed", reason="TensorRT refused"), gate_stages(failing)[1])
    verdict = verdict_for(stages)
    assert verdict.exit_code == ExitCode.STAGE_FAILED and "TensorRT refused" in verdict.summary
