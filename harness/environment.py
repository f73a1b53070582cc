"""Versions of everything that can change a number, recorded with every result: the toolchain, and
the libraries the recipe's own code imports (e.g. transformers or timm for an outside model)."""

from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import inspect
import os
import platform
import sys
from collections.abc import Iterator

from trt_harness.harness.gpu import cuda_devices
from trt_harness.models.recipe import Recipe
from trt_harness.models.results.document import Environment, Gpu

# the harness's own packages: the project, not a library of the recipe's
_OWN = ("trt_harness",)
# modules of the recipe's own code followed to their imports (a recipe's helper modules), at most
_MAX_MODULES = 200

_DISTRIBUTIONS = (
    "torch",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnx-graphsurgeon",
    "polygraphy",
    "tensorrt",
    "tensorrt-rtx",
    "numpy",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for dist in _DISTRIBUTIONS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _imported_names(module_name: str) -> Iterator[str]:
    """The absolute names of every module `module_name`'s source imports, at any level (inside
    functions too: heavy libraries are often imported where the model is built)."""
    module = sys.modules.get(module_name)
    try:
        source = inspect.getsource(module) if module is not None else None
    except (OSError, TypeError):
        source = None
    if source is None:
        return
    package = module_name if hasattr(module, "__path__") else module_name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                yield f"{base}.{node.module}" if node.module else base
            elif node.module:
                yield node.module


def _recipe_modules(recipe: Recipe) -> set[str]:
    return {
        module
        for function in (recipe.build_model, recipe.sample_inputs, recipe.make_input)
        if function is not None and (module := getattr(function, "__module__", None))
    }


def recipe_packages(recipe: Recipe) -> dict[str, str]:
    """{distribution: version} of the libraries the recipe's code imported.

    Starts from the modules the recipe's functions are defined in, reads their imports, and follows
    the imports that are the recipe's own code (modules no installed distribution provides, e.g. a
    user's checkout, or the harness's model architectures) to theirs. Only modules in `sys.modules`
    count, so call it after the model was built: a library the recipe imports lazily is there then.
    The toolchain (`package_versions`) and the harness itself are left out.
    """
    providers = importlib.metadata.packages_distributions()
    toolchain = set(_DISTRIBUTIONS)
    found: dict[str, str] = {}
    seen: set[str] = set()
    queue = sorted(_recipe_modules(recipe))
    while queue and len(seen) < _MAX_MODULES:
        name = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        for imported in _imported_names(name):
            if imported not in sys.modules and imported.rpartition(".")[0] in sys.modules:
                imported = imported.rpartition(".")[0]  # `from package import name` of a non-module
            if imported not in sys.modules:
                continue
            top = imported.partition(".")[0]
            distributions = providers.get(top, [])
            if top in _OWN and not imported.startswith("trt_harness.models"):
                continue  # the harness's machinery, not the recipe's model code
            if top in _OWN or not distributions:
                if top not in sys.stdlib_module_names:
                    queue.append(imported)  # the recipe's own code (or the harness's models): follow
                continue
            for dist in distributions:
                if dist.lower() in toolchain:
                    continue
                try:
                    found[dist] = importlib.metadata.version(dist)
                except importlib.metadata.PackageNotFoundError:
                    continue
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def with_recipe_packages(env: Environment, recipe: Recipe) -> Environment:
    """`env` with the libraries the recipe imported (see `recipe_packages`), once the model was built."""
    return dataclasses.replace(env, recipe_packages=recipe_packages(recipe))


def environment() -> Environment:
    return Environment(
        python=platform.python_version(),
        platform=platform.platform(),
        machine=platform.machine(),
        processor_count=os.cpu_count(),
        gpus=tuple(
            Gpu(d.name, f"{d.compute_capability[0]}.{d.compute_capability[1]}") for d in cuda_devices()
        ),
        packages=package_versions(),
    )
