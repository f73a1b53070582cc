from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import trt_harness.models.detection as detection
from hypothesis import given, settings
from hypothesis import strategies as st
from trt_harness.models.core.errors import UsageError
from trt_harness.models.core.serde import from_json, to_json
from trt_harness.models.detection import (
    DetectionMatch,
    Detections,
    DetectionTolerance,
    Letterbox,
    box_iou,
    boxes_to_original,
    compare_detections,
    nms,
    postprocess_anchor_free,
    postprocess_yolov5,
)

# ---------------------------------------------------------------- brute-force references


def reference_iou(a: list[float], b: list[float]) -> float:
    def area(r: list[float]) -> float:
        return max(r[2] - r[0], 0.0) * max(r[3] - r[1], 0.0)

    inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def reference_nms(
    boxes: list[list[float]], scores: list[float], classes: list[int], thres: float
) -> list[int]:
    """Greedy NMS with one loop per box: best score first, equal scores by lower index."""
    kept: list[int] = []
    for i in sorted(range(len(scores)), key=lambda i: (-scores[i], i)):
        if all(classes[k] != classes[i] or reference_iou(boxes[k], boxes[i]) <= thres for k in kept):
            kept.append(i)
    return kept


# ---------------------------------------------------------------- strategies

# Coordinates on a half-pixel grid: overlaps are frequent and IoUs hit thresholds exactly.
_coordinate = st.integers(0, 40).map(lambda v: v / 2)
_extent = st.integers(0, 20).map(lambda v: v / 2)  # zero-width boxes included
_box = st.tuples(_coordinate, _coordinate, _extent, _extent).map(
    lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]]
)
# Few distinct scores, so ties are common and the tie-break rule is exercised.
_score = st.one_of(st.sampled_from([0.1, 0.5, 0.9]), st.floats(0, 1, width=32))
# Any four corners, including inverted (x2 < x1) boxes.
_any_box = st.lists(st.integers(-10, 30).map(lambda v: v / 2), min_size=4, max_size=4)
_threshold = st.one_of(st.sampled_from([0.0, 0.25, 0.5, 0.7, 1.0]), st.floats(0, 1))


@st.composite
def box_sets(draw: st.DrawFn, max_size: int = 40) -> tuple[list[list[float]], list[float], list[int]]:
    n = draw(st.integers(0, max_size))
    boxes = draw(st.lists(_box, min_size=n, max_size=n))
    scores = draw(st.lists(_score, min_size=n, max_size=n))
    classes = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    return boxes, scores, classes


# ---------------------------------------------------------------- box_iou


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(_box, _any_box), max_size=12), st.lists(st.one_of(_box, _any_box), max_size=12))
def test_box_iou_matches_brute_force(a: list[list[float]], b: list[list[float]]) -> None:
    iou = box_iou(np.array(a), np.array(b))
    assert iou.shape == (len(a), len(b))
    expected = np.array([[reference_iou(x, y) for y in b] for x in a]).reshape(len(a), len(b))
    np.testing.assert_allclose(iou, expected, rtol=1e-12, atol=0)
    assert ((iou >= 0) & (iou <= 1 + 1e-12)).all()
    np.testing.assert_array_equal(box_iou(np.array(b), np.array(a)), iou.T)


def test_box_iou_of_a_box_with_itself_is_one_and_degenerate_boxes_give_zero() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 5, 5, 9], [3, 3, 1, 1]], dtype=np.float32)
    np.testing.assert_array_equal(np.diag(box_iou(boxes, boxes)), [1.0, 0.0, 0.0])


# ---------------------------------------------------------------- nms


@pytest.mark.parametrize("matrix_below", [detection._NMS_MATRIX_BELOW, 1], ids=["default", "step_by_step"])
@settings(max_examples=100, deadline=None)
@given(data=box_sets(), thres=_threshold)
def test_nms_matches_brute_force(matrix_below: int, data: tuple, thres: float) -> None:
    boxes, scores, classes = data
    # Both the one-box-per-step path and the IoU-matrix path must agree with the reference.
    with mock.patch.object(detection, "_NMS_MATRIX_BELOW", matrix_below):
        kept = nms(np.array(boxes), np.array(scores), np.array(classes), thres)
    assert kept.tolist() == reference_nms(boxes, scores, classes, thres)


