"""Detections compared as sets, with a pixel tolerance, cutoffs and tie-order invariance (issue 16.3, 16.4)."""

from __future__ import annotations

import numpy as np
import pytest
from trt_harness.harness.detections import detect, detect_outputs
from trt_harness.models.detection import (
    Cutoffs,
    Detections,
    DetectionTolerance,
    compare_detections,
    nms,
)
from trt_harness.models.recipe import DetectionSpec

TOL = DetectionTolerance(min_matched_fraction=0.95, min_mean_iou=0.9, max_score_delta=0.01)
ULP_BELOW_ONE = np.float32(1) - np.float32(2**-24)  # 0.99999994: a saturated score after float noise


def random_detections(rng: np.random.Generator, count: int, classes: int = 3) -> Detections:
    xy = rng.uniform(0, 600, (count, 2))
    wh = rng.uniform(20, 80, (count, 2))
    return Detections(np.hstack([xy, xy + wh]), rng.uniform(0.3, 1.0, count), rng.integers(0, classes, count))


def noisy(dets: Detections, rng: np.random.Generator, px: float = 1e-4) -> Detections:
    return Detections(dets.boxes + rng.normal(0, px, dets.boxes.shape), dets.scores, dets.classes)


# --- sets, not positions ---------------------------------------------------------------------------


def test_the_same_boxes_in_another_order_pass_as_sets() -> None:
    rng = np.random.default_rng(0)
    ref = random_detections(rng, 40)
    cand = noisy(ref.take(rng.permutation(40)), rng)
    match = compare_detections(ref, cand, TOL, cutoffs=Cutoffs(0.25, 300))
    assert match, match.failures
    assert match.matched_fraction == 1.0 and len(match.pairs) == 40
    assert match.max_box_delta is not None and match.max_box_delta < 1e-3


@pytest.mark.parametrize("shift", [2.0, 6.0])
def test_a_box_shifted_by_pixels_fails_although_its_iou_is_high(shift: float) -> None:
    rng = np.random.default_rng(1)
    ref = random_detections(rng, 20)
    boxes = ref.boxes.copy()
    boxes[7, [0, 2]] += shift  # one box, moved right: IoU stays >= 0.85 for 20-80 px boxes
    cand = Detections(boxes, ref.scores, ref.classes).take(rng.permutation(20))
    match = compare_detections(ref, cand, TOL)
    assert match.matched_fraction == 1.0 and match.mean_iou is not None and match.mean_iou > 0.98
    assert not match
    assert match.max_box_delta == pytest.approx(shift, abs=1e-3)
    assert any("coordinate delta" in failure and "px" in failure for failure in match.failures)


def test_the_pixel_tolerance_is_a_tolerance_field() -> None:
    rng = np.random.default_rng(2)
    ref = random_detections(rng, 5)
    cand = Detections(ref.boxes + 0.5, ref.scores, ref.classes)
    assert compare_detections(ref, cand, TOL)  # 0.5 px < 1 px default
    tight = DetectionTolerance(max_box_delta=0.1)
    assert not compare_detections(ref, cand, tight)
    assert compare_detections(ref, cand, DetectionTolerance(max_box_delta=None))


# --- cutoffs ---------------------------------------------------------------------------------------


def test_a_box_missing_at_the_threshold_is_left_out_but_a_confident_one_counts() -> None:
    rng = np.random.default_rng(3)
    ref = random_detections(rng, 10)
    scores = ref.scores.copy()
    scores[4] = 0.255  # just over conf_thres 0.25: the other side's noise may put it under
    ref = Detections(ref.boxes, scores, ref.classes)
    keep = np.array([i for i in range(10) if i != 4])
    match = compare_detections(ref, ref.take(keep), TOL, cutoffs=Cutoffs(0.25, 300))
    assert match, match.failures
    assert len(match.at_cutoff_ref) == 1 and len(match.only_ref) == 0

    confident = int(np.argmax(ref.scores))
    keep = np.array([i for i in range(10) if i != confident])
    match = compare_detections(ref, ref.take(keep), TOL, cutoffs=Cutoffs(0.25, 300))
    assert not match and len(match.only_ref) == 1 and len(match.at_cutoff_ref) == 0
    assert float(match.only_ref.scores[0]) == pytest.approx(float(ref.scores[confident]))


def test_boxes_tied_at_the_max_det_cutoff_are_interchangeable() -> None:
    """A post-processed detector that caps at max_det: 320 boxes tie at 1.0, each side keeps another 300."""
    rng = np.random.default_rng(4)
    tied = random_detections(rng, 320)
    tied = Detections(tied.boxes, np.ones(320), tied.classes)
    ref = tied.take(np.arange(300))
    cand = noisy(tied.take(rng.permutation(320)[:300]), rng)
    match = compare_detections(ref, cand, TOL, cutoffs=Cutoffs(0.05, 300))
    assert match, match.failures
    assert len(match.at_cutoff_ref) == len(match.at_cutoff_cand) > 0
    assert not compare_detections(ref, cand, TOL), "without the cutoffs the swapped boxes count"


