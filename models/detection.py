"""Object-detection post-processing and detection-level comparison, in numpy only.

The report layer imports this module, so it must not import torch, OpenCV or torchvision.

Conventions shared by every function here:
- Boxes are `xyxy` (x1, y1, x2, y2) in pixels, float32 at rest, float64 while computing IoU.
- IoU of two boxes whose union has no area (degenerate or non-finite boxes) is 0: such a box
  never suppresses, is never suppressed and never matches, so a NaN from a backend shows up as
  an unmatched box in the comparison instead of an exception.
- Order is by descending score; equal scores keep their input order (lower index first). NMS,
  the candidate cap and `max_det` all use this order, so results are deterministic across
  platforms and backends, which the comparison between backends relies on. With a
  `score_resolution` > 0, scores are ranked on that grid (rounded to the nearest multiple), so
  scores equal up to float noise (a saturated detector's 1.0 against 0.99999994) are ties broken
  by row on both backends alike instead of by the noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from trt_harness.models.core.errors import UsageError

# YOLOv5/YOLOv8 pass at most this many boxes (best first) to NMS after the confidence filter.
DEFAULT_MAX_CANDIDATES = 30000


@dataclass(frozen=True)
class Letterbox:
    """How an image of `original_hw` was resized by `scale` and padded into `new_hw`.

    `pad` is (pad_x, pad_y): the left and top padding in pixels of the letterboxed image, so a
    point (x, y) of the original image lies at (x * scale + pad_x, y * scale + pad_y).
    """

    scale: float
    pad: tuple[float, float]
    original_hw: tuple[int, int]
    new_hw: tuple[int, int]

    def __post_init__(self) -> None:
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise UsageError(f"Letterbox scale must be a positive finite number, got {self.scale}")


def boxes_to_original(boxes: np.ndarray, letterbox: Letterbox) -> np.ndarray:
    """Map xyxy boxes from letterboxed-input pixels to original-image pixels, clipped to the image."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    pad_x, pad_y = letterbox.pad
    height, width = letterbox.original_hw
    mapped = (boxes - np.array([pad_x, pad_y, pad_x, pad_y])) / letterbox.scale
    mapped[:, 0::2] = mapped[:, 0::2].clip(0, width)
    mapped[:, 1::2] = mapped[:, 1::2].clip(0, height)
    return mapped.astype(np.float32)


def _frozen_array(values: Any, dtype: type, shape: tuple[int, ...], what: str) -> np.ndarray:
    array = np.array(values, dtype=dtype)
    if array.size == 0:
        array = array.reshape(shape)
    if array.ndim != len(shape) or array.shape[1:] != shape[1:]:
        expected = "(K, 4)" if len(shape) == 2 else "(K,)"
        raise UsageError(f"Detections.{what} must have shape {expected}, got {array.shape}")
    array.setflags(write=False)
    return array


