"""ONNX Runtime on the final ONNX model: CUDA provider when available, else CPU."""

from __future__ import annotations

import numpy as np
import onnxruntime
from trt_harness.conversions.ort_session import OrtSettings, create_session
from trt_harness.harness.backends.base import Backend, BackendContext, register_backend
from trt_harness.models.recipe import Feed
from trt_harness.models.results.stages import IOOrder


@register_backend
class OnnxRuntimeBackend(Backend):
    name = "onnxrt"
    display_name = "ORT"
    rank = 1
    # ORT runs the FP16 and Q/DQ models TensorRT consumes; TF32 changes nothing on its CPU kernels
    precisions = ("fp32", "fp16", "int8")
    needs = "onnx"
    io_source = "session (run)"

    @classmethod
    def unavailable_reason(cls, ctx: BackendContext) -> str | None:
        return None if ctx.onnx_path is not None else "no ONNX model (the export stage did not produce one)"

    def activate_impl(self) -> None:
        # the same settings the surgery stage proved the final model loads with
        self.settings = OrtSettings.for_run(self.ctx.recipe.ort_optimization)
        self.session = create_session(
            self.ctx.onnx_path, self.settings, f"the ONNX model {self.ctx.onnx_path}"
        )
        self.providers = tuple(self.session.get_providers())
        self._output_names = [o.name for o in self.session.get_outputs()]
        self._io = IOOrder(tuple(i.name for i in self.session.get_inputs()), tuple(self._output_names))

    def infer_impl(self, feed: Feed) -> dict[str, np.ndarray]:
        values = self.session.run(self._output_names, feed)
        return dict(zip(self._output_names, values, strict=True))

    def deactivate_impl(self) -> None:
        del self.session

    def describe(self) -> dict[str, str]:
        return {
            "providers": ", ".join(self.providers),
            "onnxruntime": onnxruntime.__version__,
            "graph_optimization": self.settings.optimization,
        }

    def io_order(self) -> IOOrder:
        return self._io
