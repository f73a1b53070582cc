"""The post-processed layout end to end (issue 16.3): a saved run folder whose runners gave a list of
dicts per sample (`0.boxes`, `0.scores`, `0.labels`, ...), judged by the real compare stage, verdict
and report; detections compared as sets."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from trt_harness.models.core.errors import ExitCode
from trt_harness.models.detection import DetectionTolerance
from trt_harness.models.recipe import DetectionSpec, Recipe, Tolerance
from trt_harness.models.results.document import Results
from trt_harness.models.results.stages import CompareDetails
from trt_harness.reports.render import write_reports

from tests.harness import detection_runs as runs
from tests.reports.page import parse

IMAGES_PER_SAMPLE = 2
SAMPLES = 2
TOLERANCE = DetectionTolerance(min_matched_fraction=0.95, min_mean_iou=0.9, max_score_delta=0.01)


def image_detections(index: int, count: int = 12, tied: bool = False) -> dict[str, np.ndarray]:
    """One image's boxes (in the 96 px input), scores and labels, best first as a model returns them."""
    rng = np.random.default_rng(100 + index)
    xy = rng.uniform(0, runs.IMAGE_SIZE - 30, (count, 2))
    wh = rng.uniform(12, 28, (count, 2))
    scores = np.sort(rng.uniform(0.4, 0.99, count))[::-1]
    if tied:  # a few confident boxes, then a crowd of equal scores
        scores = np.where(np.arange(count) < 6, 0.9, 0.5)
    return {
        "boxes": np.hstack([xy, xy + wh]).astype(np.float32),
        "scores": scores.astype(np.float32),
        "labels": rng.integers(0, len(runs.CLASS_NAMES), count).astype(np.int64),
    }