def _frozen_optional(values: Any, dtype: type, ndim: int, count: int, what: str) -> np.ndarray | None:
    if values is None:
        return None
    array = np.array(values, dtype=dtype)
    if array.ndim != ndim or len(array) != count:
        raise UsageError(
            f"Detections.{what} must have {ndim} axes and one row per box ({count}), got shape {array.shape}"
        )
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Detections:
    """The detections of one image: `boxes` (K, 4) float32 xyxy, `scores` (K,) float32, `classes` (K,) int64,
    optionally `keypoints` (K, P, 2) float32 xy pixels and `masks` (K, H, W) bool.

    Arrays are copied on construction and read-only, so a value can be shared safely.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    keypoints: np.ndarray | None = None
    masks: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "boxes", _frozen_array(self.boxes, np.float32, (0, 4), "boxes"))
        object.__setattr__(self, "scores", _frozen_array(self.scores, np.float32, (0,), "scores"))
        object.__setattr__(self, "classes", _frozen_array(self.classes, np.int64, (0,), "classes"))
        if not len(self.boxes) == len(self.scores) == len(self.classes):
            raise UsageError(
                f"Detections needs one score and one class per box, got {len(self.boxes)} boxes, "
                f"{len(self.scores)} scores and {len(self.classes)} classes"
            )
        count = len(self.boxes)
        object.__setattr__(
            self, "keypoints", _frozen_optional(self.keypoints, np.float32, 3, count, "keypoints")
        )
        object.__setattr__(self, "masks", _frozen_optional(self.masks, np.bool_, 3, count, "masks"))

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0))

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, indices: np.ndarray) -> Detections:
        """The detections at `indices`, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return Detections(
            self.boxes[indices],
            self.scores[indices],
            self.classes[indices],
            None if self.keypoints is None else self.keypoints[indices],
            None if self.masks is None else self.masks[indices],
        )

    def without_masks(self) -> Detections:
        """These detections without their masks (what results.json keeps: masks are image-sized)."""
        if self.masks is None:
            return self
        return Detections(self.boxes, self.scores, self.classes, self.keypoints)

    def to_original(self, letterbox: Letterbox) -> Detections:
        """These detections with boxes mapped from the letterboxed input back to the original image
        (keypoints likewise; masks, in input pixels, are left out)."""
        keypoints = None
        if self.keypoints is not None:
            points = self.keypoints.reshape(-1, 2)
            doubled = boxes_to_original(np.concatenate([points, points], axis=1), letterbox)
            keypoints = doubled[:, :2].reshape(self.keypoints.shape)
        return Detections(boxes_to_original(self.boxes, letterbox), self.scores, self.classes, keypoints)


def _pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of float64 xyxy boxes; 0 where the union has no area."""
    area_a = np.maximum(a[:, 2] - a[:, 0], 0) * np.maximum(a[:, 3] - a[:, 1], 0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
    inter_w = np.maximum(
        np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0
    )
    inter_h = np.maximum(
        np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0
    )
    inter = inter_w * inter_h
    union = area_a[:, None] + area_b[None, :] - inter
    iou = np.zeros_like(union)
    np.divide(inter, union, out=iou, where=union > 0)
    return iou


def _as_boxes(boxes: np.ndarray, what: str) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise UsageError(f"{what} must be xyxy boxes of shape (K, 4), got shape {boxes.shape}")
    return boxes


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU (float64) of every box in `a` (N, 4) with every box in `b` (M, 4), both xyxy: shape (N, M)."""
    return _pairwise_iou(_as_boxes(a, "box_iou(a)"), _as_boxes(b, "box_iou(b)"))


def ranked_scores(scores: np.ndarray, score_resolution: float = 0.0) -> np.ndarray:
    """The scores NMS and the caps rank by: on the grid of `score_resolution` (0: exact)."""
    scores = np.asarray(scores, dtype=np.float64)
    if score_resolution <= 0:
        return scores
    # the grid is centred on 0 and 1, where saturated scores sit, so their noise never crosses a step
    return np.rint(scores / score_resolution)


def _descending_order(scores: np.ndarray, score_resolution: float = 0.0) -> np.ndarray:
    # A stable sort of the negated (ranked) scores: ties keep input order (lower index first).
    return np.argsort(-ranked_scores(scores, score_resolution), kind="stable")


# Below this many remaining boxes, one IoU matrix is cheaper than a numpy round trip per kept box.
_NMS_MATRIX_BELOW = 256


def _greedy_nms_by_matrix(boxes: np.ndarray, iou_thres: float, max_keep: int) -> list[int]:
    """Greedy NMS of a few boxes sorted best first: one IoU matrix, then one boolean row per kept box."""
    suppresses = _pairwise_iou(boxes, boxes) > iou_thres
    removed = np.zeros(len(boxes), dtype=bool)
    kept: list[int] = []
    for position in range(len(boxes)):
        if removed[position]:
            continue
        kept.append(position)
        if len(kept) == max_keep:
            break
        removed |= suppresses[position]
    return kept


