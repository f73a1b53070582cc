from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import harness.comparing
from harness.detections import DETECTION_IMAGES, detect, write_detection_images
from models.core.errors import ExitCode, UsageError
from harness.pipeline import SAMPLES, artifact_key, outputs_file, recipe_to_json
from harness.verdict import verdict_for
from models.detection import DetectionTolerance
from models.recipe import DetectionSpec, get_recipe
from tests.harness import detection_runs as runs


def detections_of(results: dict[str, Any]) -> dict[str, Any]:
    compare = next(s for s in results["stages"] if s["name"] == "compare")
    return compare["details"]["detections"]


def pair_of(results: dict[str, Any], cand: str) -> dict[str, Any]:
    return next(p for p in detections_of(results)["pairs"] if p["cand_backend"] == cand)


# --- end to end: saved outputs -> compare_run_outputs -> verdict_for --------------------------------


def test_boxes_shifted_by_12px_fail_the_gate_although_tensors_pass(tmp_path: Path) -> None:
    reference = runs.outputs_per_sample(samples=2, batch=1)
    shifted = runs.outputs_per_sample(samples=2, batch=1, perturb=runs.shift_boxes(12.0, images=[1]))
    results = runs.write_run(tmp_path, {"torch": reference, "onnxrt": shifted})

    compare = next(s for s in results["stages"] if s["name"] == "compare")["details"]
    assert compare["passed"], "the loose tensor tolerance passes; only detections can catch the shift"
    verdict = results["verdict"]
    assert verdict["exit_code"] == ExitCode.ACCURACY_FAILED and not verdict["passed"]
    assert "detections disagree: Torch vs ORT on image 1:" in verdict["summary"]
    assert "image 0" not in verdict["summary"]
    pair = pair_of(results, "onnxrt")
    assert pair["gated"] and not pair["passed"] and pair["failing_images"] == [1]
    assert not detections_of(results)["passed"]


def test_a_tiny_perturbation_passes(tmp_path: Path) -> None:
    reference = runs.outputs_per_sample(samples=2, batch=1)
    close = runs.outputs_per_sample(samples=2, batch=1, perturb=runs.shift_boxes(0.05))
    close = [out + np.float32(1e-5) * (np.arange(out.size).reshape(out.shape) % 3) for out in close]
    results = runs.write_run(tmp_path, {"torch": reference, "onnxrt": close})

    assert results["verdict"]["passed"], results["verdict"]["summary"]
    assert "detections agree on 2 image(s)" in results["verdict"]["summary"]
    image = pair_of(results, "onnxrt")["images"][0]
    assert image["matched_fraction"] == 1.0 and image["mean_iou"] > 0.99 and image["num_ref"] == 3


def test_score_drift_beyond_the_tolerance_fails(tmp_path: Path) -> None:
    reference = runs.outputs_per_sample(samples=1, batch=1)
    drifted = runs.outputs_per_sample(samples=1, batch=1, perturb=runs.nudge_scores(0.05))
    results = runs.write_run(tmp_path, {"torch": reference, "onnxrt": drifted})
    assert results["verdict"]["exit_code"] == ExitCode.ACCURACY_FAILED
    assert "max |score delta|" in results["verdict"]["summary"]


def test_reduced_precision_pairs_are_informational_unless_gated(tmp_path: Path) -> None:
    reference = runs.outputs_per_sample(samples=1, batch=1)
    outputs = {
        "torch": reference,
        "onnxrt": reference,
        "onnxrt-fp16": runs.outputs_per_sample(samples=1, batch=1, perturb=runs.shift_boxes(12.0)),
    }
    informational = runs.write_run(tmp_path / "default", outputs)
    fp16 = pair_of(informational, "onnxrt-fp16")
    assert fp16["precision"] == "fp16" and not fp16["gated"] and not fp16["passed"]
    assert detections_of(informational)["passed"] and informational["verdict"]["passed"]

    gated = runs.write_run(
        tmp_path / "gated", outputs, runs.detector_recipe(gated_precisions=("fp32", "fp16"))
    )
    assert gated["verdict"]["exit_code"] == ExitCode.ACCURACY_FAILED
    assert "Torch vs ORT FP16 on image 0" in gated["verdict"]["summary"]


