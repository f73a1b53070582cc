"""torchvision SSD/SSDlite's `postprocess_detections` -> the same detections in static shapes, no NonZero.

SSD scores every default box with a softmax over the classes (0 is background) and, per class
1..C-1, keeps the boxes above `score_thresh` (boolean indexing: NonZero in the export,
data-dependent guards for torch.export) before its top `topk_candidates`. The stand-in takes, per
class, the top `topk_candidates` of all boxes (one TopK over the (C-1, boxes) score matrix, a fixed
count) and marks those above `score_thresh` valid: the valid ones are exactly torchvision's
candidates, class by class in the same order. Decoding and clipping are torchvision's own calls,
before the selection as there. NMS and the cap are `_static_detections.padded_detections`: greedy
NMS written out with TopK/Gather/Where (TensorRT for RTX 1.7 cannot build ONNX
NonMaxSuppression), then the first `detections_per_img` kept.

Output: per image torchvision's dict, every tensor `detections_per_img` long; rows past the last
detection are padded (boxes 0, score 0, label -1). The non-padded rows are torchvision's output.
Documented cap: as torchvision, at most `topk_candidates` candidates per class and
`detections_per_img` detections; equal scores may come in another order. The static graph carries
(C-1) x `topk_candidates` candidates (27,000 for SSDlite320 on COCO) through every NMS step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trt_harness.conversions.replacements._registry import ReplacementFunctions, register_replacement
from trt_harness.conversions.replacements._static_detections import padded_detections

if TYPE_CHECKING:
    import torch
    from trt_harness.conversions.replacements._context import ReplacementContext

TARGET = "torchvision.models.detection.ssd.SSD.postprocess_detections"


def class_candidates(
    model: Any, boxes: torch.Tensor, scores: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boxes, scores, labels, valid): per foreground class its top `topk_candidates` boxes, class by class."""
    import torch

    num_boxes, num_classes = scores.shape
    k = min(int(model.topk_candidates), int(num_boxes))
    class_scores, box_index = scores[:, 1:].t().topk(k, dim=1)
    labels = torch.arange(1, num_classes, device=scores.device)[:, None].expand(-1, k)
    class_scores = class_scores.flatten()
    return boxes[box_index.flatten()], class_scores, labels.flatten(), class_scores > model.score_thresh


@register_replacement(
    "tv_ssd_postprocess",
    targets=(TARGET,),
    summary="torchvision SSD/SSDlite post-processing -> fixed per-class top-k candidates, static greedy "
    "NMS, padded detections_per_img (no NonZero)",
)
def build(context: ReplacementContext) -> ReplacementFunctions:
    def postprocess_detections(
        self: Any,
        head_outputs: dict[str, torch.Tensor],
        image_anchors: list[torch.Tensor],
        image_shapes: list,
    ) -> list[dict[str, torch.Tensor]]:
        import torch

        # torchvision is loaded: only a torchvision detector reaches its patched method
        from torchvision.ops import boxes as box_ops

        pred_scores = torch.nn.functional.softmax(head_outputs["cls_logits"], dim=-1)
        detections = []
        for regression, scores, anchors, image_shape in zip(
            head_outputs["bbox_regression"], pred_scores, image_anchors, image_shapes, strict=True
        ):
            boxes = box_ops.clip_boxes_to_image(
                self.box_coder.decode_single(regression, anchors), image_shape
            )
            candidates = class_candidates(self, boxes, scores)
            detections.append(padded_detections(*candidates, self.nms_thresh, self.detections_per_img))
        return detections

    return {TARGET: postprocess_detections}