def _greedy_nms_sorted(boxes: np.ndarray, iou_thres: float, max_keep: int) -> np.ndarray:
    """Positions kept by greedy NMS of `boxes`, which must already be sorted best first.

    While many boxes remain, each step keeps the best one and drops those it suppresses, on
    coordinates compacted as boxes go; the IoU is `_pairwise_iou`'s arithmetic (same operations,
    same order), except that a zero union gives NaN instead of 0, which likewise never exceeds
    a threshold >= 0. The last few boxes are resolved with one IoU matrix.
    """
    x1, y1, x2, y2 = boxes.T
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    remaining = np.stack([x1, y1, x2, y2, area, np.arange(len(boxes), dtype=np.float64)])
    kept: list[int] = []
    with np.errstate(divide="ignore", invalid="ignore"):
        while remaining.shape[1] >= _NMS_MATRIX_BELOW and len(kept) < max_keep:
            best, rest = remaining[:, 0], remaining[:, 1:]
            kept.append(int(best[5]))
            inter_w = np.maximum(np.minimum(best[2], rest[2]) - np.maximum(best[0], rest[0]), 0)
            inter_h = np.maximum(np.minimum(best[3], rest[3]) - np.maximum(best[1], rest[1]), 0)
            inter = inter_w * inter_h
            iou = inter / (best[4] + rest[4] - inter)
            remaining = rest[:, ~(iou > iou_thres)]
    tail = remaining[5].astype(np.int64)
    if tail.size and len(kept) < max_keep:
        kept.extend(tail[_greedy_nms_by_matrix(boxes[tail], iou_thres, max_keep - len(kept))].tolist())
    return np.array(kept, dtype=np.int64)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    iou_thres: float,
    max_keep: int | None = None,
    score_resolution: float = 0.0,
) -> np.ndarray:
    """Class-aware greedy non-maximum suppression; returns the indices kept, best first.

    Boxes are visited by descending score (equal scores: lower index first); a box is dropped
    when its IoU with an already-kept box of the same class is strictly greater than
    `iou_thres` (as in torchvision). Classes are independent, so each class runs its own greedy
    pass over only its own boxes, which is exact (unlike offsetting boxes by class, whose large
    coordinates cost float precision) and cheaper than one pass over all classes. With
    `max_keep`, only the best `max_keep` survivors are returned, and each class stops early
    once it has that many. "Best" ranks scores on the grid of `score_resolution` (module doc).
    """
    boxes = _as_boxes(boxes, "nms boxes")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    classes = np.asarray(classes).reshape(-1)
    if not len(boxes) == len(scores) == len(classes):
        raise UsageError(
            f"nms needs one score and one class per box, got {len(boxes)} boxes, "
            f"{len(scores)} scores and {len(classes)} classes"
        )
    if not 0 <= iou_thres <= 1:
        raise UsageError(f"nms iou_thres must lie in [0, 1], got {iou_thres}")
    if max_keep is not None and max_keep < 0:
        raise UsageError(f"nms max_keep must be None (keep all) or >= 0, got {max_keep}")
    max_keep = len(boxes) if max_keep is None else max_keep
    order = _descending_order(scores, score_resolution)
    # Group by class, keeping score order within each class (stable sort).
    by_class = order[np.argsort(classes[order], kind="stable")]
    class_starts = np.flatnonzero(np.diff(classes[by_class])) + 1
    kept = np.concatenate(
        [np.zeros(0, dtype=np.int64)]
        + [
            group[_greedy_nms_sorted(boxes[group], iou_thres, max_keep)]
            for group in np.split(by_class, class_starts)
        ]
    )
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return kept[np.argsort(rank[kept])][:max_keep]


def _xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    half = xywh[:, 2:4] / 2
    return np.concatenate([xywh[:, 0:2] - half, xywh[:, 0:2] + half], axis=1)