def sample_outputs(per_image: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Per sample, the flattened list of dicts: `<i>.boxes`, `<i>.scores`, `<i>.labels`."""
    samples = []
    for s in range(SAMPLES):
        outputs = {}
        for i in range(IMAGES_PER_SAMPLE):
            for key, value in per_image[s * IMAGES_PER_SAMPLE + i].items():
                outputs[f"{i}.{key}"] = value
        samples.append(outputs)
    return samples


def recipe(**spec) -> Recipe:
    names = tuple(f"{i}.{key}" for i in range(IMAGES_PER_SAMPLE) for key in ("boxes", "scores", "labels"))
    detection = DetectionSpec(
        output="boxes",
        layout="postprocessed",
        conf_thres=spec.pop("conf_thres", 0.05),
        class_names=runs.CLASS_NAMES,
        tolerance=TOLERANCE,
        **spec,
    )
    return dataclasses.replace(runs.detector_recipe(), output_names=names, detection=detection)


def reordered(dets: dict[str, np.ndarray], seed: int, noise_px: float = 1e-4) -> dict[str, np.ndarray]:
    """The same detections in another order (as another backend's NMS may give equal scores), float noise."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(dets["scores"]))
    out = {key: value[order].copy() for key, value in dets.items()}
    out["boxes"] += rng.normal(0, noise_px, out["boxes"].shape).astype(np.float32)
    return out


def judged(tmp_path: Path, ref: list[dict], cand: list[dict], **spec) -> Results:
    results = runs.write_run(
        tmp_path,
        {"torch": sample_outputs(ref), "onnxrt": sample_outputs(cand)},
        recipe(**spec),
        batch=IMAGES_PER_SAMPLE,
    )
    write_reports(results, tmp_path)
    return results


def detections_report(results: Results):
    details = results.details(CompareDetails)
    assert details is not None and details.detections is not None, results.stage("compare")
    return details.detections


def test_the_same_boxes_in_another_order_pass(tmp_path: Path) -> None:
    images = SAMPLES * IMAGES_PER_SAMPLE
    ref = [image_detections(i) for i in range(images)]
    cand = [reordered(d, seed=i) for i, d in enumerate(ref)]
    results = judged(tmp_path, ref, cand)
    assert results.verdict.exit_code == ExitCode.PASSED, results.verdict
    detections = detections_report(results)
    assert detections.images == images
    (pair,) = detections.pairs
    for image in pair.images:
        assert image.match is not None and image.match.matched_fraction == 1.0
        assert image.match.max_box_delta is not None and image.match.max_box_delta < 1e-3


def test_set_compared_outputs_are_not_compared_by_position(tmp_path: Path) -> None:
    """Under a strict tensor tolerance, another order would fail by tens of pixels position by position."""
    ref = [image_detections(i) for i in range(SAMPLES * IMAGES_PER_SAMPLE)]
    cand = [reordered(d, seed=i) for i, d in enumerate(ref)]
    strict = dataclasses.replace(recipe(), default_tolerance=Tolerance(atol=1e-3, rtol=0.0))
    outputs = {"torch": sample_outputs(ref), "onnxrt": sample_outputs(cand)}
    results = runs.write_run(tmp_path, outputs, strict, batch=IMAGES_PER_SAMPLE)
    assert results.verdict.exit_code == ExitCode.PASSED, results.verdict
    details = results.details(CompareDetails)
    assert details is not None and not details.comparisons
    assert results.verdict.summary == "detections agree on 4 image(s) for 1 gated pair(s)"


def test_no_box_on_either_side_compares_nothing(tmp_path: Path) -> None:
    empty = [{key: value[:0] for key, value in image_detections(i).items()} for i in range(4)]
    results = judged(tmp_path, empty, empty)
    assert results.verdict.exit_code == ExitCode.ACCURACY_FAILED, results.verdict
    assert results.verdict.summary.startswith("nothing was compared")


def test_a_shifted_box_fails_naming_the_pixels(tmp_path: Path) -> None:
    ref = [image_detections(i) for i in range(SAMPLES * IMAGES_PER_SAMPLE)]
    cand = [reordered(d, seed=i) for i, d in enumerate(ref)]
    cand[3]["boxes"][5, [0, 2]] += 4.0  # one box of image 3, 4 px right: IoU still ~0.8
    results = judged(tmp_path, ref, cand)
    assert results.verdict.exit_code == ExitCode.ACCURACY_FAILED, results.verdict
    assert "on image 3: box moved 4 px > 1 px" in results.verdict.summary
    (pair,) = detections_report(results).pairs
    assert pair.failing_images == (3,)


def test_a_missing_box_is_listed_and_drawn_without_a_match(tmp_path: Path) -> None:
    ref = [image_detections(i) for i in range(SAMPLES * IMAGES_PER_SAMPLE)]
    cand = [reordered(d, seed=i) for i, d in enumerate(ref)]
    confident = int(np.argmax(cand[1]["scores"]))
    cand[1] = {key: np.delete(value, [confident], axis=0) for key, value in cand[1].items()}
    results = judged(tmp_path, ref, cand)
    assert results.verdict.exit_code == ExitCode.ACCURACY_FAILED, results.verdict
    assert "on image 1: matched 91.7% < 95% (Torch 12 boxes, ORT 11)" in results.verdict.summary
    (pair,) = detections_report(results).pairs
    match = pair.images[1].match
    assert match is not None and len(match.only_ref) == 1 and len(match.only_cand) == 0
    tree = parse((tmp_path / "report.html").read_text())
    article = tree.by_id("detections-image-1")
    assert article is not None and "fail" in article.classes
    captions = [" ".join(f.text.split()) for f in article.find_all("figcaption")]
    assert captions[0].startswith("Torch") and "11 matched with ORT" in captions[0]
    assert "1 without a match" in captions[0] and "0 without a match" in captions[1]
    assert "NO MATCH" in tree.by_id("detections").text


def test_boxes_tied_at_max_det_are_interchangeable_but_a_shift_among_them_fails(tmp_path: Path) -> None:
    """SSDlite's case: scores tied at the cap, the model keeps max_det boxes, each backend other tied ones.
    (Boxes exactly tied at the cutoff are interchangeable, so a box that moved is caught among the others.)"""
    max_det = 20
    ref, cand = [], []
    for i in range(SAMPLES * IMAGES_PER_SAMPLE):
        tied = image_detections(i, count=26, tied=True)
        rng = np.random.default_rng(i)
        ref.append({key: value[:max_det] for key, value in tied.items()})
        kept = rng.permutation(np.concatenate([np.arange(6), 6 + rng.permutation(20)[: max_det - 6]]))
        cand.append({key: value[kept] for key, value in tied.items()})
    results = judged(tmp_path / "tied", ref, cand, max_det=max_det)
    assert results.verdict.exit_code == ExitCode.PASSED, results.verdict
    (pair,) = detections_report(results).pairs
    assert sum(len(image.match.at_cutoff_ref) for image in pair.images if image.match) > 0
    assert "at cutoff ref / cand" in (tmp_path / "tied" / "report.html").read_text()

    confident = int(np.flatnonzero(cand[0]["scores"] == np.float32(0.9))[0])
    cand[0]["boxes"][confident, [1, 3]] += 3.0
    results = judged(tmp_path / "shifted", ref, cand, max_det=max_det)
    assert results.verdict.exit_code == ExitCode.ACCURACY_FAILED, results.verdict


@pytest.mark.parametrize("padded", [False, True], ids=["list-of-dicts", "padded-batch"])
def test_masks_are_compared_but_not_kept_in_results(tmp_path: Path, padded: bool) -> None:
    ref = [image_detections(i, count=4) for i in range(SAMPLES * IMAGES_PER_SAMPLE)]
    for dets in ref:
        masks = np.zeros((4, 1, runs.IMAGE_SIZE, runs.IMAGE_SIZE), np.float32)
        for k, (x1, y1, x2, y2) in enumerate(dets["boxes"].astype(int)):
            masks[k, 0, y1:y2, x1:x2] = 0.9
        dets["masks"] = masks
    cand = [{key: value.copy() for key, value in d.items()} for d in ref]
    cand[2]["masks"][:, :, :, :] = np.roll(cand[2]["masks"], 10, axis=3)
    if padded:
        outputs = {}
        for name, data in (("torch", ref), ("onnxrt", cand)):
            per_sample = []
            for s in range(SAMPLES):
                batch = data[s * IMAGES_PER_SAMPLE : (s + 1) * IMAGES_PER_SAMPLE]
                stacked = {key: np.stack([d[key] for d in batch]) for key in batch[0]}
                pad = {key: np.zeros_like(value[:, :2]) for key, value in stacked.items()}
                per_sample.append(
                    {key: np.concatenate([stacked[key], pad[key]], axis=1) for key in stacked}
                    | {"num": np.full(IMAGES_PER_SAMPLE, 4)}
                )
            outputs[name] = per_sample
        spec = DetectionSpec(
            output="boxes",
            layout="postprocessed",
            conf_thres=0.05,
            masks_output="masks",
            count_output="num",
            tolerance=TOLERANCE,
        )
        results = runs.write_run(
            tmp_path,
            outputs,
            dataclasses.replace(runs.detector_recipe(), output_names=(), detection=spec),
            batch=IMAGES_PER_SAMPLE,
        )
    else:
        results = judged(tmp_path, ref, cand, masks_output="masks")
    assert results.verdict.exit_code == ExitCode.ACCURACY_FAILED, results.verdict
    assert "on image 2: mask IoU" in results.verdict.summary
    (pair,) = detections_report(results).pairs
    assert pair.failing_images == (2,)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert '"masks": null' in json.dumps(saved) and '"masks": [' not in json.dumps(saved)
