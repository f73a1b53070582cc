"""torchvision Faster R-CNN's three data-dependent stages -> the same detections in static shapes, no NonZero.

torchvision's R-CNN inference has variable-length tensors in three places, each exporting as NonZero
(TensorRT for RTX: "NonZero plugin creator ... not found"):

- `RegionProposalNetwork.filter_proposals` removes small and low-scoring proposals with
  `torch.where` and keeps what `batched_nms` (per FPN level) leaves, up to `post_nms_top_n`;
- `poolers._multiscale_roi_align` (MultiScaleRoIAlign over several levels) pools each proposal at
  the level the FPN level mapper gives it, gathering the proposals of each level with `torch.where`;
- `RoIHeads.postprocess_detections` filters the per-class boxes by score and size, `batched_nms`,
  up to `detections_per_img`.

The stand-ins, one registration patching the three:

- proposals: torchvision's own per-level top `pre_nms_top_n` (a fixed count per level: the
  smaller of it and the level's anchors, known from the shapes), size and score filters as a
  `valid` mask, and `_static_detections.padded_detections` with the level as the NMS class: exactly
  `post_nms_top_n` proposals per image, torchvision's first, then padding rows of box (0, 0, 0, 0);
- pooling: RoIAlign of every proposal at every level, each row then taken from the level the
  mapper gives it (a select, no gather by a data-dependent count). RoIAlign is per box, so the rows
  are torchvision's own; while exporting, RoIAlign is torchvision's pure-torch form (see
  `roi_align_static`), so no ONNX RoiAlign either;
- detections: torchvision's decoding, softmax and clipping of every (proposal, class) pair, the
  score threshold and the 1e-2 min size as a `valid` mask, padding proposals never valid (their
  zero width decodes to zero-width boxes, which the min size drops; the stand-in also masks them
  out by name: a real proposal is at least the RPN's `min_size` > 0 wide), and `padded_detections` for
  the final `detections_per_img` rows (box 0, score 0, label -1 past the last detection).

So the padding proposals produce nothing downstream, and the non-padded rows are torchvision's, in
its order (equal scores may come in another order once exported: see `_static_detections`).
Documented limits: the RPN's `min_size` must be > 0 (torchvision's default is 1e-3), as padding is
told from proposals by zero width; Mask and Keypoint R-CNN's own stages (mask pasting, keypoint
heatmaps) are not covered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trt_harness.conversions.replacements._registry import ReplacementFunctions, register_replacement
from trt_harness.conversions.replacements._static_detections import _exporting, padded_detections

if TYPE_CHECKING:
    import torch
    from trt_harness.conversions.replacements._context import ReplacementContext

_DETECTION = "torchvision.models.detection"
FILTER_PROPOSALS = f"{_DETECTION}.rpn.RegionProposalNetwork.filter_proposals"
MULTISCALE_ROI_ALIGN = "torchvision.ops.poolers._multiscale_roi_align"
POSTPROCESS_DETECTIONS = f"{_DETECTION}.roi_heads.RoIHeads.postprocess_detections"
# torchvision's postprocess_detections removes boxes narrower or lower than this (a literal there)
MIN_DETECTION_SIZE = 1e-2


def static_top_n_index(
    objectness: torch.Tensor, num_anchors_per_level: list[int], top_n: int
) -> torch.Tensor:
    """torchvision's `_get_top_n_idx` with a Python count per level (it traces the count as a tensor)."""
    import torch

    indices, offset = [], 0
    for level in objectness.split(num_anchors_per_level, 1):
        count = int(level.shape[1])
        indices.append(level.topk(min(top_n, count), dim=1).indices + offset)
        offset += count
    return torch.cat(indices, dim=1)


