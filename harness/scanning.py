"""Which ops of a recipe's model the exporter or TensorRT will reject, and which replacement fixes each."""

from __future__ import annotations

from typing import Any

from models.recipe import Recipe


def scan_recipe(recipe: Recipe, model: Any = None) -> list[Any]:
    """Trace the model on the first sample (without replacements) and list the problem ops found."""
    import torch

    from conversions.scan import scan_module

    model = model if model is not None else recipe.build_model(None)
    feed = recipe.sample_inputs()[0]
    args = tuple(torch.from_numpy(feed[name]) for name in recipe.input_names)
    return scan_module(model, args, recipe.export.exporter)


def findings_to_json(recipe: Recipe, findings: list[Any]) -> list[dict[str, Any]]:
    applied = set(recipe.export.replacements)
    return [{**f.to_json(), "fixed_by_recipe": f.replacement in applied} for f in findings]
