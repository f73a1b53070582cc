"""torchvision FCOS's `postprocess_detections` -> the same detections in static shapes, no NonZero.

FCOS scores each (location, class) pair sqrt(sigmoid(class logit) * sigmoid(centerness)) and, per
level, keeps those above `score_thresh` (`torch.where`: NonZero in the export, data-dependent
guards for torch.export) before its top `topk_candidates`. The stand-in takes the top
`topk_candidates` of all scores per level (a fixed count) and marks those above `score_thresh`
valid: the valid ones are exactly torchvision's candidates (those above the threshold rank above
all others), in the same order. Box decoding (`BoxLinearCoder.decode`) and clipping are
torchvision's own calls. NMS and the cap are `_static_detections.padded_detections`: greedy NMS
written out with TopK/Gather/Where (TensorRT for RTX 1.7 cannot build ONNX NonMaxSuppression),
then the first `detections_per_img` kept.

Output: per image torchvision's dict, every tensor `detections_per_img` long; rows past the last
detection are padded (boxes 0, score 0, label -1). The non-padded rows are torchvision's output.
Documented cap: as torchvision, at most `topk_candidates` candidates per level and
`detections_per_img` detections; equal scores may come in another order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trt_harness.conversions.replacements._registry import ReplacementFunctions, register_replacement
from trt_harness.conversions.replacements._static_detections import (
    multilevel_detections,
    top_level_candidates,
)

if TYPE_CHECKING:
    import torch
    from trt_harness.conversions.replacements._context import ReplacementContext

TARGET = "torchvision.models.detection.fcos.FCOS.postprocess_detections"


def level_candidates(
    model: Any,
    regression: torch.Tensor,
    logits: torch.Tensor,
    centerness: torch.Tensor,
    anchors: torch.Tensor,
    image_shape: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boxes, scores, labels, valid) of one level: its top `topk_candidates` (location, class) pairs."""
    import torch

    scores = torch.sqrt(torch.sigmoid(logits) * torch.sigmoid(centerness)).flatten()
    return top_level_candidates(
        model, scores, logits.shape[-1], regression, anchors, image_shape, model.box_coder.decode
    )


@register_replacement(
    "tv_fcos_postprocess",
    targets=(TARGET,),
    summary="torchvision FCOS post-processing -> fixed top-k candidates, static greedy NMS, "
    "padded detections_per_img (no NonZero)",
)
def build(context: ReplacementContext) -> ReplacementFunctions:
    def postprocess_detections(
        self: Any,
        head_outputs: dict[str, list[torch.Tensor]],
        anchors: list[list[torch.Tensor]],
        image_shapes: list,
    ) -> list[dict[str, torch.Tensor]]:
        return multilevel_detections(
            self,
            head_outputs,
            ("bbox_regression", "cls_logits", "bbox_ctrness"),
            anchors,
            image_shapes,
            level_candidates,
        )

    return {TARGET: postprocess_detections}
