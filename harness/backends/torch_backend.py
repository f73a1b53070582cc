"""The reference: the recipe's PyTorch model in FP32, eval mode, on CUDA when available."""

from __future__ import annotations

from typing import Any

import numpy as np
from trt_harness.harness.backends.base import Backend, register_backend
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.recipe import Feed
from trt_harness.models.results.stages import IOOrder


def outputs_by_name(out: Any, output_names: tuple[str, ...]) -> dict[str, Any]:
    """Name the model's outputs. A dict keeps its own keys (so the recipe's `output_names` order is
    checked against them later); a tuple or single tensor is labelled by the recipe's names."""
    if isinstance(out, dict):
        return dict(out)
    items = out if isinstance(out, (tuple, list)) else (out,)
    if len(items) != len(output_names):
        raise HarnessError(
            f"the model returned {len(items)} outputs but the recipe names {len(output_names)}: {list(output_names)}"
        )
    return dict(zip(output_names, items, strict=True))


@register_backend
class TorchBackend(Backend):
    name = "torch"
    display_name = "Torch"
    rank = 0
    precisions = ("fp32",)
    needs = "torch"
    reference = True
    io_source = "returned order"

    def activate_impl(self) -> None:
        import torch

        self._torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        # the reference must be FP32: PyTorch lets cuDNN convolutions use TF32 on Ampere and newer
        self._tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        self.model = self.ctx.torch_model().to(self.device).eval()
        self._returned_order: tuple[str, ...] = ()

    def infer_impl(self, feed: Feed) -> dict[str, np.ndarray]:
        torch = self._torch
        args = [torch.from_numpy(feed[name]).to(self.device) for name in self.ctx.recipe.input_names]
        with torch.inference_mode():
            named = outputs_by_name(self.model(*args), self.ctx.recipe.output_names)
        self._returned_order = tuple(named)
        return {name: value.float().cpu().numpy() for name, value in named.items()}

    def deactivate_impl(self) -> None:
        del self.model
        self._torch.backends.cuda.matmul.allow_tf32, self._torch.backends.cudnn.allow_tf32 = self._tf32

    def describe(self) -> dict[str, Any]:
        torch = self._torch
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        return {"device": f"{self.device.type} ({name})", "torch": torch.__version__, "tf32": "off"}

    def io_order(self) -> IOOrder:
        return IOOrder(self.ctx.recipe.input_names, self._returned_order)