def filter_proposals(
    self: Any,
    proposals: torch.Tensor,
    objectness: torch.Tensor,
    image_shapes: list[tuple[int, int]],
    num_anchors_per_level: list[int],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Exactly `post_nms_top_n` proposals (and scores) per image, torchvision's first, then zero rows."""
    import torch

    # torchvision is loaded: only its RPN reaches this patched method
    from torchvision.ops import boxes as box_ops

    num_images = proposals.shape[0]
    objectness = objectness.detach().reshape(num_images, -1)
    top_n = int(self.pre_nms_top_n())
    top_n_index = static_top_n_index(objectness, num_anchors_per_level, top_n)
    # the level of each top-n slot is fixed: the candidates come level by level, min(top_n, anchors) each
    levels = torch.cat(
        [torch.full((min(top_n, n),), i, dtype=torch.int64) for i, n in enumerate(num_anchors_per_level)]
    )
    final_boxes, final_scores = [], []
    for index, image_shape in enumerate(image_shapes):
        boxes = box_ops.clip_boxes_to_image(proposals[index][top_n_index[index]], image_shape)
        scores = torch.sigmoid(objectness[index][top_n_index[index]])
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        valid = (widths >= self.min_size) & (heights >= self.min_size) & (scores >= self.score_thresh)
        kept = padded_detections(boxes, scores, levels, valid, self.nms_thresh, int(self.post_nms_top_n()))
        final_boxes.append(kept["boxes"])
        final_scores.append(kept["scores"])
    return final_boxes, final_scores


def roi_align_static(
    feature: torch.Tensor, rois: torch.Tensor, output_size: Any, scale: float, sampling_ratio: int
) -> torch.Tensor:
    """torchvision's `roi_align` (aligned=False, as MultiScaleRoIAlign calls it); while exporting, its
    pure-torch form (Gather and elementwise ops), also where the C++ op is loaded: that op exports as
    ONNX RoiAlign, which TensorRT for RTX 1.7.1 does not parse ("ROIAlign plugin was not found in the
    plugin registry", measured on a one-node model)."""
    import importlib

    # torchvision is loaded: only its MultiScaleRoIAlign reaches this
    from torchvision.ops import roi_align

    if not _exporting():
        return roi_align(
            feature, rois, output_size=output_size, spatial_scale=scale, sampling_ratio=sampling_ratio
        )
    # `torchvision.ops.roi_align` is the function; the module holds the pure-torch kernel, wrapped
    # in a lazy torch.compile that the TorchScript tracer cannot enter (`__wrapped__` is the function)
    module = importlib.import_module("torchvision.ops.roi_align")
    pure = getattr(module._roi_align, "__wrapped__", module._roi_align)
    height, width = (output_size, output_size) if isinstance(output_size, int) else output_size
    return pure(feature, rois, scale, height, width, sampling_ratio, False)


def multiscale_roi_align(
    x_filtered: list[torch.Tensor],
    boxes: list[torch.Tensor],
    output_size: list[int],
    sampling_ratio: int,
    scales: list[float] | None,
    mapper: Any,
) -> torch.Tensor:
    """RoIAlign of every box at every level; each row from the level `mapper` assigns it."""
    import torch

    # torchvision is loaded: only its MultiScaleRoIAlign reaches this patched function
    from torchvision.ops.poolers import _convert_to_roi_format

    if scales is None or mapper is None:
        raise ValueError("scales and mapper should not be None")  # torchvision's own check and message
    rois = _convert_to_roi_format(boxes)
    levels = mapper(boxes)
    result = None
    for level, (feature, scale) in enumerate(zip(x_filtered, scales, strict=True)):
        pooled = roi_align_static(feature, rois, output_size, scale, sampling_ratio).to(x_filtered[0].dtype)
        chosen = (levels == level)[:, None, None, None]
        result = torch.where(chosen, pooled, torch.zeros_like(pooled) if result is None else result)
    return result


def postprocess_detections(
    self: Any,
    class_logits: torch.Tensor,
    box_regression: torch.Tensor,
    proposals: list[torch.Tensor],
    image_shapes: list[tuple[int, int]],
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """torchvision's detections, each image's tensors exactly `detections_per_img` long, padded."""
    import torch

    # torchvision is loaded: only its RoIHeads reach this patched method
    from torchvision.ops import boxes as box_ops

    num_classes = class_logits.shape[-1]
    boxes_per_image = [int(p.shape[0]) for p in proposals]
    pred_boxes = self.box_coder.decode(box_regression, proposals).split(boxes_per_image, 0)
    pred_scores = torch.nn.functional.softmax(class_logits, -1).split(boxes_per_image, 0)
    all_boxes, all_scores, all_labels = [], [], []
    for boxes, scores, proposal, image_shape in zip(
        pred_boxes, pred_scores, proposals, image_shapes, strict=True
    ):
        boxes = box_ops.clip_boxes_to_image(boxes, image_shape)
        labels = torch.arange(num_classes).view(1, -1).expand_as(scores)
        # padding proposals have zero width; every real one is at least the RPN's min_size wide
        real = (proposal[:, 2] > proposal[:, 0])[:, None].expand(-1, num_classes - 1).reshape(-1)
        # background (class 0) dropped, every (proposal, class) pair a candidate, as torchvision does
        boxes, scores, labels = (
            boxes[:, 1:].reshape(-1, 4),
            scores[:, 1:].reshape(-1),
            labels[:, 1:].reshape(-1),
        )
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        large = (widths >= MIN_DETECTION_SIZE) & (heights >= MIN_DETECTION_SIZE)
        valid = real & (scores > self.score_thresh) & large
        kept = padded_detections(boxes, scores, labels, valid, self.nms_thresh, self.detections_per_img)
        all_boxes.append(kept["boxes"])
        all_scores.append(kept["scores"])
        all_labels.append(kept["labels"])
    return all_boxes, all_scores, all_labels


@register_replacement(
    "tv_rcnn_postprocess",
    targets=(FILTER_PROPOSALS, MULTISCALE_ROI_ALIGN, POSTPROCESS_DETECTIONS),
    summary="torchvision Faster R-CNN proposals, multi-level RoIAlign and post-processing -> fixed "
    "proposal and detection counts, static greedy NMS, padded rows (no NonZero)",
)
def build(context: ReplacementContext) -> ReplacementFunctions:
    def roi_align_stand_in(x_filtered: list[torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
        if len(x_filtered) == 1:  # one level: torchvision pools all boxes at once, no NonZero
            return context.untouched(MULTISCALE_ROI_ALIGN, x_filtered, *args, **kwargs)
        return multiscale_roi_align(x_filtered, *args, **kwargs)

    return {
        FILTER_PROPOSALS: filter_proposals,
        MULTISCALE_ROI_ALIGN: roi_align_stand_in,
        POSTPROCESS_DETECTIONS: postprocess_detections,
    }