# --- masks and keypoints ---------------------------------------------------------------------------


def with_parts(dets: Detections, rng: np.random.Generator) -> Detections:
    masks = np.zeros((len(dets), 32, 32), dtype=bool)
    for k in range(len(dets)):
        y, x = rng.integers(0, 20, 2)
        masks[k, y : y + 10, x : x + 10] = True
    keypoints = rng.uniform(0, 600, (len(dets), 17, 2))
    return Detections(dets.boxes, dets.scores, dets.classes, keypoints, masks)


def test_masks_and_keypoints_of_matched_boxes_are_compared() -> None:
    rng = np.random.default_rng(5)
    ref = with_parts(random_detections(rng, 8), rng)
    order = rng.permutation(8)
    same = ref.take(order)
    match = compare_detections(ref, same, TOL)
    assert match and match.mean_mask_iou == 1.0 and match.max_keypoint_delta == 0.0

    assert ref.keypoints is not None and ref.masks is not None
    moved = ref.keypoints.copy()
    moved[3, 5] += (3.0, 4.0)  # one keypoint 5 px away
    assert not compare_detections(ref, Detections(ref.boxes, ref.scores, ref.classes, moved, ref.masks), TOL)

    masks = ref.masks.copy()
    masks[:, :, :] = np.roll(masks, 6, axis=2)  # every mask moved by 6 of its 10 px
    match = compare_detections(ref, Detections(ref.boxes, ref.scores, ref.classes, ref.keypoints, masks), TOL)
    assert not match and any("mask IoU" in f for f in match.failures)
    assert match.only_ref.masks is None, "results keep no masks"


# --- tie-order invariance: the raw layouts ---------------------------------------------------------


def saturated_yolov5(rng: np.random.Generator, anchors: int = 3000, saturated: int = 300) -> np.ndarray:
    """(1, anchors, 5 + 2) rows: `saturated` boxes of objectness and class score exactly 1.0 in crowded
    clusters (so NMS among equal scores decides), the rest weaker."""
    pred = np.zeros((1, anchors, 7), dtype=np.float32)
    centres = rng.uniform(40, 600, (60, 2))
    pred[0, :, :2] = centres[rng.integers(0, 60, anchors)] + rng.normal(0, 12, (anchors, 2))
    pred[0, :, 2:4] = rng.uniform(16, 48, (anchors, 2))
    pred[0, :, 4] = rng.uniform(0.3, 0.99, anchors)
    classes = rng.integers(0, 2, anchors)
    pred[0, np.arange(anchors), 5 + classes] = rng.uniform(0.5, 1.0, anchors)
    top = rng.choice(anchors, saturated, replace=False)
    pred[0, top, 4] = 1.0
    pred[0, top, 5 + classes[top]] = 1.0
    return pred