def _detections_from_candidates(
    boxes_xywh: np.ndarray,
    class_scores: np.ndarray,
    conf_thres: float,
    iou_thres: float,
    max_det: int,
    multi_label: bool,
    max_candidates: int,
    score_resolution: float,
) -> Detections:
    """Confidence filter, best-first cap, class-aware NMS and `max_det` for one image."""
    if multi_label:
        rows, classes = np.nonzero(class_scores > conf_thres)
        scores = class_scores[rows, classes]
    else:
        # the best class ranked as boxes are: two classes saturated at 1.0 are a tie (lower class wins),
        # not a pick by float noise
        best_class = ranked_scores(class_scores, score_resolution).argmax(axis=1)
        best_score = class_scores[np.arange(len(class_scores)), best_class]
        rows = np.flatnonzero(best_score > conf_thres)
        classes, scores = best_class[rows], best_score[rows]
    boxes = _xywh_to_xyxy(boxes_xywh[rows].astype(np.float64))
    best_first = _descending_order(scores, score_resolution)[:max_candidates]
    boxes, scores, classes = boxes[best_first], scores[best_first], classes[best_first]
    kept = nms(boxes, scores, classes, iou_thres, max_keep=max_det, score_resolution=score_resolution)
    return Detections(boxes[kept], scores[kept], classes[kept])


def _check_thresholds(conf_thres: float, iou_thres: float, max_det: int) -> None:
    if not 0 <= conf_thres <= 1 or not 0 <= iou_thres <= 1:
        raise UsageError(f"conf_thres ({conf_thres}) and iou_thres ({iou_thres}) must lie in [0, 1]")
    if max_det < 1:
        raise UsageError(f"max_det must be at least 1, got {max_det}")


def postprocess_yolov5(
    pred: np.ndarray,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    max_det: int = 300,
    *,
    multi_label: bool = False,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
    score_resolution: float = 0.0,
) -> list[Detections]:
    """Detections per image from a YOLOv5 anchor-based output `pred` of shape (N, A, 5 + nc).

    Each row is (cx, cy, w, h) in letterboxed-input pixels, objectness, then nc class
    probabilities, all already sigmoided in the graph. As in YOLOv5's `non_max_suppression`:
    score = objectness * class probability, (box, class) candidates need score > conf_thres
    (only the best class per box unless `multi_label`), the best `max_candidates` go through
    class-aware NMS, and the best `max_det` survivors are returned. Boxes stay in
    letterboxed-input pixels: map them back with `Detections.to_original`.
    """
    pred = np.asarray(pred)
    if pred.ndim != 3 or pred.shape[2] < 6:
        raise UsageError(
            f"postprocess_yolov5 expects a YOLOv5 output of shape (N, anchors, 5 + classes), got {pred.shape}; "
            "add a batch axis with pred[None] for one image, and use postprocess_anchor_free for "
            "YOLOv8-style (N, 4 + classes, anchors) outputs"
        )
    _check_thresholds(conf_thres, iou_thres, max_det)
    results = []
    for image_pred in pred.astype(np.float32, copy=False):
        # With class probabilities <= 1 a score can only pass if objectness does: filtering on
        # objectness first is YOLOv5's shortcut past most of the 25200 rows.
        candidates = image_pred[image_pred[:, 4] > conf_thres]
        results.append(
            _detections_from_candidates(
                candidates[:, :4],
                candidates[:, 5:] * candidates[:, 4:5],
                conf_thres,
                iou_thres,
                max_det,
                multi_label,
                max_candidates,
                score_resolution,
            )
        )
    return results


