"""The static-shape tail shared by the torchvision detector replacements: class-aware NMS and a padded top-K.

torchvision ends every detector with `batched_nms(boxes, scores, labels)[:detections_per_img]` over
candidates it first filtered with `torch.where(scores > score_thresh)`: variable-length tensors,
NonZero in the graph, data-dependent guards for torch.export. Here the candidates keep a fixed count
with a `valid` mask instead, and the result has exactly `detections_per_img` rows, padded past the
last detection (box 0, score 0, label -1).

Why not ONNX NonMaxSuppression: TensorRT for RTX 1.7.1 parses it but its build fails with
"NonMaxSuppression ... has no runners that implement it" (measured on the retinanet recipe). So the
greedy NMS is written out: `detections_per_img` unrolled steps, each taking the highest-scoring
candidate still alive (TopK 1) and killing the candidates of its class whose IoU with it exceeds
`iou_threshold`. Greedy NMS visits boxes by decreasing score, so step r yields torchvision's r-th
kept box: the first `detections_per_img` kept boxes are `batched_nms(...)[:detections_per_img]`,
in the same order, with no cap on the candidates. Only Gather, TopK, Where, elementwise and
reduction ops; every shape static.

Equal scores: TopK takes either, torchvision's sort its own order; boxes tied in score
may come in another order (and, if they overlap, the other one of the two may be kept).
Outside an export the stand-ins call torchvision's `batched_nms` on the valid candidates, the very
call of the original.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    import torch

INVALID_SCORE = -1.0
PAD_LABEL = -1


def _exporting() -> bool:
    import torch

    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _iou_with(box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """IoU of one box with each of `boxes`, as torchvision's NMS kernel computes it."""
    import torch

    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    width = (torch.minimum(box[2], boxes[:, 2]) - torch.maximum(box[0], boxes[:, 0])).clamp(min=0)
    height = (torch.minimum(box[3], boxes[:, 3]) - torch.maximum(box[1], boxes[:, 1])).clamp(min=0)
    inter = width * height
    return inter / (area + areas - inter)


def greedy_nms_steps(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor,
    iou_threshold: float,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, kept) of the first `steps` boxes class-aware greedy NMS keeps, by decreasing score.

    `kept[r]` is False once no valid candidate is left; `index[r]` is then meaningless.
    Written with static shapes only, so that it traces to a TensorRT-buildable graph.
    """
    import torch

    positions = torch.arange(boxes.shape[0])
    ranked = torch.where(valid, scores, torch.full_like(scores, INVALID_SCORE))
    alive = valid
    picked, kept = [], []
    for _ in range(steps):
        # TopK over a (1, M) row: TensorRT for RTX rejects the 0-d ArgMax that argmax() exports
        contenders = torch.where(alive, ranked, torch.full_like(ranked, 2 * INVALID_SCORE))
        best = contenders[None].topk(1, dim=1).indices[0, 0]
        kept.append(alive[best])
        picked.append(best)
        overlapping = torch.logical_and(_iou_with(boxes[best], boxes) > iou_threshold, labels == labels[best])
        alive = torch.logical_and(alive, torch.logical_not(torch.logical_or(overlapping, positions == best)))
    return torch.stack(picked), torch.stack(kept)


def _kept_eager(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor,
    iou_threshold: float,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    # torchvision is loaded: only its detectors reach this (the replacements patch their classes)
    import torchvision

    index = torch.arange(boxes.shape[0])[valid]
    keep = index[torchvision.ops.batched_nms(boxes[valid], scores[valid], labels[valid], iou_threshold)][
        :steps
    ]
    missing = steps - keep.shape[0]
    picked = torch.cat([keep, keep.new_zeros(missing)])
    kept = torch.cat([torch.ones(keep.shape[0], dtype=torch.bool), torch.zeros(missing, dtype=torch.bool)])
    return picked, kept


def padded_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor,
    iou_threshold: float,
    detections_per_img: int,
) -> dict[str, torch.Tensor]:
    """torchvision's per-image detections dict, each tensor `detections_per_img` long, padded."""
    import torch

    steps = int(detections_per_img)
    nms = greedy_nms_steps if _exporting() else _kept_eager
    picked, kept = nms(boxes, scores, labels, valid, float(iou_threshold), steps)
    return {
        "boxes": torch.where(kept[:, None], boxes[picked], torch.zeros_like(boxes[picked])),
        "scores": torch.where(kept, scores[picked], torch.zeros_like(scores[picked])),
        "labels": torch.where(kept, labels[picked], torch.full_like(labels[picked], PAD_LABEL)),
    }


def top_level_candidates(
    model: Any,
    scores: torch.Tensor,
    num_classes: int,
    regression: torch.Tensor,
    anchors: torch.Tensor,
    image_shape: Any,
    decode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boxes, scores, labels, valid) of one level: its top `topk_candidates` (anchor, class) pairs.

    `scores` is the level's (anchors x classes) score matrix, flattened; torchvision's single-stage
    detectors keep those above `score_thresh` and then their top-k, which are the valid ones of this
    top-k in the same order (those above the threshold rank above all others).
    """
    import torch

    # torchvision is loaded: only a torchvision detector reaches its patched method
    from torchvision.ops import boxes as box_ops

    scores, flat_index = scores.topk(min(int(model.topk_candidates), int(scores.shape[0])))
    anchor_index = torch.div(flat_index, num_classes, rounding_mode="floor")
    boxes = box_ops.clip_boxes_to_image(decode(regression[anchor_index], anchors[anchor_index]), image_shape)
    return boxes, scores, flat_index % num_classes, scores > model.score_thresh


def multilevel_detections(
    model: Any,
    head_outputs: dict[str, list[torch.Tensor]],
    head_keys: tuple[str, ...],
    anchors: list[list[torch.Tensor]],
    image_shapes: list,
    level_candidates: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
) -> list[dict[str, torch.Tensor]]:
    """torchvision's single-stage `postprocess_detections` in static form: per image, each level's
    `level_candidates(model, *head_outputs[key][level][image] for key in head_keys, anchors, shape)`,
    concatenated, then `padded_detections`."""
    import torch

    detections = []
    for index, image_shape in enumerate(image_shapes):
        levels = [
            level_candidates(
                model, *(head_outputs[key][level][index] for key in head_keys), level_anchors, image_shape
            )
            for level, level_anchors in enumerate(anchors[index])
        ]
        boxes, scores, labels, valid = (torch.cat(part) for part in zip(*levels, strict=True))
        detections.append(
            padded_detections(boxes, scores, labels, valid, model.nms_thresh, model.detections_per_img)
        )
    return detections
