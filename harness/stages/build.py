"""build: one TensorRT engine per precision through Polygraphy's loaders. The first precision failing
fails the stage; a later one refused by the builder (e.g. INT8 on a flavor without it) is recorded with
TensorRT's message, and the others still build."""

from __future__ import annotations

from typing import Any

from trt_harness.conversions.tensorrt_build import TensorRTBuildFailed, engine_from_onnx
from trt_harness.conversions.tensorrt_flavor import select_flavor
from trt_harness.harness.gpu import cuda_devices
from trt_harness.harness.stages.base import Stage, StageFailed, StageInput, StageOutput, StageSkipped
from trt_harness.models.core.artifacts import Artifact
from trt_harness.models.core.serde import to_json
from trt_harness.models.results.stages import BuildDetails, EngineRecord


def build(inp: StageInput) -> StageOutput:
    flavor = select_flavor()
    if flavor is None:
        raise StageSkipped("no TensorRT installed: `pip install .[rtx]` builds on any machine")
    recipe = inp.recipe
    engines: dict[str, EngineRecord] = {}
    artifacts: dict[str, Artifact] = {}
    feeds = list(inp.samples()) if not flavor.strongly_typed else []  # INT8 calibration by builder flags
    for index, precision in enumerate(inp.precisions):
        # builder-flag TensorRT builds every precision from the FP32 model
        source = inp.onnx_for(precision) if flavor.strongly_typed else inp.final_onnx()
        try:
            engine = engine_from_onnx(
                source.verified(inp.run_dir), inp.run_dir, recipe.build, recipe.shape_ranges, precision, feeds
            )
        except TensorRTBuildFailed as e:
            refusal = EngineRecord(precision, built=False, phase=e.phase, messages=tuple(e.messages))
            if index == 0:
                raise StageFailed(str(e), BuildDetails(flavor, {precision: refusal})) from e
            reason = f"{precision.upper()} not supported by {flavor.display_name} {flavor.version}: " + (
                "; ".join(e.messages[-3:]) or "no message"
            )
            engines[precision] = EngineRecord(
                precision, built=False, phase=e.phase, messages=tuple(e.messages), reason=reason
            )
            continue
        assert engine.engine is not None
        artifacts[f"engine_{precision}"] = Artifact.of_file(inp.run_dir, engine.engine)
        engines[precision] = engine
    return StageOutput(artifacts, BuildDetails(flavor, engines))


def build_key(inp: StageInput) -> dict[str, Any]:
    flavor = select_flavor()
    recipe = inp.recipe
    return {
        "onnx": {p: inp.onnx_for(p).sha256 for p in inp.precisions},
        "precisions": list(inp.precisions),
        "build": to_json(recipe.build),
        "shape_ranges": to_json(recipe.shape_ranges),
        "flavor": to_json(flavor),
        # full TensorRT builds for the GPU present; TensorRT for RTX for the recipe's list
        "gpus": [] if flavor is None or flavor.is_rtx else [d.name for d in cuda_devices()],
        # builder-flag INT8 calibrates on the samples
        "samples": None if flavor is None or flavor.strongly_typed else inp.artifact("samples").sha256,
    }


STAGE = Stage("build", "TensorRT build", build, build_key)