def postprocess_anchor_free(
    pred: np.ndarray,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    max_det: int = 300,
    *,
    multi_label: bool = False,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
    score_resolution: float = 0.0,
) -> list[Detections]:
    """Detections per image from a YOLOv8-style anchor-free output `pred` of shape (N, 4 + nc, A).

    Each column is (cx, cy, w, h) in letterboxed-input pixels then nc class scores; there is no
    objectness, so a box's score is its class score. Filtering, NMS and `max_det` are as in
    `postprocess_yolov5`.
    """
    pred = np.asarray(pred)
    if pred.ndim != 3 or pred.shape[1] < 5:
        raise UsageError(
            f"postprocess_anchor_free expects an output of shape (N, 4 + classes, anchors), got {pred.shape}; "
            "add a batch axis with pred[None] for one image, and use postprocess_yolov5 for "
            "YOLOv5 (N, anchors, 5 + classes) outputs"
        )
    _check_thresholds(conf_thres, iou_thres, max_det)
    results = []
    for image_pred in pred.astype(np.float32, copy=False):
        rows = image_pred.T
        results.append(
            _detections_from_candidates(
                rows[:, :4],
                rows[:, 4:],
                conf_thres,
                iou_thres,
                max_det,
                multi_label,
                max_candidates,
                score_resolution,
            )
        )
    return results


@dataclass(frozen=True)
class DetectionTolerance:
    """Pass criterion for the detections of one image from two backends.

    Matched fraction = matches / max(len(ref), len(cand)), boxes at a cutoff left out of both counts
    (see `compare_detections`); IoU, score, coordinate, mask and keypoint deltas are over matches.
    `max_box_delta` is in pixels of the boxes' own coordinates, per coordinate: FP32 backends agree
    to about 1e-3 px, while a box that moved by a pixel is a real change even at IoU 0.95. None: not
    checked. Masks (binarized at 0.5) and keypoints are checked where both sides have them.
    """

    min_matched_fraction: float = 0.95
    min_mean_iou: float = 0.9
    max_score_delta: float = 0.05
    max_box_delta: float | None = 1.0
    min_mean_mask_iou: float = 0.9
    max_keypoint_delta: float = 2.0


@dataclass(frozen=True, eq=False)
class DetectionMatch:
    """How the detections of a candidate backend match the reference's for one image.

    Truthy when it passes `tolerance`. `mean_iou` and the deltas are None when nothing matched (then
    the matched fraction alone decides: 1.0 when both sides are empty, else 0). `only_ref`/`only_cand`
    are the unmatched boxes that count against the matched fraction; `at_cutoff_ref`/`at_cutoff_cand`
    index (into `ref`/`cand`) those left out of it because they lie at the other side's cutoff (see
    `compare_detections`).
    """

    tolerance: DetectionTolerance
    num_ref: int
    num_cand: int
    # (ref index, cand index) of each match, highest IoU first
    pairs: tuple[tuple[int, int], ...]
    matched_fraction: float
    mean_iou: float | None
    max_score_delta: float | None
    mean_score_delta: float | None
    only_ref: Detections = field(repr=False)
    only_cand: Detections = field(repr=False)
    max_box_delta: float | None = None
    mean_mask_iou: float | None = None
    max_keypoint_delta: float | None = None
    at_cutoff_ref: tuple[int, ...] = ()
    at_cutoff_cand: tuple[int, ...] = ()

    @property
    def failures(self) -> tuple[str, ...]:
        """One sentence per criterion that failed; empty when the match passes."""
        tol = self.tolerance
        found = []
        if not self.matched_fraction >= tol.min_matched_fraction:
            found.append(
                f"matched fraction {self.matched_fraction:.4f} < {tol.min_matched_fraction} "
                f"({len(self.pairs)} matches of {self.num_ref} reference and {self.num_cand} candidate boxes; "
                f"{len(self.only_ref)} only in reference, {len(self.only_cand)} only in candidate)"
            )
        if self.mean_iou is not None and not self.mean_iou >= tol.min_mean_iou:
            found.append(f"mean IoU of matched boxes {self.mean_iou:.4f} < {tol.min_mean_iou}")
        if self.max_score_delta is not None and not self.max_score_delta <= tol.max_score_delta:
            found.append(
                f"max |score delta| of matched boxes {self.max_score_delta:.4g} > {tol.max_score_delta}"
            )
        if (
            tol.max_box_delta is not None
            and self.max_box_delta is not None
            and not self.max_box_delta <= tol.max_box_delta
        ):
            found.append(
                f"max |coordinate delta| of matched boxes {self.max_box_delta:.4g} px > {tol.max_box_delta} px"
            )
        if self.mean_mask_iou is not None and not self.mean_mask_iou >= tol.min_mean_mask_iou:
            found.append(f"mean mask IoU of matched boxes {self.mean_mask_iou:.4f} < {tol.min_mean_mask_iou}")
        if self.max_keypoint_delta is not None and not self.max_keypoint_delta <= tol.max_keypoint_delta:
            found.append(
                f"max keypoint distance of matched boxes {self.max_keypoint_delta:.4g} px > "
                f"{tol.max_keypoint_delta} px"
            )
        return tuple(found)

    def __bool__(self) -> bool:
        return not self.failures


