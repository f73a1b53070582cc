"""TensorRT (full or for RTX) executing the built engine, only where a GPU it supports is present.

Where it can't run, the reason is recorded and the report says "built, not executed": a TensorRT
number is only ever one that was measured. Execution is a thin use of Polygraphy's `TrtRunner`
(never run on the machines this project is tested on); the behaviours relied on have contract tests
with a stand-in runner (tests/harness/test_backend_contract.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from trt_harness.conversions.outputs import Produced
from trt_harness.conversions.tensorrt_flavor import select_flavor
from trt_harness.harness.backends.base import Backend, BackendContext, register_backend
from trt_harness.harness.gpu import cuda_devices
from trt_harness.models.recipe import Feed
from trt_harness.models.results.stages import IOOrder

# tensorrt.DataType member names -> numpy dtype names (the declared outputs' vocabulary)
TRT_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
}


def cannot_execute(targets: Sequence[str]) -> str | None:
    """Why an engine built for `targets` cannot execute on this machine; None where it can."""
    flavor = select_flavor()
    if flavor is None:
        return "no TensorRT installed (pip install .[rtx] or .[gpu])"
    devices = cuda_devices()
    if not devices:
        return "no CUDA GPU on this machine"
    device = devices[0]
    if flavor.is_rtx and device.sm_tag not in targets:
        return (
            f"{flavor.display_name} {flavor.version} engine targets {', '.join(targets)}; "
            f"this GPU ({device.name}) is compute capability "
            f"{device.compute_capability[0]}.{device.compute_capability[1]}, which it does not run on"
        )
    return None


@register_backend
class TensorRTBackend(Backend):
    name = "tensorrt"
    display_name = "TensorRT"
    rank = 2
    precisions = ("fp32", "tf32", "fp16", "int8")
    needs = "engine"
    io_source = "engine (run)"

    @classmethod
    def unavailable_reason(cls, ctx: BackendContext) -> str | None:
        if select_flavor() is not None and ctx.engine_path is None:
            return "no engine (the build stage did not produce one)"
        return cannot_execute(ctx.engine.targets if ctx.engine else ())

    @classmethod
    def planned_io_order(cls, ctx: BackendContext) -> tuple[IOOrder, str] | None:
        io = ctx.engine.network_io if ctx.engine else {}
        if "inputs" not in io or "outputs" not in io:
            return None
        return IOOrder(tuple(io["inputs"]), tuple(io["outputs"])), "network (build)"

    def activate_impl(self) -> None:
        # polygraphy.backend.trt imports TensorRT: only here, where a GPU can run it
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        assert self.ctx.engine_path is not None
        self.runner = TrtRunner(EngineFromBytes(self.ctx.engine_path.read_bytes()))
        self.runner.activate()
        engine = self.runner.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        flavor = select_flavor()
        assert flavor is not None
        trt = flavor.module()
        self._io = IOOrder(
            tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT),
            tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT),
        )
        if self.ctx.recipe.declared_outputs:
            # the engine's own I/O metadata, before any sample: -1 is a dim the profile leaves open
            self.check_declared(
                {
                    name: Produced(
                        tuple(None if d < 0 else int(d) for d in engine.get_tensor_shape(name)),
                        TRT_DTYPES.get(engine.get_tensor_dtype(name).name),
                    )
                    for name in self._io.outputs
                }
            )

    def infer_impl(self, feed: Feed) -> dict[str, np.ndarray]:
        # TrtRunner returns views of host buffers it reuses on the next call; Backend.infer copies them
        return dict(self.runner.infer(feed))

    def deactivate_impl(self) -> None:
        self.runner.deactivate()

    def io_order(self) -> IOOrder:
        return self._io