def test_batches_are_flattened_into_running_image_indices(tmp_path: Path) -> None:
    reference = runs.outputs_per_sample(samples=3, batch=2)
    shifted = runs.outputs_per_sample(samples=3, batch=2, perturb=runs.shift_boxes(12.0, images=[3]))
    results = runs.write_run(tmp_path, {"torch": reference, "onnxrt": shifted}, batch=2)

    detections = detections_of(results)
    assert detections["images"] == 6
    assert len(detections["runners"]["torch"]) == 6
    pair = pair_of(results, "onnxrt")
    assert [image["image"] for image in pair["images"]] == list(range(6))
    assert pair["failing_images"] == [3]
    with np.load(tmp_path / DETECTION_IMAGES) as archive:
        assert sorted(archive.files) == [f"image_{i}" for i in range(6)]


def test_outputs_are_read_one_sample_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = runs.outputs_per_sample(samples=5, batch=1)
    runs.write_run(tmp_path, {"torch": reference, "onnxrt": reference})  # writes the files
    original = harness.comparing.iterate_saved_outputs
    alive_when_yielded: list[int] = []

    def watched(paths: Any) -> Iterator[dict[str, dict[str, Any]]]:
        # Polygraphy keeps a single-file run in memory; fresh copies show what the consumer keeps.
        produced: list[weakref.ref[np.ndarray]] = []
        for sample in original(paths):
            gc.collect()
            # The caller's loop variable may still hold the previous sample, nothing older.
            alive_when_yielded.append(sum(ref() is not None for ref in produced[:-2]))
            fresh = {runner: {k: np.array(a) for k, a in out.items()} for runner, out in sample.items()}
            produced += [weakref.ref(a) for outputs in fresh.values() for a in outputs.values()]
            yield fresh

    monkeypatch.setattr(harness.comparing, "iterate_saved_outputs", watched)
    from harness.detections import compare_run_detections

    paths = {artifact_key(r, SAMPLES): tmp_path / outputs_file(r, SAMPLES) for r in ("torch", "onnxrt")}
    recipe_json = recipe_to_json(runs.detector_recipe(), None)
    result = compare_run_detections(recipe_json, runs.run_details(["torch", "onnxrt"]), paths)
    assert result is not None and result["images"] == 5
    assert alive_when_yielded == [0] * 5


def test_a_runner_without_the_detection_output_fails_its_pairs(tmp_path: Path) -> None:
    from polygraphy.comparator.struct import IterationResult, RunResults

    reference = runs.outputs_per_sample(samples=1, batch=1)
    runs.write_run(tmp_path, {"torch": reference, "onnxrt": reference})
    other = RunResults()
    other.append(("onnxrt", [IterationResult({"something_else": reference[0]}, runner_name="onnxrt")]))
    other.save(str(tmp_path / outputs_file("onnxrt", SAMPLES)))
    from harness.detections import compare_run_detections

    paths = {artifact_key(r, SAMPLES): tmp_path / outputs_file(r, SAMPLES) for r in ("torch", "onnxrt")}
    result = compare_run_detections(
        recipe_to_json(runs.detector_recipe(), None), runs.run_details(["torch", "onnxrt"]), paths
    )
    assert result is not None
    image = result["pairs"][0]["images"][0]
    assert not image["passed"] and image["missing_from"] == ["onnxrt"]
    assert "output0" in image["failures"][0] and not result["passed"]


def test_recipes_without_a_detection_spec_get_none(tmp_path: Path) -> None:
    reference = runs.outputs_per_sample(samples=1, batch=1)
    import dataclasses

    recipe = dataclasses.replace(runs.detector_recipe(), detection=None)
    results = runs.write_run(tmp_path, {"torch": reference, "onnxrt": reference}, recipe)
    assert detections_of(results) is None
    assert results["verdict"]["summary"] == "all 1 comparisons within tolerance"
    assert not (tmp_path / DETECTION_IMAGES).exists()