@settings(max_examples=50, deadline=None)
@given(data=box_sets(), thres=_threshold, max_keep=st.integers(1, 10))
def test_nms_max_keep_returns_the_best_survivors(data: tuple, thres: float, max_keep: int) -> None:
    boxes, scores, classes = data
    everything = nms(np.array(boxes), np.array(scores), np.array(classes), thres)
    limited = nms(np.array(boxes), np.array(scores), np.array(classes), thres, max_keep=max_keep)
    assert limited.tolist() == everything[:max_keep].tolist()


def test_nms_on_many_boxes_matches_brute_force() -> None:
    # Clustered like detector output, large enough for the step-by-step path to run.
    rng = np.random.default_rng(3)
    centres = rng.uniform(0, 600, (40, 2))
    cluster = rng.integers(0, 40, 700)
    xy = centres[cluster] + rng.normal(0, 6, (700, 2))
    wh = rng.uniform(20, 80, (700, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.random(700).astype(np.float32).astype(np.float64)
    classes = cluster % 3
    kept = nms(boxes, scores, classes, 0.45)
    assert kept.tolist() == reference_nms(boxes.tolist(), scores.tolist(), classes.tolist(), 0.45)
    assert 40 <= len(kept) < 700


def test_nms_keeps_overlapping_boxes_of_different_classes() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [1, 0, 10, 10]], dtype=np.float32)
    kept = nms(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 1, 0]), 0.5)
    assert kept.tolist() == [0, 1]


def test_nms_rejects_mismatched_lengths() -> None:
    with pytest.raises(UsageError, match="one score and one class per box"):
        nms(np.zeros((3, 4)), np.zeros(2), np.zeros(3), 0.5)


# ---------------------------------------------------------------- post-processing

NUM_CLASSES = 4
LETTERBOX = Letterbox(scale=0.5, pad=(0.0, 140.0), original_hw=(720, 1280), new_hw=(640, 640))
# (x1, y1, x2, y2) in original-image pixels, class, objectness, class probability
PLANTED = [
    ((100.0, 200.0, 300.0, 400.0), 0, 0.9, 0.95),
    ((600.0, 100.0, 900.0, 500.0), 2, 0.8, 0.9),
    ((110.0, 190.0, 310.0, 410.0), 1, 0.7, 0.8),  # overlaps the first, another class: kept
    ((1000.0, 500.0, 1200.0, 700.0), 3, 0.6, 0.6),
]


def _to_letterbox_xywh(box: tuple[float, float, float, float]) -> list[float]:
    pad_x, pad_y = LETTERBOX.pad
    x1, y1, x2, y2 = (v * LETTERBOX.scale + p for v, p in zip(box, (pad_x, pad_y, pad_x, pad_y), strict=True))
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


def _yolov5_row(xywh: list[float], objectness: float, class_probs: dict[int, float]) -> np.ndarray:
    row = np.zeros(5 + NUM_CLASSES, dtype=np.float32)
    row[:4], row[4] = xywh, objectness
    for class_id, prob in class_probs.items():
        row[5 + class_id] = prob
    return row


