"""Recipes by name: one module per recipe in this package, each registering its factory with
`@register_recipe` (the registered name is the module's name).

A factory takes keyword parameters (e.g. `image_size`) so a test or a user can derive a smaller
variant (`-p image_size=320`) without a second recipe file. Parameters are checked against the
factory's signature before it runs: an unknown name, or a value of another type than the
parameter's default, is a usage error naming the parameter.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from trt_harness.models.core.errors import UsageError
from trt_harness.models.core.registry import Registry
from trt_harness.models.recipe import FIELD_PARAMS, ORT_OPTIMIZATIONS, Recipe

RecipeFactory = Callable[..., Recipe]

RECIPES: Registry[RecipeFactory] = Registry(
    "recipe", package="trt_harness.models.recipes", hint="one module per recipe in models/recipes/"
)


def register_recipe(factory: RecipeFactory) -> RecipeFactory:
    """Make a recipe visible to the CLI and nox under its module's name."""
    return RECIPES.register(factory.__module__.rsplit(".", 1)[-1], factory)


def recipe_names() -> list[str]:
    return RECIPES.names()


def _check_params(name: str, factory: RecipeFactory, params: dict[str, Any]) -> None:
    signature = inspect.signature(factory)
    accepted = {
        p.name: p
        for p in signature.parameters.values()
        if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD
    }
    for key, value in params.items():
        parameter = accepted.get(key)
        if parameter is None:
            raise UsageError(
                f"recipe '{name}' has no parameter '{key}'; its parameters: {', '.join(accepted) or 'none'}"
            )
        default = parameter.default
        if default is inspect.Parameter.empty or default is None:
            continue
        expected = float if isinstance(default, float) else type(default)
        if isinstance(default, float) and isinstance(value, int):
            continue
        if not isinstance(value, expected) or isinstance(value, bool) != isinstance(default, bool):
            raise UsageError(
                f"recipe '{name}' parameter '{key}' must be {expected.__name__} (default {default!r}), "
                f"got {value!r}"
            )


def get_recipe(name: str, **params: Any) -> Recipe:
    factory = RECIPES.get(name)
    # recipe fields any recipe takes as a parameter (e.g. `-p ort_optimization=basic`)
    fields = {key: params[key] for key in FIELD_PARAMS if key in params}
    if fields.get("ort_optimization", "all") not in ORT_OPTIMIZATIONS:
        raise UsageError(
            f"ort_optimization={fields['ort_optimization']!r}: expected one of {', '.join(ORT_OPTIMIZATIONS)}"
        )
    own = {key: value for key, value in params.items() if key not in fields}
    _check_params(name, factory, own)
    try:
        recipe = factory(**own)
    except (ValueError, UsageError) as e:
        raise UsageError(f"recipe '{name}' parameters {own}: {e}") from e
    return dataclasses.replace(recipe, **fields, params={**recipe.params, **params})


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """Parse `key=value` recipe parameters; values are read as int, float or str."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"recipe parameter '{pair}' must look like key=value (e.g. image_size=320)")
        value: Any = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        params[key] = value
    return params