def _greedy_matches(iou: np.ndarray, iou_match: float) -> list[tuple[int, int]]:
    """Pairs taken highest IoU first (ties: lower ref, then lower cand index), each box used once."""
    ref_idx, cand_idx = np.nonzero(iou >= iou_match)
    best_first = np.lexsort((cand_idx, ref_idx, -iou[ref_idx, cand_idx]))
    used_ref: set[int] = set()
    used_cand: set[int] = set()
    pairs = []
    for r, c in zip(ref_idx[best_first].tolist(), cand_idx[best_first].tolist(), strict=True):
        if r not in used_ref and c not in used_cand:
            used_ref.add(r)
            used_cand.add(c)
            pairs.append((r, c))
    return pairs


@dataclass(frozen=True)
class Cutoffs:
    """The score cutoffs both sides applied: `conf_thres` and the cap of `max_det` boxes per image."""

    conf_thres: float
    max_det: int


def _cutoff_score(dets: Detections, cutoffs: Cutoffs) -> float:
    """The lowest score a box needed to be among `dets`: the threshold, or its weakest box when full."""
    if len(dets) >= cutoffs.max_det:
        return max(cutoffs.conf_thres, float(np.nanmin(dets.scores.astype(np.float64))))
    return cutoffs.conf_thres


def _at_cutoff(dets: Detections, other: Detections, cutoffs: Cutoffs | None, band: float) -> np.ndarray:
    """Which boxes of one side the other side may have cut: scoring within `band` of its cutoff."""
    if cutoffs is None or not len(dets):
        return np.zeros(len(dets), dtype=bool)
    return dets.scores.astype(np.float64) <= _cutoff_score(other, cutoffs) + band


def _pair_agrees(
    ref: Detections, cand: Detections, r: int, c: int, iou: float, tol: DetectionTolerance
) -> bool:
    """Whether one matched pair meets the per-box criteria (IoU, score and coordinate deltas)."""
    moved = float(np.abs(ref.boxes[r].astype(np.float64) - cand.boxes[c]).max())
    return (
        iou >= tol.min_mean_iou
        and abs(float(ref.scores[r]) - float(cand.scores[c])) <= tol.max_score_delta
        and (tol.max_box_delta is None or moved <= tol.max_box_delta)
    )


