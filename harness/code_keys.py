"""The code part of a cache key: the sources of a module and of every project module it imports.

The closure is read from the source (every `import` statement, also inside functions), so it holds
exactly what can run when the stage runs, and a module edited outside it does not invalidate the
stage. Modules of installed distributions and of the standard library are not followed: their
versions are part of the keys instead. A registry whose package loads all its modules
(`Registry(..., package="x.y")`) makes every module of `x.y` part of the closure of its importers.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import sys
import sysconfig
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the project's checkout (or its installed copy)
# The project's folders install as subpackages of this namespace (pyproject.toml, package-dir): module
# `trt_harness.models.recipe` is the file ROOT/models/recipe.py.
NAMESPACE = "trt_harness"
PACKAGES = ("conversions", "harness", "models", "reports")


@functools.cache
def _library_dirs() -> tuple[Path, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    dirs.add(sys.base_prefix)
    return tuple(Path(d).resolve() for d in dirs)


@functools.cache
def _is_library(path: Path) -> bool:
    resolved = path.resolve()
    if resolved.is_relative_to(ROOT) and not any(part in (".venv", ".nox") for part in resolved.parts):
        return False
    return any(resolved.is_relative_to(d) for d in _library_dirs())


def _source_roots() -> tuple[Path, ...]:
    return _roots_of(tuple(sys.path))


@functools.cache
def _roots_of(path_entries: tuple[str, ...]) -> tuple[Path, ...]:
    roots = [ROOT]
    for entry in path_entries:
        path = Path(entry or ".").resolve()
        if path.is_dir() and path not in roots and not _is_library(path):
            roots.append(path)
    return tuple(roots)


def find_source(module: str, roots: Iterable[Path] | None = None) -> Path | None:
    """The .py file of `module` (its __init__.py for a package) under the project's source roots."""
    return _find_source(module, tuple(roots) if roots else _source_roots())


# Cached because a closure asks for the same few hundred modules many times; the roots are part of
# the key, so a changed sys.path is looked up afresh.
@functools.cache
def _find_source(module: str, roots: tuple[Path, ...]) -> Path | None:
    parts = module.split(".")
    for root in roots:
        if root == ROOT and parts[0] == NAMESPACE:
            base = root.joinpath(*parts[1:])
        elif root == ROOT and parts[0] in PACKAGES:
            continue  # a bare `models.yolo` is a user's module, never ours
        else:
            base = root.joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file() and not _is_library(candidate):
                return candidate.resolve()
    return None


def _module_name(path: Path, roots: Iterable[Path]) -> str | None:
    for root in roots:
        if path.is_relative_to(root):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join([NAMESPACE, *parts] if root == ROOT and parts[0] in PACKAGES else parts)
    return None


Parsed = tuple[tuple[str, ...], tuple[str, ...]]

# What each source file imports, by the SHA-256 of its path and bytes, kept on disk between runs when
# `keep_parses_in` names a file: parsing the closures is most of a warm run's key cost (~0.4 s).
_on_disk: dict[str, Parsed] = {}
_disk_file: Path | None = None
_disk_dirty = False


def keep_parses_in(path: Path) -> None:
    """Read earlier parses from `path` (a JSON file; missing or damaged: start empty); `save_parses` writes it."""
    global _disk_file
    _disk_file = Path(path)
    try:
        data = json.loads(_disk_file.read_text())
        _on_disk.update({k: (tuple(v[0]), tuple(v[1])) for k, v in data.items()})
    except (OSError, ValueError, TypeError, IndexError, AttributeError):
        pass


def save_parses() -> None:
    global _disk_dirty
    if _disk_file is None or not _disk_dirty:
        return
    try:
        _disk_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = _disk_file.with_name(f".{_disk_file.name}.{os.getpid()}.partial")
        tmp.write_text(json.dumps({k: [list(a), list(b)] for k, (a, b) in _on_disk.items()}))
        os.replace(tmp, _disk_file)
        _disk_dirty = False
    except OSError:
        pass  # a cache of parses only saves time


@functools.cache
def _parse(path: Path) -> Parsed:
    """(modules named by the imports of `path`, packages whose registry loads all their modules)."""
    return _parse_cached_fresh(path)


def _parse_cached_fresh(path: Path) -> Parsed:
    """`_parse` without the per-process memo: reads the file, looks its bytes up in the kept parses."""
    global _disk_dirty
    source = path.read_bytes()
    key = hashlib.sha256(str(path).encode() + b"\0" + source).hexdigest()
    if key not in _on_disk:
        _on_disk[key] = _parse_source(path, source)
        _disk_dirty = True
    return _on_disk[key]


def _parse_source(path: Path, source: bytes) -> Parsed:
    tree = ast.parse(source, filename=str(path))
    is_package = path.name == "__init__.py"
    roots = _source_roots()
    own = _module_name(path, roots) or ""
    package = own if is_package else own.rpartition(".")[0]
    named: list[str] = []
    registries: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            named += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".") if package else []
                base_parts = (
                    base_parts[: len(base_parts) - (node.level - 1)] if node.level > 1 else base_parts
                )
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            named.append(base)
            named += [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
        elif isinstance(node, ast.Call) and _called_name(node) in ("Registry", "import_submodules"):
            for arg in [*node.args, *(k.value for k in node.keywords if k.arg == "package")]:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and "." in arg.value:
                    registries.append(arg.value)
    return tuple(dict.fromkeys(n for n in named if n)), tuple(registries)


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _package_modules(package: str) -> list[Path]:
    source = find_source(package)
    if source is None or source.name != "__init__.py":
        return []
    return sorted(
        p.resolve()
        for p in source.parent.glob("*.py")
        if not p.name.startswith("_") or p.name == "__init__.py"
    )


@functools.cache
def closure(start: Path) -> tuple[Path, ...]:
    """`start` and every project source file it imports, directly or not, in path order.

    Importing `a.b.c` runs `a/__init__.py` and `a/b/__init__.py` too, so those are included.
    """
    seen: set[Path] = set()
    pending = [start.resolve()]
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        modules, registries = _parse(path)
        found: list[Path] = []
        for module in modules:
            parts = module.split(".")
            for depth in range(1, len(parts) + 1):
                source = find_source(".".join(parts[:depth]))
                if source is not None:
                    found.append(source)
        for package in registries:
            found += _package_modules(package)
        pending += [p for p in found if p not in seen]
    return tuple(sorted(seen))


def module_file(module: str) -> Path:
    loaded = sys.modules.get(module)
    file = getattr(loaded, "__file__", None)
    if file:
        return Path(file).resolve()
    source = find_source(module)
    if source is None:
        raise ModuleNotFoundError(f"no source file for module {module}")
    return source.resolve()


def code_hash(*modules: str, read: Callable[[Path], bytes] | None = None) -> str:
    """SHA-256 over the closures of `modules`: each file's path (relative to the project) and bytes.

    `read` (path -> bytes) replaces reading the files, for tests that simulate an edit.
    """
    files = sorted({f for module in modules for f in closure(module_file(module))})
    digest = hashlib.sha256()
    for file in files:
        shown = file.relative_to(ROOT).as_posix() if file.is_relative_to(ROOT) else file.as_posix()
        digest.update(shown.encode() + b"\0")
        digest.update(read(file) if read else file.read_bytes())
    return digest.hexdigest()