def planted_yolov5_prediction(num_anchors: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pred = np.zeros((num_anchors, 5 + NUM_CLASSES), dtype=np.float32)
    # Background anchors: random boxes whose objectness stays under the threshold.
    pred[:, :2] = rng.uniform(0, 640, (num_anchors, 2))
    pred[:, 2:4] = rng.uniform(4, 100, (num_anchors, 2))
    pred[:, 4] = rng.uniform(0, 0.2, num_anchors)
    pred[:, 5:] = rng.uniform(0, 1, (num_anchors, NUM_CLASSES))
    rows = []
    for box, class_id, objectness, prob in PLANTED:
        xywh = _to_letterbox_xywh(box)
        rows.append(_yolov5_row(xywh, objectness, {class_id: prob}))
        # Weaker near-duplicates of the same class: NMS must remove them.
        for shift in (1.5, -2.0):
            rows.append(
                _yolov5_row([xywh[0] + shift, xywh[1], *xywh[2:]], objectness * 0.9, {class_id: prob})
            )
    # Certain class, objectness at the threshold: the score is not above it, dropped.
    rows.append(_yolov5_row([320, 320, 50, 50], 0.25, {0: 1.0}))
    # Objectness above but objectness * class below the threshold: dropped.
    rows.append(_yolov5_row([200, 500, 50, 50], 0.5, {1: 0.45}))
    positions = rng.choice(num_anchors, len(rows), replace=False)
    pred[positions] = np.stack(rows)
    return pred[None]


def _assert_recovers_planted(dets: Detections) -> None:
    assert len(dets) == len(PLANTED)
    expected = sorted(PLANTED, key=lambda p: -p[2] * p[3])
    np.testing.assert_array_equal(dets.classes, [p[1] for p in expected])
    np.testing.assert_allclose(dets.scores, [p[2] * p[3] for p in expected], rtol=1e-6)
    letterbox_boxes = [
        [xywh[0] - xywh[2] / 2, xywh[1] - xywh[3] / 2, xywh[0] + xywh[2] / 2, xywh[1] + xywh[3] / 2]
        for xywh in (_to_letterbox_xywh(p[0]) for p in expected)
    ]
    np.testing.assert_allclose(dets.boxes, letterbox_boxes, atol=1e-3)
    np.testing.assert_allclose(dets.to_original(LETTERBOX).boxes, [p[0] for p in expected], atol=1e-3)


def test_postprocess_yolov5_recovers_planted_boxes_in_original_coordinates() -> None:
    (dets,) = postprocess_yolov5(planted_yolov5_prediction())
    _assert_recovers_planted(dets)
    assert dets.boxes.dtype == np.float32 and dets.classes.dtype == np.int64


def test_postprocess_anchor_free_recovers_planted_boxes() -> None:
    # The same scene as a YOLOv8-style head would give it: class scores carry the confidence.
    v5 = planted_yolov5_prediction()[0]
    class_scores = v5[:, 5:] * v5[:, 4:5] * (v5[:, 4:5] > 0.25)
    anchor_free = np.concatenate([v5[:, :4], class_scores], axis=1)
    (dets,) = postprocess_anchor_free(anchor_free.T[None])
    _assert_recovers_planted(dets)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), conf=st.floats(0.05, 0.9), iou=st.floats(0.1, 0.9))
def test_anchor_free_equals_yolov5_with_objectness_one(seed: int, conf: float, iou: float) -> None:
    v5 = planted_yolov5_prediction(num_anchors=200, seed=seed)
    v5[..., 4] = 1.0
    anchor_free = np.concatenate([v5[..., :4], v5[..., 5:]], axis=-1).transpose(0, 2, 1)
    (expected,) = postprocess_yolov5(v5, conf, iou)
    (got,) = postprocess_anchor_free(anchor_free, conf, iou)
    assert to_json(got) == to_json(expected)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    conf=st.floats(0.0, 0.9),
    iou=st.floats(0.1, 0.9),
    max_det=st.integers(1, 50),
    multi_label=st.booleans(),
)
def test_postprocess_output_invariants(
    seed: int, conf: float, iou: float, max_det: int, multi_label: bool
) -> None:
    rng = np.random.default_rng(seed)
    pred = rng.uniform(0, 1, (2, 300, 5 + NUM_CLASSES)).astype(np.float32)
    pred[..., :4] *= 200
    results = postprocess_yolov5(pred, conf, iou, max_det, multi_label=multi_label)
    assert len(results) == 2
    for image_pred, dets in zip(pred, results, strict=True):
        assert len(dets) <= max_det
        assert (dets.scores > conf).all()
        assert (np.diff(dets.scores) <= 0).all()
        same_class = dets.classes[:, None] == dets.classes[None, :]
        overlaps = box_iou(dets.boxes, dets.boxes) > iou
        assert not (same_class & overlaps & ~np.eye(len(dets), dtype=bool)).any()
        # Each image is post-processed on its own.
        (alone,) = postprocess_yolov5(image_pred[None], conf, iou, max_det, multi_label=multi_label)
        assert to_json(alone) == to_json(dets)


def test_max_det_keeps_the_highest_scores() -> None:
    rows = [_yolov5_row([30.0 * i + 10, 10, 8, 8], 0.3 + 0.01 * i, {i % NUM_CLASSES: 1.0}) for i in range(20)]
    (dets,) = postprocess_yolov5(np.stack(rows)[None], max_det=5)
    np.testing.assert_allclose(dets.scores, [0.3 + 0.01 * i for i in range(19, 14, -1)], rtol=1e-6)


