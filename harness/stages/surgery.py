"""surgery: the recipe's onnx-graphsurgeon passes, each proven by ONNX Runtime to keep every output."""

from __future__ import annotations

from itertools import islice
from typing import Any

import onnxruntime
from trt_harness.conversions.onnx_files import onnx_artifact
from trt_harness.conversions.onnx_passes.driver import run_passes
from trt_harness.conversions.ort_session import OrtSettings
from trt_harness.harness.stages.base import Stage, StageInput, StageOutput, StageSkipped, versions
from trt_harness.models.results.stages import SurgeryDetails

FINAL_FILE = "model.final.onnx"
CHECK_SAMPLES = 2  # samples each pass is checked on


def surgery(inp: StageInput) -> StageOutput:
    recipe = inp.recipe
    if not recipe.surgery_passes:
        raise StageSkipped("the recipe lists no surgery passes")
    # onnx-graphsurgeon's constant folding opens ORT sessions of its own; their optimizer warnings are noise
    onnxruntime.set_default_logger_severity(3)
    source = inp.artifact("onnx").verified(inp.run_dir)
    reports = run_passes(
        source,
        inp.run_dir / FINAL_FILE,
        recipe.surgery_passes,
        static_dims=recipe.export.static_dims,
        check_feeds=list(islice(inp.samples(), CHECK_SAMPLES)),
        # each pass is checked on the graph as written (ORT's rewrites off, ORT's default threads)...
        check_settings=OrtSettings.as_written(threads=None),
        # ...and the final model must load in the session the run stage will create
        run_settings=OrtSettings.for_run(recipe.ort_optimization),
    )
    return StageOutput({"onnx_final": onnx_artifact(inp.run_dir, FINAL_FILE)}, SurgeryDetails(tuple(reports)))


def surgery_key(inp: StageInput) -> dict[str, Any]:
    recipe = inp.recipe
    return {
        "onnx": inp.artifact("onnx").sha256,
        "passes": list(recipe.surgery_passes),
        "ort_optimization": recipe.ort_optimization,
        "static_dims": {k: {str(a): n for a, n in v.items()} for k, v in recipe.export.static_dims.items()},
        "samples": inp.artifact("samples").sha256,
        "versions": versions("onnx", "onnx-graphsurgeon", "onnxruntime"),
    }


STAGE = Stage("surgery", "ONNX graph surgery", surgery, surgery_key)