def _mask_ious(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """IoU of each pair of boolean masks (M, H, W); 1 where both are empty (they agree)."""
    if ref.shape != cand.shape:
        return np.zeros(len(ref))
    inter = (ref & cand).reshape(len(ref), -1).sum(axis=1)
    union = (ref | cand).reshape(len(ref), -1).sum(axis=1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def compare_detections(
    ref: Detections,
    cand: Detections,
    tol: DetectionTolerance,
    iou_match: float = 0.5,
    cutoffs: Cutoffs | None = None,
) -> DetectionMatch:
    """Match `cand`'s boxes to `ref`'s as sets: same class, IoU >= `iou_match`, highest IoU first, one
    to one, whatever the order of either side.

    With `cutoffs`, an unmatched box is left out of the matched fraction when it scores within
    `tol.max_score_delta` of the other side's cutoff (its `conf_thres`, or its weakest box when it
    holds `max_det` boxes): a score that may move by that much may fall on either side of a cutoff,
    and boxes tied at it are interchangeable. A box missing above that band still counts.
    """
    if not 0 < iou_match <= 1:
        raise UsageError(f"compare_detections iou_match must lie in (0, 1], got {iou_match} (0.5 is usual)")
    same_class = ref.classes[:, None] == cand.classes[None, :]
    iou = np.where(same_class, box_iou(ref.boxes, cand.boxes), 0.0)
    pairs = _greedy_matches(iou, iou_match)
    ref_at_cutoff = _at_cutoff(ref, cand, cutoffs, tol.max_score_delta)
    cand_at_cutoff = _at_cutoff(cand, ref, cutoffs, tol.max_score_delta)
    # two boxes at the cutoff that each side kept instead of the other's (crowded ties) can overlap
    # enough to pair up; such a pair is two interchangeable boxes, not one box that moved
    pairs = [
        (r, c)
        for r, c in pairs
        if not (ref_at_cutoff[r] and cand_at_cutoff[c] and not _pair_agrees(ref, cand, r, c, iou[r, c], tol))
    ]
    matched_ref = np.array([r for r, _ in pairs], dtype=np.int64)
    matched_cand = np.array([c for _, c in pairs], dtype=np.int64)
    unmatched_ref_idx = np.setdiff1d(np.arange(len(ref)), matched_ref)
    unmatched_cand_idx = np.setdiff1d(np.arange(len(cand)), matched_cand)
    unmatched_ref, unmatched_cand = ref.take(unmatched_ref_idx), cand.take(unmatched_cand_idx)
    ref_at_cutoff, cand_at_cutoff = ref_at_cutoff[unmatched_ref_idx], cand_at_cutoff[unmatched_cand_idx]
    larger = max(len(ref) - int(ref_at_cutoff.sum()), len(cand) - int(cand_at_cutoff.sum()))
    score_delta = np.abs(
        ref.scores[matched_ref].astype(np.float64) - cand.scores[matched_cand].astype(np.float64)
    )
    box_delta = np.abs(
        ref.boxes[matched_ref].astype(np.float64) - cand.boxes[matched_cand].astype(np.float64)
    )
    mask_iou = None
    if pairs and ref.masks is not None and cand.masks is not None:
        mask_iou = float(_mask_ious(ref.masks[matched_ref], cand.masks[matched_cand]).mean())
    keypoint_delta = None
    if pairs and ref.keypoints is not None and cand.keypoints is not None:
        ref_points, cand_points = ref.keypoints[matched_ref], cand.keypoints[matched_cand]
        if ref_points.shape == cand_points.shape:
            distance = np.hypot(*(ref_points[..., :2].astype(np.float64) - cand_points[..., :2]).T)
            keypoint_delta = float(np.nanmax(distance)) if distance.size else 0.0
        else:
            keypoint_delta = float("inf")  # another number of keypoints per box
    return DetectionMatch(
        tolerance=tol,
        num_ref=len(ref),
        num_cand=len(cand),
        pairs=tuple(pairs),
        matched_fraction=len(pairs) / larger if larger else 1.0,
        mean_iou=float(iou[matched_ref, matched_cand].mean()) if pairs else None,
        max_score_delta=float(score_delta.max()) if pairs else None,
        mean_score_delta=float(score_delta.mean()) if pairs else None,
        only_ref=unmatched_ref.take(np.flatnonzero(~ref_at_cutoff)).without_masks(),
        only_cand=unmatched_cand.take(np.flatnonzero(~cand_at_cutoff)).without_masks(),
        max_box_delta=float(box_delta.max()) if pairs else None,
        mean_mask_iou=mask_iou,
        max_keypoint_delta=keypoint_delta,
        at_cutoff_ref=tuple(unmatched_ref_idx[ref_at_cutoff].tolist()),
        at_cutoff_cand=tuple(unmatched_cand_idx[cand_at_cutoff].tolist()),
    )
