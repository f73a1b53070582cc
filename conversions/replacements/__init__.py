"""Torch-level op replacements: exportable stand-ins for ops that an exporter or TensorRT rejects.

Each replacement is one module here, registered with `@register_replacement`. They are patched in
only inside `applied(names)`, around the export, and restored afterwards (also on error):

    with applied(["grid_sample", "einsum"]) as record:
        torch.onnx.export(model, args, ...)
    record.calls  # which calls were rewritten where

Registered: grid_sample, einsum, einops, inverse, pad, squeeze_static, interpolate_size, and for
torchvision detectors tv_retinanet_postprocess, tv_fcos_postprocess, tv_ssd_postprocess,
tv_rcnn_postprocess.
"""

from __future__ import annotations

from trt_harness.conversions.replacements._context import (
    AppliedReplacements,
    ReplacementContext,
    ReplacementUnsupported,
)
from trt_harness.conversions.replacements._registry import (
    Replacement,
    get_replacement,
    register_replacement,
    replacement_names,
)
from trt_harness.conversions.replacements._session import applied
from trt_harness.models.results.stages import ReplacementCall

__all__ = [
    "AppliedReplacements",
    "Replacement",
    "ReplacementCall",
    "ReplacementContext",
    "ReplacementUnsupported",
    "applied",
    "get_replacement",
    "register_replacement",
    "replacement_names",
]