def test_a_spec_reading_an_unknown_output_is_a_usage_error(tmp_path: Path) -> None:
    reference = runs.outputs_per_sample(samples=1, batch=1)
    import dataclasses

    recipe = runs.detector_recipe()
    recipe = dataclasses.replace(recipe, detection=dataclasses.replace(recipe.detection, output="boxes"))
    with pytest.raises(UsageError, match="'boxes'.*output0"):
        runs.write_run(tmp_path, {"torch": reference, "onnxrt": reference}, recipe)


# --- the images the report draws on --------------------------------------------------------------


def test_detection_images_are_the_inputs_as_uint8_and_rewrite_identically(tmp_path: Path) -> None:
    from polygraphy.json import save_json

    feeds = runs.input_feeds(samples=2, batch=2)
    save_json(feeds, str(tmp_path / "inputs.json"))
    target = tmp_path / DETECTION_IMAGES
    assert write_detection_images(tmp_path / "inputs.json", runs.INPUT, target) == 4
    first = target.read_bytes()
    with np.load(target) as archive:
        image = archive["image_3"]
    assert image.dtype == np.uint8 and image.shape == (runs.IMAGE_SIZE, runs.IMAGE_SIZE, 3)
    expected = np.rint(feeds[1][runs.INPUT][1].transpose(1, 2, 0) * 255)
    assert np.abs(image.astype(np.int16) - expected).max() == 0
    write_detection_images(tmp_path / "inputs.json", runs.INPUT, target)
    assert target.read_bytes() == first, "same images, same bytes: the artifact hash must not change"


def test_without_inputs_json_no_images_are_named(tmp_path: Path) -> None:
    reference = runs.outputs_per_sample(samples=1, batch=1)
    results = runs.write_run(tmp_path, {"torch": reference, "onnxrt": reference}, with_inputs=False)
    assert detections_of(results)["images_file"] is None


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
    assert DetectionSpec.from_json(spec.to_json()) == spec
    with pytest.raises(UsageError, match="layout 'yolov9'"):
        DetectionSpec(output="out", layout="yolov9")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="gated_precisions"):
        DetectionSpec(output="out", layout="yolov5", gated_precisions=("fp8",))
    with pytest.raises(UsageError, match="lacks"):
        DetectionSpec.from_json({"output": "out"})


@pytest.mark.parametrize(
    ("name", "layout", "classes"), [("yolov5", "yolov5", 80), ("yolov8", "anchor_free", 12)]
)
def test_detector_recipes_carry_a_spec_for_their_output(name: str, layout: str, classes: int) -> None:
    recipe = get_recipe(name, image_size=320)
    spec = recipe.detection
    assert spec is not None and spec.layout == layout and spec.output in recipe.output_names
    assert len(spec.class_names) == classes == len(set(spec.class_names))
    assert spec.gated_precisions == ("fp32",)
    assert recipe_to_json(recipe, None)["detection"] == spec.to_json()


# --- the gate, from results alone (tests/harness/test_verdict.py style) -----------------------------


def results_with(
    detections: dict[str, Any] | None, comparisons_pass: bool = True, stages=None, crossmatch=()
):
    compare = {
        "name": "compare",
        "status": "ok",
        "reason": None,
        "details": {
            "comparisons": [
                {
                    "output": "output0",
                    "passed": comparisons_pass,
                    "ref_backend": "torch",
                    "cand_backend": "onnxrt",
                }
            ],
            "crossmatch": list(crossmatch),
            "missing": [],
            "detections": detections,
        },
    }
    run = {"name": "run", "status": "ok", "reason": None, "details": runs.run_details(["torch", "onnxrt"])}
    return {"stages": stages or [run, compare]}


