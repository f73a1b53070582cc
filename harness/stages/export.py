"""export: Torch -> ONNX with the recipe's exporter and its op replacements (swapped in for the export
only), `onnx.checker`, and input/output names checked against the recipe."""

from __future__ import annotations

import dataclasses
from typing import Any

import onnx
from trt_harness.conversions.export import ExportFailed, onnx_from_torch
from trt_harness.conversions.module_map import module_map_of
from trt_harness.conversions.onnx_files import onnx_artifact, op_counts
from trt_harness.harness.stages.base import (
    Stage,
    StageFailed,
    StageInput,
    StageOutput,
    recipe_fingerprint,
    torch_model,
    versions,
    weights_hash,
)
from trt_harness.models.core.artifacts import Artifact
from trt_harness.models.results.localize import MODULE_MAP_FILE, save_module_map

ONNX_FILE = "model.onnx"


def export(inp: StageInput) -> StageOutput:
    model = torch_model(inp.recipe, inp.config.weights if inp.config else None)
    try:
        details = onnx_from_torch(model, inp.recipe, inp.first_feed(), inp.run_dir / ONNX_FILE)
    except ExportFailed as e:
        raise StageFailed(str(e)) from e
    proto = onnx.load(str(inp.run_dir / ONNX_FILE), load_external_data=False)
    counts = op_counts(proto)
    # which Torch module each tensor comes from, for `harness localize`
    save_module_map(module_map_of(proto, model, details.exporter, ONNX_FILE), inp.run_dir / MODULE_MAP_FILE)
    return StageOutput(
        {
            "onnx": onnx_artifact(inp.run_dir, ONNX_FILE),
            "module_map": Artifact.of_file(inp.run_dir, MODULE_MAP_FILE),
        },
        dataclasses.replace(details, op_counts=counts),
    )


def export_key(inp: StageInput) -> dict[str, Any]:
    return {
        "recipe": recipe_fingerprint(inp.recipe),
        "declared_outputs": [repr(o) for o in inp.recipe.outputs],  # what the graph is checked against
        "weights": weights_hash(inp),
        "samples": inp.artifact("samples").sha256,
        "versions": versions("torch", "onnx", "onnxscript"),
    }


STAGE = Stage("export", "Torch -> ONNX", export, export_key, runs_recipe_code=True)
