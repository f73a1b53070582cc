"""build: one TensorRT engine per precision through Polygraphy's loaders. The first precision failing
fails the stage; a later one refused by the builder (e.g. INT8 on a flavor without it) is recorded with
TensorRT's message, and the others still build.

A failed build fails the run (exit 4) but does not stop it (`keep_going`): Torch and ONNX Runtime
still run and are compared, so a model TensorRT refuses still gets its Torch-vs-ORT numbers. The
refusal names the node the parser stopped at, read from the parser's own message."""

from __future__ import annotations

import re
from typing import Any

from trt_harness.conversions.tensorrt_build import TensorRTBuildFailed, engine_from_onnx
from trt_harness.conversions.tensorrt_flavor import select_flavor
from trt_harness.harness.gpu import cuda_devices
from trt_harness.harness.stages.base import Stage, StageFailed, StageInput, StageOutput, StageSkipped
from trt_harness.models.core.artifacts import Artifact
from trt_harness.models.core.serde import to_json
from trt_harness.models.results.stages import BuildDetails, EngineRecord, TensorRTFlavor

# TensorRT's ONNX parser: "In node 11 with name: /NonZero and operator: NonZero (importNonZero): ..."
_FAILING_NODE = re.compile(r"In node -?\d+ with name: (?P<node>\S*) and operator: (?P<op>[\w.]+)")
# and, before it, "While parsing node number 11 [NonZero -> "/NonZero_output_0"]:"
_PARSING_NODE = re.compile(r"While parsing node number -?\d+ \[(?P<op>[\w.]+) -> ")


def failing_node(messages: list[str]) -> tuple[str | None, str | None]:
    """The node (name, op type) the parser's messages say it refused; None for what they do not name."""
    for message in messages:
        found = _FAILING_NODE.search(message)
        if found:
            return found["node"] or None, found["op"]
    for message in messages:
        found = _PARSING_NODE.search(message)
        if found:
            return None, found["op"]
    return None, None


def _refusal(precision: str, e: TensorRTBuildFailed, reason: str | None = None) -> EngineRecord:
    node, op = failing_node(e.messages)
    return EngineRecord(
        precision,
        built=False,
        phase=e.phase,
        messages=tuple(e.messages),
        reason=reason,
        failing_node=node,
        failing_op=op,
        warnings=e.warnings,
    )


def _failure_reason(e: TensorRTBuildFailed, refusal: EngineRecord, flavor: TensorRTFlavor) -> str:
    """The stage's one line: which node the parser refused, and the parser's message about it."""
    if refusal.failing_node is None:
        return str(e)
    naming = next((m for m in e.messages if _FAILING_NODE.search(m)), e.messages[-1])
    return (
        f"{flavor.display_name} {flavor.version} {e.phase} failed at node '{refusal.failing_node}' "
        f"({refusal.failing_op}): {naming}"
    )


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
            if index == 0:
                refusal = _refusal(precision, e)
                raise StageFailed(
                    _failure_reason(e, refusal, flavor), BuildDetails(flavor, {precision: refusal})
                ) from e
            reason = f"{precision.upper()} not supported by {flavor.display_name} {flavor.version}: " + (
                "; ".join(e.messages[-3:]) or "no message"
            )
            engines[precision] = _refusal(precision, e, reason)
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


STAGE = Stage("build", "TensorRT build", build, build_key, keep_going=True)
