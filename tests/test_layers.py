"""The layering holds: no import circles between modules, and no module imports a layer above its own.

Layers, bottom up (README, "Architecture"):
  0 ground      models.core, models.results,  errors, artifact I/O, registries, the results contract,
                models.recipe, models.detection  and the value types it is written in
  1 models      models.*, conversions.*        recipes and architectures; export, surgery, build
  2 run/compare harness.* (below)              backends, statistics, detections, sample files, cache
  3 reports     reports.*                      written from the results contract alone
  4 top         harness.stages, pipeline, cli  the stages, the driver and the command line
Every import counts, also those inside functions (read from the source, not by importing it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("models", "conversions", "harness", "reports")
NAMESPACE = (
    "trt_harness"  # the folders install as trt_harness.models etc. (pyproject.toml); names here drop it
)

# most specific prefix first
LAYERS: tuple[tuple[str, int], ...] = (
    ("models.core", 0),
    ("models.results", 0),
    ("models.recipe", 0),  # the recipe's typed vocabulary (tolerances, shapes, options)
    ("models.detection", 0),  # detection value types and their numpy-only math
    ("models.checks", 0),  # declarations of the recipe's acceptance checks (evaluated in harness.checks)
    ("models", 1),
    ("conversions", 1),
    ("harness.stages", 4),
    ("harness.pipeline", 4),
    ("harness.cli", 4),
    ("harness.cli_scale", 4),  # matrix, merge, bundle, verify
    ("harness.shards", 4),  # merges shard run folders into a run's results and report
    ("harness.bundle", 4),  # a run folder -> a bundle for the target device
    ("harness.verify", 4),  # runs the stages on a bundle, without torch
    ("harness.__main__", 4),
    ("harness.progress", 4),
    ("harness.bench", 4),
    ("harness", 2),
    ("reports", 3),
)


def layer_of(module: str) -> int:
    for prefix, layer in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    raise AssertionError(f"{module} is in no layer; add it to LAYERS")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """The project modules `path` imports, resolved to the longest known module name."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for name in names:
            name = name.removeprefix(f"{NAMESPACE}.")
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {m: imports_of(p, m, known) for m, p in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{m} (layer {layer_of(m)}) imports {i} (layer {layer_of(i)})"
        for m, imported in import_graph().items()
        for i in sorted(imported)
        if layer_of(i) > layer_of(m)
    ]
    assert upward == []


def test_the_reports_read_nothing_but_the_results_contract_and_models():
    offending = [
        f"{m} imports {i}"
        for m, imported in import_graph().items()
        if m.startswith("reports")
        for i in imported
        if i.startswith(("harness", "conversions"))
    ]
    assert offending == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import trt_harness.models.core.errors\n", {"models.core.errors"}),
        ("from trt_harness.harness.cli import main\n", {"harness.cli"}),
        ("from models.core import errors\n", {"models.core", "models.core.errors"}),
        ("def f():\n    from harness.cli import main\n", {"harness.cli"}),
        ("from . import sibling\n", {"models.core", "models.core.sibling"}),
    ],
)
def test_imports_are_read_at_every_depth_and_relative_ones_resolved(tmp_path, source, expected):
    """Guards the checker itself: function-level and relative imports are not missed."""
    path = tmp_path / "mod.py"
    path.write_text(source)
    known = {"models.core.errors", "models.core.sibling", "harness.cli", "models.core"}
    assert imports_of(path, "models.core.mod", known) == expected


def test_a_circle_is_found():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def bare_imports(path: Path) -> list[str]:
    """Imports of a project package by its folder's name (`models.x`) instead of `trt_harness.models.x`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        found += [n for n in names if n.split(".")[0] in PACKAGES]
    return found


def test_no_module_takes_a_top_level_name_a_users_code_may_have():
    """A user's checkout has its own `models` (YOLOv5 does); importing ours by that name would shadow it."""
    offending = {
        f"{p.relative_to(ROOT)}: {name}"
        for folder in (*PACKAGES, "tests")
        for p in (ROOT / folder).rglob("*.py")
        for name in bare_imports(p)
    }
    assert sorted(offending) == []


def test_the_installed_packages_are_the_folders():
    """pyproject.toml lists every package folder under the namespace (a missing one would not install)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = sorted(
        f"{NAMESPACE}." + ".".join(init.parent.relative_to(ROOT).parts)
        for package in PACKAGES
        for init in (ROOT / package).rglob("__init__.py")
    )
    assert sorted(config["packages"]) == folders
    assert config["package-dir"] == {f"{NAMESPACE}.{p}": p for p in PACKAGES}
