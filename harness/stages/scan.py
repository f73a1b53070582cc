"""scan: trace the model once on the first sample and list every op the exporter or TensorRT's parser
rejects, with the replacement that fixes it. Informs; never fails the run by itself."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from trt_harness.conversions.scan import scan_module
from trt_harness.harness.stages.base import (
    Stage,
    StageInput,
    StageOutput,
    recipe_fingerprint,
    torch_model,
    versions,
    weights_hash,
)
from trt_harness.models.recipe import Recipe
from trt_harness.models.results.stages import Finding, ScanDetails


def scan_recipe(recipe: Recipe, model: Any, feed: Mapping[str, np.ndarray]) -> ScanDetails:
    """The problem ops of `model` traced on `feed` (without replacements), marked fixed when the recipe
    applies the replacement that fixes them."""
    import torch  # heavy: only when a model is traced

    args = tuple(torch.from_numpy(np.asarray(feed[name])) for name in recipe.input_names)
    applied = set(recipe.export.replacements)
    findings = scan_module(model, args, recipe.export.exporter)
    return ScanDetails(tuple(_marked(f, applied) for f in findings))


def _marked(finding: Finding, applied: set[str]) -> Finding:
    fixed = finding.replacement is not None and finding.replacement in applied
    return Finding(finding.op, finding.reason, finding.replacement, finding.location, finding.count, fixed)


def scan(inp: StageInput) -> StageOutput:
    model = torch_model(inp.recipe, inp.config.weights if inp.config else None)
    details = scan_recipe(inp.recipe, model, inp.first_feed())
    unfixed = details.unfixed_ops
    reason = f"not replaced by the recipe: {', '.join(unfixed)}" if unfixed else None
    return StageOutput(details=details, reason=reason)


def scan_key(inp: StageInput) -> dict[str, Any]:
    return {
        "recipe": recipe_fingerprint(inp.recipe),
        "weights": weights_hash(inp),
        "samples": inp.artifact("samples").sha256,
        "versions": versions("torch"),
    }


STAGE = Stage("scan", "Scan for unsupported ops", scan, scan_key, runs_recipe_code=True)
