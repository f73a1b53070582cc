"""Import torchvision, also where its C++ ops cannot load (a CUDA-only wheel next to the CPU torch).

The torchvision 0.28.0 wheel that pairs with torch 2.13.0 is a CUDA build: against the CPU torch its
`_C.so` fails to load (it needs libtorch_cuda), and `import torchvision` then dies registering a
fake kernel for `torchvision::nms`, an op that was never defined. Its detectors need only `nms` of
those ops (RoIAlign has a pure-torch fallback that torchvision itself picks when `_C` is missing),
so `import_torchvision()` defines `torchvision::nms`/`qnms` under torchvision's C++ schemas with a
CPU kernel in torch before the import. A torchvision whose ops load is imported untouched.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_LIBRARY: Any = None  # the torch.library.Library that owns the fallback ops; must stay alive


def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS as torchvision's CPU kernel computes it: indices kept, by decreasing score.

    A box is suppressed by a kept box of higher score whose IoU with it exceeds `iou_threshold`.
    """
    import numpy as np
    import torch

    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order].detach().to(torch.float32).numpy()
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(b), dtype=bool)
    kept = []
    for i in range(len(b)):
        if suppressed[i]:
            continue
        kept.append(i)
        rest = slice(i + 1, None)
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 for empty boxes: NaN, never > t
            iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest] |= iou > iou_threshold
    return order[torch.as_tensor(kept, dtype=torch.int64)]


def _fallback_ops_defined() -> None:
    """Stands in for torchvision's `_assert_has_ops` (a named function: TorchScript compiles it)."""


def _define_fallback_ops() -> None:
    global _LIBRARY
    import torch

    if _LIBRARY is not None:
        return
    library = torch.library.Library("torchvision", "DEF")
    # torchvision's own schemas (csrc/ops/nms.cpp), so its fake kernels and ONNX symbolics attach
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.impl("nms", nms_reference, "CPU")
    _LIBRARY = library


def _purge_partial_import() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def import_torchvision() -> ModuleType:
    """`torchvision`, with a CPU `torchvision::nms` defined first where its C++ ops do not load."""
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    try:
        import torchvision

        return torchvision
    except RuntimeError as error:
        if "torchvision::nms" not in str(error):
            raise
    _purge_partial_import()
    _define_fallback_ops()
    import torchvision
    import torchvision.ops.boxes

    # nms asserts that the C++ extension loaded; the op it calls is now the fallback defined above
    torchvision.ops.boxes._assert_has_ops = _fallback_ops_defined
    return torchvision