def backend_noise(pred: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another backend's output: saturated scores one ulp under 1 at random, coordinates moved 1e-4 px."""
    noisy_pred = pred.copy()
    saturated = noisy_pred[..., 4] == 1.0
    flip = saturated & (rng.random(saturated.shape) < 0.5)
    noisy_pred[..., 4][flip] = ULP_BELOW_ONE
    noisy_pred[..., :4] += rng.normal(0, 1e-4, noisy_pred[..., :4].shape).astype(np.float32)
    return noisy_pred


def as_anchor_free(pred: np.ndarray) -> np.ndarray:
    """The same boxes as a YOLOv8-style (N, 4 + classes, anchors) output: score = objectness x class."""
    rows = np.concatenate([pred[..., :4], pred[..., 5:] * pred[..., 4:5]], axis=-1)
    return np.ascontiguousarray(rows.transpose(0, 2, 1))


def judge(spec: DetectionSpec, ref_pred: np.ndarray, cand_pred: np.ndarray) -> tuple[bool, float, int]:
    (ref,) = detect(spec, ref_pred)
    (cand,) = detect(spec, cand_pred)
    match = compare_detections(
        ref, cand, spec.tolerance, spec.iou_match, Cutoffs(spec.conf_thres, spec.max_det)
    )
    return bool(match), match.matched_fraction, int((ref.scores == 1.0).sum())


@pytest.mark.parametrize("layout", ["yolov5", "anchor_free"])
def test_saturated_scores_with_float_noise_give_the_same_verdict(layout: str) -> None:
    rng = np.random.default_rng(6)
    ref_pred = saturated_yolov5(rng)
    cand_pred = backend_noise(ref_pred, rng)
    if layout == "anchor_free":
        ref_pred, cand_pred = as_anchor_free(ref_pred), as_anchor_free(cand_pred)
    spec = DetectionSpec(output="output0", layout=layout, tolerance=TOL)  # type: ignore[arg-type]
    passed, fraction, saturated_kept = judge(spec, ref_pred, cand_pred)
    # as upstream-architecture YOLOv5s (268 of 300 kept boxes at 1.0): most, not all, so the cutoff is below 1
    assert 200 <= saturated_kept < 300
    assert passed and fraction == 1.0

    exact = DetectionSpec(output="output0", layout=layout, tolerance=TOL, score_resolution=0.0)  # type: ignore[arg-type]
    passed_exact, _, _ = judge(exact, ref_pred, cand_pred)
    assert not passed_exact, "ranking by exact scores lets the noise pick which tied boxes NMS keeps"


def test_ties_in_either_order_are_broken_the_same_way_by_nms() -> None:
    rng = np.random.default_rng(7)
    boxes = rng.uniform(0, 50, (200, 2))
    boxes = np.hstack([boxes, boxes + 30])
    classes = np.zeros(200, dtype=np.int64)
    scores = np.ones(200, dtype=np.float32)
    nudged = scores.copy()
    nudged[rng.random(200) < 0.5] = ULP_BELOW_ONE
    kept = nms(boxes, scores, classes, 0.45, max_keep=30, score_resolution=1e-5)
    assert np.array_equal(kept, nms(boxes, nudged, classes, 0.45, max_keep=30, score_resolution=1e-5))
    assert not np.array_equal(kept, nms(boxes, nudged, classes, 0.45, max_keep=30))


def test_a_real_box_shift_still_fails_among_saturated_scores() -> None:
    rng = np.random.default_rng(8)
    ref_pred = saturated_yolov5(rng)
    spec = DetectionSpec(output="output0", layout="yolov5", tolerance=TOL)
    (ref,) = detect(spec, ref_pred)
    cand_pred = backend_noise(ref_pred, rng)
    # move one kept saturated box by 3 px: still matched (IoU ~0.9) but beyond the pixel tolerance
    kept_row = int(
        np.flatnonzero(np.abs(ref_pred[0, :, 0] - (ref.boxes[0, 0] + ref.boxes[0, 2]) / 2) < 1e-3)[0]
    )
    cand_pred[0, kept_row, 0] += 3.0
    passed, _, _ = judge(spec, ref_pred, cand_pred)
    assert not passed


# --- the post-processed layout: read per image -----------------------------------------------------


def test_postprocessed_outputs_read_batched_padded_and_per_image_names_alike() -> None:
    rng = np.random.default_rng(9)
    images = [random_detections(rng, 5), random_detections(rng, 3)]
    spec = DetectionSpec(output="boxes", layout="postprocessed", conf_thres=0.05, count_output="num")
    per_image = {}
    for i, dets in enumerate(images):
        per_image |= {f"{i}.boxes": dets.boxes, f"{i}.scores": dets.scores, f"{i}.labels": dets.classes}
    padded = {
        "boxes": np.zeros((2, 6, 4), np.float32),
        "scores": np.zeros((2, 6), np.float32),
        "labels": np.full((2, 6), -1.0, np.float32),  # labels as floats, as some exports give them
        "num": np.array([5, 3]),
    }
    for i, dets in enumerate(images):
        padded["boxes"][i, : len(dets)] = dets.boxes
        padded["scores"][i, : len(dets)] = dets.scores
        padded["labels"][i, : len(dets)] = dets.classes
    padded["scores"][1, 4] = 0.9  # past the count: padding, whatever its score
    for outputs in (per_image, padded):
        found = detect_outputs(spec, outputs)
        assert found is not None and len(found) == 2
        for got, want in zip(found, images, strict=True):
            assert compare_detections(want, got, TOL).matched_fraction == 1.0
            assert len(got) == len(want)
            assert np.all(np.diff(got.scores) <= 0), "best first"
    assert detect_outputs(spec, {"other": np.zeros(3)}) is None


@pytest.mark.parametrize("layout", ["yolov5", "anchor_free"])
def test_a_box_with_two_saturated_classes_keeps_its_class_under_float_noise(layout: str) -> None:
    """Measured on a saturated YOLOv5s head: two classes at exactly 1.0, one a ulp under on the other
    backend, changed the box's class (2 of 175 boxes unmatched); ranked, the lower class wins on both."""
    rng = np.random.default_rng(10)
    ref_pred = saturated_yolov5(rng, anchors=400, saturated=60)
    ref_pred[0, :, 5:] = np.where(ref_pred[0, :, 4:5] == 1.0, 1.0, ref_pred[0, :, 5:])  # both classes 1.0
    cand_pred = ref_pred.copy()
    tied = cand_pred[0, :, 5] == 1.0
    cand_pred[0, tied & (rng.random(400) < 0.5), 5] = ULP_BELOW_ONE
    if layout == "anchor_free":
        ref_pred, cand_pred = as_anchor_free(ref_pred), as_anchor_free(cand_pred)
    spec = DetectionSpec(output="output0", layout=layout, tolerance=TOL)  # type: ignore[arg-type]
    passed, fraction, _ = judge(spec, ref_pred, cand_pred)
    assert passed and fraction == 1.0
    exact = DetectionSpec(output="output0", layout=layout, tolerance=TOL, score_resolution=0.0)  # type: ignore[arg-type]
    assert not judge(exact, ref_pred, cand_pred)[0], "by exact scores the noise picks the class"