def test_multi_label_keeps_every_class_above_the_threshold() -> None:
    pred = _yolov5_row([50, 50, 20, 20], 1.0, {0: 0.9, 2: 0.8, 3: 0.1})[None, None]
    (single,) = postprocess_yolov5(pred)
    (multi,) = postprocess_yolov5(pred, multi_label=True)
    assert single.classes.tolist() == [0]
    assert multi.classes.tolist() == [0, 2]
    np.testing.assert_array_equal(multi.boxes[0], multi.boxes[1])


def test_postprocess_rejects_outputs_of_the_wrong_shape() -> None:
    with pytest.raises(UsageError, match=r"pred\[None\]"):
        postprocess_yolov5(np.zeros((100, 85), dtype=np.float32))
    with pytest.raises(UsageError, match="postprocess_yolov5"):
        postprocess_anchor_free(np.zeros((1, 4, 100), dtype=np.float32))


def test_postprocess_of_an_output_with_no_candidates_is_empty() -> None:
    (dets,) = postprocess_yolov5(np.zeros((1, 50, 5 + NUM_CLASSES), dtype=np.float32))
    assert len(dets) == 0 and dets.boxes.shape == (0, 4)


# ---------------------------------------------------------------- letterbox and values


def test_boxes_to_original_inverts_the_letterbox_and_clips() -> None:
    original = np.array([[10.0, 20.0, 500.0, 700.0], [1000.0, 0.0, 1280.0, 720.0]])
    pad_x, pad_y = LETTERBOX.pad
    letterboxed = original * LETTERBOX.scale + [pad_x, pad_y, pad_x, pad_y]
    np.testing.assert_allclose(boxes_to_original(letterboxed, LETTERBOX), original, atol=1e-4)
    # A box reaching into the padding and beyond the right edge is clipped to the image.
    clipped = boxes_to_original(np.array([[-20.0, 100.0, 700.0, 600.0]]), LETTERBOX)
    height, width = LETTERBOX.original_hw
    np.testing.assert_allclose(clipped, [[0.0, 0.0, width, height]])


def test_letterbox_json_round_trip_and_validation() -> None:
    assert from_json(Letterbox, json.loads(json.dumps(to_json(LETTERBOX)))) == LETTERBOX
    with pytest.raises(UsageError, match="scale"):
        Letterbox(scale=0.0, pad=(0, 0), original_hw=(1, 1), new_hw=(1, 1))
    with pytest.raises(UsageError, match="new_hw"):
        from_json(Letterbox, {"scale": 1.0, "pad": [0, 0], "original_hw": [1, 1]})


def test_detections_json_round_trip_and_validation() -> None:
    (dets,) = postprocess_yolov5(planted_yolov5_prediction())
    again = from_json(Detections, json.loads(json.dumps(to_json(dets))))
    for field in ("boxes", "scores", "classes"):
        np.testing.assert_array_equal(getattr(again, field), getattr(dets, field))
        assert getattr(again, field).dtype == getattr(dets, field).dtype
    assert not dets.boxes.flags.writeable
    with pytest.raises(UsageError, match="one score and one class per box"):
        Detections(np.zeros((2, 4)), np.zeros(1), np.zeros(2))
    with pytest.raises(UsageError, match=r"\(K, 4\)"):
        Detections(np.zeros((2, 5)), np.zeros(2), np.zeros(2))


# ---------------------------------------------------------------- comparison


def random_detections(seed: int, count: int = 30) -> Detections:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 600, (count, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(20, 120, (count, 2))], axis=1)
    scores = rng.uniform(0.3, 0.95, count)
    classes = rng.integers(0, 5, count)
    kept = nms(boxes, scores, classes, 0.45)
    return Detections(boxes[kept], scores[kept], classes[kept])


def test_identical_detections_pass_with_everything_matched() -> None:
    dets = random_detections(0)
    match = compare_detections(dets, dets, DetectionTolerance())
    assert match
    assert match.matched_fraction == 1.0 and match.mean_iou == 1.0 and match.max_score_delta == 0.0
    assert len(match.only_ref) == 0 and len(match.only_cand) == 0
    assert sorted(r for r, _ in match.pairs) == list(range(len(dets)))
    json.dumps(to_json(match))


def test_two_empty_detection_sets_pass() -> None:
    match = compare_detections(Detections.empty(), Detections.empty(), DetectionTolerance())
    assert match and match.matched_fraction == 1.0 and match.mean_iou is None
    assert bool(from_json(DetectionMatch, json.loads(json.dumps(to_json(match))))) is True


