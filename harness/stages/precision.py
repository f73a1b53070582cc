"""precision: FP16 and INT8 (Q/DQ) variants of the final model. Strongly typed TensorRT reads precision
from them, and ONNX Runtime runs exactly what TensorRT would consume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trt_harness.conversions.onnx_files import onnx_artifact
from trt_harness.conversions.precision import fp16_onnx, fp16_range_check, int8_qdq_onnx
from trt_harness.harness.stages.base import Stage, StageInput, StageOutput, StageSkipped, versions
from trt_harness.models.results.stages import PrecisionDetails, RangeReport

REDUCED = ("fp16", "int8")


def precision(inp: StageInput) -> StageOutput:
    reduced = [p for p in inp.precisions if p in REDUCED]
    if not reduced:
        raise StageSkipped("no reduced precision requested (FP32/TF32 run from the final model)")
    source = inp.final_onnx().verified(inp.run_dir)
    feeds = list(inp.samples())
    auto_block_list = inp.config.fp16_auto_block_list if inp.config else True
    artifacts, variants = {}, {}
    ranges: RangeReport | None = None
    for name in reduced:
        target = inp.run_dir / f"{Path(source).stem}.{name}.onnx"
        if name == "fp16":
            ranges = fp16_range_check(source, feeds)
            block_list = (*(ranges.block_list if auto_block_list else ()), *_recipe_block_list(inp))
            variant = fp16_onnx(source, target, block_list=tuple(dict.fromkeys(block_list)))
        else:
            variant = int8_qdq_onnx(
                source, target, calibration_feeds=feeds, exclude_nodes=_recipe_int8_exclude_nodes(inp)
            )
        artifacts[f"onnx_{name}"] = onnx_artifact(inp.run_dir, target.name)
        variants[name] = variant
    return StageOutput(artifacts, PrecisionDetails(variants, ranges))


def _recipe_block_list(inp: StageInput) -> tuple[str, ...]:
    return inp.config.recipe.fp16_block_list if inp.config else ()


def _recipe_int8_exclude_nodes(inp: StageInput) -> tuple[str, ...]:
    return inp.config.recipe.int8_exclude_nodes if inp.config else ()


def precision_key(inp: StageInput) -> dict[str, Any]:
    return {
        "onnx": inp.final_onnx().sha256,
        "precisions": [p for p in inp.precisions if p in REDUCED],
        "samples": inp.artifact("samples").sha256,
        "fp16_auto_block_list": inp.config.fp16_auto_block_list if inp.config else True,
        "fp16_block_list": list(_recipe_block_list(inp)),
        "versions": versions("onnx", "onnxruntime", "onnx-graphsurgeon"),
        # only when set, so that the keys of runs without it stay what they were
        **({"int8_exclude_nodes": list(excluded)} if (excluded := _recipe_int8_exclude_nodes(inp)) else {}),
    }


STAGE = Stage("precision", "FP16/INT8 variants", precision, precision_key)
