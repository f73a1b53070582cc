"""TensorRT (full or for RTX) executing the built engine, only where a GPU it supports is present.

Where it can't run, the reason is recorded and the report says "built, not executed": a TensorRT
number is only ever one that was measured.
"""

from __future__ import annotations

import numpy as np

from conversions.tensorrt_flavor import select_flavor
from harness.backends.base import Backend, BackendContext, IOOrder, register_backend
from harness.gpu import cuda_devices
from models.recipe import Feed


@register_backend
class TensorRTBackend(Backend):
    name = "tensorrt"
    display_name = "TensorRT"
    rank = 2

    @classmethod
    def unavailable_reason(cls, ctx: BackendContext) -> str | None:
        flavor = select_flavor()
        if flavor is None:
            return "no TensorRT installed (pip install .[rtx] or .[gpu])"
        if ctx.engine_path is None:
            return "no engine (the build stage did not produce one)"
        devices = cuda_devices()
        if not devices:
            return "no CUDA GPU on this machine"
        device = devices[0]
        if flavor.is_rtx and device.sm_tag not in ctx.engine_targets:
            return (
                f"{flavor.display_name} {flavor.version} engine targets {', '.join(ctx.engine_targets)}; "
                f"this GPU ({device.name}) is compute capability "
                f"{device.compute_capability[0]}.{device.compute_capability[1]}, which it does not run on"
            )
        return None

    def activate_impl(self) -> None:
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        self.runner = TrtRunner(EngineFromBytes(self.ctx.engine_path.read_bytes()))
        self.runner.activate()
        engine = self.runner.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        trt = select_flavor().module()
        self._io = IOOrder(
            tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT),
            tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT),
        )

    def infer_impl(self, feed: Feed) -> dict[str, np.ndarray]:
        outputs = self.runner.infer(feed)
        return {name: np.asarray(value) for name, value in outputs.items()}

    def deactivate_impl(self) -> None:
        self.runner.deactivate()

    def io_order(self) -> IOOrder:
        return self._io