def test_boxes_shifted_far_away_fail_and_are_listed_on_both_sides() -> None:
    ref = random_detections(1)
    shifted = Detections(ref.boxes + 1000.0, ref.scores, ref.classes)
    match = compare_detections(ref, shifted, DetectionTolerance())
    assert not match
    assert match.matched_fraction == 0.0
    assert any("matched fraction" in failure for failure in match.failures)
    np.testing.assert_array_equal(np.sort(match.only_cand.scores), np.sort(shifted.scores))
    assert bool(from_json(DetectionMatch, json.loads(json.dumps(to_json(match))))) is False


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_tiny_perturbations_pass(seed: int) -> None:
    ref = random_detections(seed)
    rng = np.random.default_rng(seed + 1)
    cand = Detections(
        ref.boxes + rng.choice([-0.5, 0.5], ref.boxes.shape),
        ref.scores + rng.choice([-1e-3, 1e-3], len(ref)),
        ref.classes,
    )
    match = compare_detections(ref, cand, DetectionTolerance())
    assert match, match.failures
    assert match.matched_fraction == 1.0
    assert match.max_score_delta == pytest.approx(1e-3, rel=1e-3)
    assert all(r == c for r, c in match.pairs)


def test_a_missing_box_fails_the_matched_fraction_and_is_reported() -> None:
    ref = random_detections(2)
    missing = 3
    cand = ref.take(np.delete(np.arange(len(ref)), missing))
    match = compare_detections(ref, cand, DetectionTolerance(min_matched_fraction=0.99))
    assert not match
    assert match.matched_fraction == pytest.approx((len(ref) - 1) / len(ref))
    np.testing.assert_array_equal(match.only_ref.boxes, ref.boxes[[missing]])
    assert len(match.only_cand) == 0
    assert compare_detections(ref, cand, DetectionTolerance(min_matched_fraction=0.9))


def test_score_drift_and_loose_boxes_fail_their_own_criteria() -> None:
    ref = random_detections(4)
    drifted = Detections(ref.boxes, ref.scores + 0.1, ref.classes)
    match = compare_detections(ref, drifted, DetectionTolerance())
    assert not match and len(match.failures) == 1 and "score" in match.failures[0]
    # Every box moved by a fifth of its width: still matched at IoU >= 0.5, but the mean IoU is low.
    widths = ref.boxes[:, 2] - ref.boxes[:, 0]
    loose = Detections(ref.boxes + (widths / 5)[:, None] * [1, 0, 1, 0], ref.scores, ref.classes)
    match = compare_detections(ref, loose, DetectionTolerance())
    assert not match and match.matched_fraction == 1.0 and "mean IoU" in match.failures[0]


def test_matching_requires_the_same_class() -> None:
    ref = Detections([[0, 0, 10, 10]], [0.9], [0])
    cand = Detections([[0, 0, 10, 10]], [0.9], [1])
    match = compare_detections(ref, cand, DetectionTolerance())
    assert not match and match.pairs == ()


def test_matching_takes_the_highest_iou_first() -> None:
    # The candidate overlaps reference 0 at IoU 0.6 and reference 1 at IoU 0.9: it goes to 1.
    ref = Detections([[0, 0, 10, 10], [4, 0, 14, 10]], [0.9, 0.8], [0, 0])
    cand = Detections([[3, 0, 13, 10]], [0.85], [0])
    ious = box_iou(ref.boxes, cand.boxes)[:, 0]
    assert ious[1] > ious[0] >= 0.5
    match = compare_detections(ref, cand, DetectionTolerance())
    assert match.pairs == ((1, 0),)
    np.testing.assert_array_equal(match.only_ref.boxes, ref.boxes[[0]])


def test_compare_rejects_an_iou_match_that_would_pair_disjoint_boxes() -> None:
    dets = random_detections(5)
    with pytest.raises(UsageError, match="iou_match"):
        compare_detections(dets, dets, DetectionTolerance(), iou_match=0.0)


def test_detection_tolerance_json_round_trip() -> None:
    tol = DetectionTolerance(min_matched_fraction=0.9, min_mean_iou=0.8, max_score_delta=0.1)
    assert from_json(DetectionTolerance, json.loads(json.dumps(to_json(tol)))) == tol


def test_module_imports_without_torch() -> None:
    code = "import sys, models.detection; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=Path(detection.__file__).resolve().parents[1]
    )
