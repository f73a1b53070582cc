"""The TensorRT side of the layer-wise comparison: the marked builds and, where it can execute, the curve.

The mapped module outputs are marked in ahead-of-time builds of the final ONNX
(`conversions.tensorrt_marking`); the Torch-vs-TensorRT curve runs the output-marked engine through
Polygraphy's `TrtRunner`, only where a GPU the engine runs on exists (`backends.tensorrt.cannot_execute`).
Elsewhere the record says why and holds no TensorRT error: only the layer counts the builds measured.

`TrtRunner.infer` returns an OrderedDict of views of host buffers that the runner reuses on its next
call, in the engine's order: `TrtIntermediates.values` copies each output by name before returning.
The contract is tested with a stand-in runner (tests/harness/test_localize_tensorrt.py), TensorRT
never executing on the machines this project is tested on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from trt_harness.conversions.tensorrt_flavor import select_flavor
from trt_harness.conversions.tensorrt_marking import build_marked
from trt_harness.harness.backends.tensorrt import cannot_execute
from trt_harness.harness.localize import layer_curve
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.recipe import BuildOptions, Feed, ShapeRange, Tolerance
from trt_harness.models.results.localize import MarkedBuild, ModuleMap, TensorRTMarking

if TYPE_CHECKING:
    import torch

CANDIDATE = "tensorrt"


class TrtIntermediates:
    """The marked tensors of one engine, per feed, through Polygraphy's `TrtRunner` (a context manager)."""

    candidate = CANDIDATE

    def __init__(self, engine_path: Path, outputs: Sequence[str]) -> None:
        self.engine_path = engine_path
        self.outputs = tuple(outputs)  # the engine's outputs by name, as its build recorded them
        self.runner: Any = None

    def provides(self, tensor: str) -> bool:
        return tensor in self.outputs

    def __enter__(self) -> TrtIntermediates:
        # imports TensorRT: only where it executes (select_flavor first: Polygraphy picks its module)
        select_flavor()
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        self.runner = TrtRunner(EngineFromBytes(self.engine_path.read_bytes()))
        self.runner.activate()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.runner is not None:
            self.runner.deactivate()
            self.runner = None

    def values(self, tensors: Sequence[str], feed: Feed) -> dict[str, np.ndarray]:
        if self.runner is None:
            raise HarnessError(f"{self.engine_path.name}: TrtIntermediates used outside its `with` block")
        returned = self.runner.infer(dict(feed))
        missing = [t for t in tensors if t not in returned]
        if missing:
            raise HarnessError(
                f"{self.engine_path.name} returned no output {missing} (it returned {list(returned)}); "
                "rebuild it with `harness localize --tensorrt`"
            )
        # by name (the engine's order is not the request's) and copied (the runner reuses its buffers)
        return {t: np.array(returned[t], copy=True) for t in tensors}


def _runnable(marking: TensorRTMarking) -> MarkedBuild | None:
    build = marking.build("output")
    return build if build is not None and build.built and build.engine else None


def tensorrt_side(
    model: torch.nn.Module,
    module_map: ModuleMap,
    onnx_path: Path,
    run_dir: Path,
    feeds: Sequence[tuple[int, Feed]],
    *,
    options: BuildOptions,
    shape_ranges: Mapping[str, ShapeRange],
    input_names: Sequence[str],
    output_names: Sequence[str],
    output: str,
    tolerance: Tolerance,
) -> TensorRTMarking:
    """The marked builds of the final FP32 `onnx_path` (into `run_dir`) and, where the output-marked
    engine can execute, Torch against it layer by layer; else `not_executed` says why."""
    import dataclasses

    tensors = [b.output for b in module_map.modules if b.output]
    marking = build_marked(onnx_path, run_dir, options, shape_ranges, tensors)
    if marking.not_built is not None:
        return dataclasses.replace(marking, not_executed=f"not built: {marking.not_built}")
    build = _runnable(marking)
    if build is None:
        return dataclasses.replace(marking, not_executed="the output-marked engine was not built")
    reason = cannot_execute(marking.targets)
    if reason is not None:
        return dataclasses.replace(marking, not_executed=reason)
    with TrtIntermediates(run_dir / str(build.engine), build.network_outputs) as intermediates:
        curve = layer_curve(
            model,
            module_map,
            onnx_path,
            feeds,
            input_names=input_names,
            output_names=output_names,
            output=output,
            tolerance=tolerance,
            precision="fp32",
            intermediates=intermediates,
        )
    return dataclasses.replace(marking, curve=curve)