def image_entry(
    index: int, matched: float, mean_iou: float | None = 0.99, score: float | None = 0.001
) -> dict:
    tol = TOLERANCE_JSON
    passed = matched >= tol["min_matched_fraction"] and (mean_iou is None or mean_iou >= tol["min_mean_iou"])
    passed = passed and (score is None or score <= tol["max_score_delta"])
    return {
        "image": index,
        "passed": passed,
        "tolerance": tol,
        "matched_fraction": matched,
        "mean_iou": mean_iou,
        "max_score_delta": score,
    }


TOLERANCE_JSON = runs.TOLERANCE.to_json()


def detection_pair(images: list[dict], gated: bool = True, cand: str = "onnxrt") -> dict[str, Any]:
    return {
        "ref_backend": "torch",
        "cand_backend": cand,
        "precision": "fp32" if gated else "fp16",
        "gated": gated,
        "passed": all(i["passed"] for i in images),
        "failing_images": [i["image"] for i in images if not i["passed"]],
        "images": images,
    }


def detections_json(*pairs: dict[str, Any]) -> dict[str, Any]:
    return {
        "images": len(pairs[0]["images"]),
        "pairs": list(pairs),
        "passed": all(p["passed"] for p in pairs if p["gated"]),
    }


def test_gate_names_the_pair_image_and_criterion() -> None:
    pair = detection_pair([image_entry(0, 1.0), image_entry(1, 1.0), image_entry(2, 0.4)])
    verdict = verdict_for(results_with(detections_json(pair)))
    assert verdict["exit_code"] == ExitCode.ACCURACY_FAILED
    assert verdict["summary"] == "detections disagree: Torch vs ORT on image 2: matched 40% < 95%"


def test_gate_lists_every_failing_criterion_and_counts_the_rest() -> None:
    images = [image_entry(i, 0.5, mean_iou=0.7, score=0.2) for i in range(5)]
    summary = verdict_for(results_with(detections_json(detection_pair(images))))["summary"]
    assert "on image 0: matched 50% < 95%, mean IoU 0.700 < 0.95, max |score delta| 0.2 > 0.01" in summary
    assert summary.endswith("and 2 more")


def test_tensor_and_detection_failures_are_both_reported() -> None:
    pair = detection_pair([image_entry(0, 0.4)])
    verdict = verdict_for(results_with(detections_json(pair), comparisons_pass=False))
    assert verdict["exit_code"] == ExitCode.ACCURACY_FAILED
    assert "1 comparison(s) out of tolerance" in verdict["summary"]
    assert "detections disagree: Torch vs ORT on image 0" in verdict["summary"]


def test_tensor_failure_alone_still_fails_when_detections_agree() -> None:
    pair = detection_pair([image_entry(0, 1.0)])
    verdict = verdict_for(results_with(detections_json(pair), comparisons_pass=False))
    assert verdict["exit_code"] == ExitCode.ACCURACY_FAILED
    assert "detections" not in verdict["summary"]


def test_informational_pairs_never_fail_the_verdict() -> None:
    gated = detection_pair([image_entry(0, 1.0)])
    informational = detection_pair([image_entry(0, 0.1)], gated=False, cand="onnxrt-fp16")
    verdict = verdict_for(results_with(detections_json(gated, informational)))
    assert verdict["passed"]
    assert "detections agree on 1 image(s) for 1 gated pair(s)" in verdict["summary"]


def test_stage_failure_and_ordering_mismatch_keep_priority_over_detections() -> None:
    failing = detections_json(detection_pair([image_entry(0, 0.0)]))
    mismatch = "ordering mismatch: ORT 'a' matches Torch 'b'"
    verdict = verdict_for(results_with(failing, crossmatch=[{"mismatches": [mismatch]}]))
    assert verdict["exit_code"] == ExitCode.ORDERING_MISMATCH and verdict["summary"] == mismatch
    stages = [
        {"name": "build", "status": "failed", "reason": "TensorRT refused", "details": {}},
        results_with(failing)["stages"][1],
    ]
    verdict = verdict_for(results_with(failing, stages=stages))
    assert verdict["exit_code"] == ExitCode.STAGE_FAILED
