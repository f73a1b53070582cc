"""The reference: the recipe's PyTorch model in FP32, eval mode, on CUDA when available."""

from __future__ import annotations

from typing import Any

import numpy as np
from trt_harness.conversions.outputs import name_outputs
from trt_harness.harness.backends.base import Backend, register_backend
from trt_harness.models.recipe import Feed
from trt_harness.models.results.stages import IOOrder


def outputs_by_name(out: Any, output_names: tuple[str, ...]) -> dict[str, Any]:
    """Name the model's outputs, flattened as the exporter flattens them (`conversions.outputs`): a
    structure whose own names (dict keys, key paths) are the recipe's keeps them, so the recipe's
    `output_names` order is checked against them later; otherwise labelled by the recipe's names."""
    return name_outputs(out, output_names)


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
        # the declared dtypes are the model's, before the reference is widened to FP32
        self._dtypes = {name: str(value.dtype).removeprefix("torch.") for name, value in named.items()}
        return {name: value.float().cpu().numpy() for name, value in named.items()}

    def output_dtypes(self) -> dict[str, str]:
        return self._dtypes

    def deactivate_impl(self) -> None:
        del self.model
        self._torch.backends.cuda.matmul.allow_tf32, self._torch.backends.cudnn.allow_tf32 = self._tf32

    def describe(self) -> dict[str, Any]:
        torch = self._torch
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        return {"device": f"{self.device.type} ({name})", "torch": torch.__version__, "tf32": "off"}

    def io_order(self) -> IOOrder:
        return IOOrder(self.ctx.recipe.input_names, self._returned_order)
