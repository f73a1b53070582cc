"""Recipes: the built-in ones, and how a name, a file or a module becomes a `Recipe`.

Every command that takes a recipe takes a *recipe reference* (`resolve_recipe`), one of:

- a registered name: a built-in recipe (one module per recipe in this package, registered with
  `@register_recipe` under the module's name), or an entry point of an installed distribution in the
  group `trt_harness.recipes` (`name = "package.module:factory"`, registered under the entry point's
  name; a value naming a module takes every recipe that module registers);
- a file, `path/to/recipe.py`, anywhere: loaded under a module name of its own (never on the
  harness's path), its folder first on `sys.path` as `python path/to/recipe.py` would have it. It may
  register one or several recipes with `@register_recipe` (`path/to/recipe.py:name` picks one of
  several), or define a factory named `recipe`, or be given as `path/to/recipe.py:factory`;
- a module, `package.module:factory` (or `package.module`, for what it registers), imported the
  ordinary way from `sys.path`.

A factory takes keyword parameters (e.g. `image_size`) so a test or a user can derive a smaller
variant (`-p image_size=320`) without a second recipe file. Parameters are checked against the
factory's signature before it runs: an unknown name, or a value of another type than the
parameter's default, is a usage error naming the parameter. An exception the factory raises is a
usage error naming the recipe, the parameters given and the recipe's line that raised.

The harness installs as the namespace `trt_harness`, so loading a recipe never puts a top-level
`models` (or `harness`, ...) of ours in the way of a user's checkout that has its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
import sysconfig
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, entry_points, packages_distributions, version
from pathlib import Path
from types import ModuleType
from typing import Any

from trt_harness.models.core.errors import HarnessError, UsageError
from trt_harness.models.core.registry import Registry
from trt_harness.models.recipe import (
    FIELD_PARAMS,
    NAME_LIST_PARAMS,
    ORT_OPTIMIZATIONS,
    Recipe,
    RecipeOrigin,
)

RecipeFactory = Callable[..., Recipe]

ENTRY_POINT_GROUP = "trt_harness.recipes"
PACKAGE = "trt_harness.models.recipes"

RECIPES: Registry[RecipeFactory] = Registry(
    "recipe", package="trt_harness.models.recipes", hint="one module per recipe in models/recipes/"
)

# recipes that modules outside this package register: module name -> recipe name -> factory
_OUTSIDE: dict[str, dict[str, RecipeFactory]] = {}
# recipe files loaded in this process: resolved path -> (module, SHA-256 of the bytes executed)
_FILES: dict[Path, tuple[ModuleType, str]] = {}

REFERENCE_FORMS = "a recipe name, path/to/recipe.py[:name] or package.module[:factory]"


def register_recipe(factory: RecipeFactory | str | None = None, *, name: str | None = None) -> Any:
    """Make a recipe visible by name: `@register_recipe`, `@register_recipe("name")` or `(name=...)`.

    A built-in recipe is named after its module; one registered by a file or module outside this
    package after its factory function (so one file may register several).
    """
    if isinstance(factory, str) or factory is None:
        chosen = factory if isinstance(factory, str) else name
        return lambda f: _register(f, chosen)
    return _register(factory, name)


def _register(factory: RecipeFactory, name: str | None) -> RecipeFactory:
    module = factory.__module__
    if module.startswith(PACKAGE + "."):
        return RECIPES.register(name or module.rsplit(".", 1)[-1], factory)
    chosen = name or factory.__name__
    known = _OUTSIDE.setdefault(module, {})
    if chosen in known and known[chosen].__qualname__ != factory.__qualname__:
        raise UsageError(
            f"module {module} registers two recipes as '{chosen}' ({known[chosen].__qualname__} and "
            f'{factory.__qualname__}); give one of them another name: @register_recipe("other")'
        )
    known[chosen] = factory
    return factory


@dataclass(frozen=True)
class ResolvedRecipe:
    """A recipe reference made concrete: the name it is known by, its factory, where it came from."""

    name: str
    factory: RecipeFactory
    origin: RecipeOrigin


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _distribution_of(module: str, path: Path | None) -> str | None:
    """'name version' of the installed distribution that provides `module` (a file in site-packages)."""
    libraries = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    if path is None or not any(path.is_relative_to(d) for d in libraries):
        return None  # a checkout on sys.path: its code is followed into, no version stands for it
    for dist in packages_distributions().get(module.partition(".")[0], []):
        try:
            return f"{dist} {version(dist)}"
        except PackageNotFoundError:
            continue
    return None


def _origin_of(factory: RecipeFactory, kind: str, location: str, dist: str | None = None) -> RecipeOrigin:
    module = getattr(factory, "__module__", "") or ""
    file = getattr(sys.modules.get(module), "__file__", None)
    path = Path(file).resolve() if file else None
    if dist is None and kind in ("module", "entry point"):
        dist = _distribution_of(module, path)
    return RecipeOrigin(
        kind, location, module, str(path) if path else None, _sha256(path) if path else None, dist
    )


# -- registered names: built-in and entry points ---------------------------------------------------


def _entry_points() -> dict[str, list[Any]]:
    """Entry points of the group by name (a distribution seen twice on sys.path counts once)."""
    found: dict[str, list[Any]] = {}
    seen: set[tuple[str, str, str]] = set()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        if (ep.name, ep.value, dist) in seen:
            continue
        seen.add((ep.name, ep.value, dist))
        found.setdefault(ep.name, []).append(ep)
    return found


def _entry_point_dist(ep: Any) -> str | None:
    return f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else None


def _entry_point_location(ep: Any) -> str:
    return f"{_entry_point_dist(ep) or 'an unknown distribution'} ({ep.value})"


def _load_entry_point(ep: Any) -> list[ResolvedRecipe]:
    location = _entry_point_location(ep)
    try:
        loaded = ep.load()
    except Exception as e:
        raise UsageError(
            f"entry point '{ep.name}' of {location} in group {ENTRY_POINT_GROUP} cannot be loaded: "
            f"{type(e).__name__}: {_one_line(e)}{_at(e, set())}; fix or uninstall that distribution"
        ) from None
    if isinstance(loaded, ModuleType):
        return [
            ResolvedRecipe(name, factory, _origin_of(factory, "entry point", location, _entry_point_dist(ep)))
            for name, factory in _registered_in(loaded).items()
        ]
    if not callable(loaded):
        raise UsageError(
            f"entry point '{ep.name}' of {location} names {type(loaded).__name__}, not a recipe factory"
        )
    return [
        ResolvedRecipe(ep.name, loaded, _origin_of(loaded, "entry point", location, _entry_point_dist(ep)))
    ]


def _builtin(name: str) -> ResolvedRecipe:
    factory = RECIPES.get(name)
    return ResolvedRecipe(name, factory, _origin_of(factory, "built-in", factory.__module__))


def available_recipes() -> list[ResolvedRecipe]:
    """Every recipe known by name: the built-in ones, then those of installed entry points."""
    found = [_builtin(name) for name in RECIPES.names()]
    for eps in _entry_points().values():
        for ep in eps:
            found += _load_entry_point(ep)
    return found


def recipe_names() -> list[str]:
    return sorted(dict.fromkeys([*RECIPES.names(), *_entry_point_names()]))


def _entry_point_names() -> list[str]:
    names: list[str] = []
    for name, eps in _entry_points().items():
        for ep in eps:
            names += [name] if ":" in ep.value else [r.name for r in _load_entry_point(ep)]
    return names


def _by_name(name: str) -> ResolvedRecipe:
    candidates = [_builtin(name)] if name in RECIPES else []
    for eps in _entry_points().values():
        for ep in eps:
            if ep.name == name and ":" in ep.value:
                candidates += _load_entry_point(ep)
            elif ":" not in ep.value:
                candidates += [r for r in _load_entry_point(ep) if r.name == name]
    if len(candidates) > 1:
        where = "; ".join(f"{c.origin.kind} {c.origin.location}" for c in candidates)
        raise UsageError(
            f"recipe '{name}' is registered more than once ({where}); point at one by its module "
            "(package.module:factory) or uninstall one of the distributions"
        )
    if not candidates:
        raise UsageError(
            f"unknown recipe '{name}'; known recipes: {', '.join(recipe_names()) or 'none'} "
            f"(or give {REFERENCE_FORMS})"
        )
    return candidates[0]


# -- files and modules -----------------------------------------------------------------------------


def _registered_in(module: ModuleType) -> dict[str, RecipeFactory]:
    name = module.__name__
    found = dict(_OUTSIDE.get(name, {}))
    if name.startswith(PACKAGE + "."):
        found.update({n: f for n in RECIPES.names() if (f := RECIPES.get(n)).__module__ == name})
    return found


def _load_file(path: Path) -> ModuleType:
    """Execute a recipe file under a module name of its own (again when its bytes changed)."""
    path = path.resolve()
    try:
        source = path.read_bytes()
    except OSError as e:
        raise UsageError(f"recipe file {path}: cannot be read ({e.strerror or e})") from None
    digest = hashlib.sha256(source).hexdigest()
    loaded = _FILES.get(path)
    if loaded is not None and loaded[1] == digest:
        return loaded[0]
    stem = re.sub(r"\W", "_", path.stem)
    name = f"trt_harness_recipe_file_{stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:10]}"
    # as `python path/to/recipe.py` would: its own folder first, so a recipe kept in a checkout
    # imports that checkout's packages (YOLOv5's `models`)
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look a class's module up by name
    _OUTSIDE.pop(name, None)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(name, None)
        raise UsageError(f"{e.filename}:{e.lineno}: {e.msg}; fix the recipe file") from None
    except Exception as e:
        sys.modules.pop(name, None)
        raise UsageError(
            f"recipe file {path} cannot be loaded: {type(e).__name__}: {_one_line(e)}{_at(e, {path})}"
        ) from None
    _FILES[path] = (module, digest)
    return module


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except SyntaxError as e:
        raise UsageError(f"{e.filename}:{e.lineno}: {e.msg}; fix the module {name}") from None
    except ModuleNotFoundError as e:
        if e.name and name.startswith(e.name):
            raise UsageError(
                f"no module '{name}' on sys.path (recipe '{name}'); install its package, set PYTHONPATH, "
                f"or give {REFERENCE_FORMS}"
            ) from None
        raise UsageError(f"module {name} cannot be imported: {e}{_at(e, set())}") from None
    except Exception as e:
        raise UsageError(
            f"module {name} cannot be imported: {type(e).__name__}: {_one_line(e)}{_at(e, set())}"
        ) from None


def _pick(module: ModuleType, pick: str, kind: str, shown: str) -> ResolvedRecipe:
    """The recipe of a loaded file or module: `pick` names one it registers or a factory in it."""
    registered = _registered_in(module)
    if pick:
        if pick in registered:
            factory = registered[pick]
        else:
            factory = getattr(module, pick, None)
            if not callable(factory):
                known = f"; it registers {', '.join(sorted(registered))}" if registered else ""
                raise UsageError(f"{shown}: no recipe or factory '{pick}'{known}")
        return ResolvedRecipe(pick, factory, _origin_of(factory, kind, f"{shown}:{pick}"))
    if len(registered) == 1:
        ((name, factory),) = registered.items()
        return ResolvedRecipe(name, factory, _origin_of(factory, kind, shown))
    if registered:
        raise UsageError(
            f"{shown} registers {len(registered)} recipes ({', '.join(sorted(registered))}); "
            f"choose one: {shown}:{sorted(registered)[0]}"
        )
    factory = getattr(module, "recipe", None)
    if callable(factory):
        return ResolvedRecipe("recipe", factory, _origin_of(factory, kind, shown))
    raise UsageError(
        f"{shown} registers no recipe: decorate its factory with @register_recipe, name it `recipe`, "
        f"or give {shown}:FACTORY"
    )


def _split_file(ref: str) -> tuple[Path, str] | None:
    """(file, pick) when `ref` names a Python file, else None."""
    head, sep, pick = ref.rpartition(":")
    if sep and head.endswith(".py"):
        return Path(head), pick
    if ref.endswith(".py") or "/" in ref or "\\" in ref:
        return Path(ref), ""
    return None  # a bare name is never a file: `mnist` is the recipe even beside a file called mnist


def resolve_recipe(ref: str) -> ResolvedRecipe:
    """The recipe a reference names: a registered name, a file (`x.py[:name]`) or `module[:factory]`."""
    as_file = _split_file(ref)
    if as_file is not None:
        path, pick = as_file
        if not path.is_file():
            raise UsageError(f"recipe file {path}: no such file (give {REFERENCE_FORMS})")
        module = _load_file(path)
        return _pick(module, pick, "file", str(path.resolve()))
    if ":" in ref or ("." in ref and ref not in RECIPES and ref not in _entry_points()):
        module_name, _, pick = ref.partition(":")
        module = _import_module(module_name)
        kind = "built-in" if module_name.startswith(PACKAGE + ".") else "module"
        return _pick(module, pick, kind, module_name)
    return _by_name(ref)


# -- building --------------------------------------------------------------------------------------


def _check_params(name: str, factory: RecipeFactory, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters as the factory takes them; a usage error naming the first one it cannot take.

    A number given to a parameter whose default is text is passed as text (`-p size=30` for
    `size="28"`): the command line cannot say which was meant.
    """
    signature = inspect.signature(factory)
    params = dict(params)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    accepted = {
        p.name: p
        for p in signature.parameters.values()
        if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD
    }
    for key, value in params.items():
        parameter = accepted.get(key)
        if parameter is None:
            if takes_any:
                continue
            raise UsageError(
                f"recipe '{name}' has no parameter '{key}'; its parameters: {', '.join(accepted) or 'none'}"
            )
        default = parameter.default
        if default is inspect.Parameter.empty or default is None:
            continue
        expected = float if isinstance(default, float) else type(default)
        if isinstance(default, float) and isinstance(value, int):
            continue
        if isinstance(default, str) and isinstance(value, int | float) and not isinstance(value, bool):
            params[key] = str(value)
            continue
        if not isinstance(value, expected) or isinstance(value, bool) != isinstance(default, bool):
            raise UsageError(
                f"recipe '{name}' parameter '{key}' must be {expected.__name__} (default {default!r}), "
                f"got {value!r}"
            )
    return params


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or "(no message)"


def _at(e: BaseException, files: set[Path]) -> str:
    """' at FILE:LINE' of the last frame in `files` (the recipe), else of the innermost frame."""
    frames = traceback.extract_tb(e.__traceback__)
    if not frames:
        return ""
    inside = [f for f in frames if Path(f.filename).resolve() in files]
    frame = inside[-1] if inside else frames[-1]
    where = f" at {frame.filename}:{frame.lineno}"
    innermost = frames[-1]
    if inside and innermost is not frame:
        where += f" (raised in {innermost.filename}:{innermost.lineno})"
    return where


def _suspects(params: dict[str, Any], message: str) -> str:
    """' (the value of parameter 'size')' when a given value appears in the exception's message."""
    named = [
        key
        for key, value in params.items()
        if len(str(value)) > 1 and re.search(rf"(?<![\w.]){re.escape(str(value))}(?![\w.])", message)
    ]
    if not named:
        return ""
    return f" (the value of parameter{'s' if len(named) > 1 else ''} {', '.join(repr(k) for k in named)})"


def _factory_files(factory: RecipeFactory) -> set[Path]:
    files = set()
    code = getattr(inspect.unwrap(factory), "__code__", None)
    if code is not None:
        files.add(Path(code.co_filename).resolve())
    module_file = getattr(sys.modules.get(getattr(factory, "__module__", "")), "__file__", None)
    if module_file:
        files.add(Path(module_file).resolve())
    return files


def build_recipe(resolved: ResolvedRecipe, **params: Any) -> Recipe:
    """Run the factory with `params` (checked first); any exception it raises is a usage error."""
    name, factory = resolved.name, resolved.factory
    # recipe fields any recipe takes as a parameter (e.g. `-p ort_optimization=basic`)
    fields = {key: params[key] for key in FIELD_PARAMS if key in params}
    if fields.get("ort_optimization", "all") not in ORT_OPTIMIZATIONS:
        raise UsageError(
            f"ort_optimization={fields['ort_optimization']!r}: expected one of {', '.join(ORT_OPTIMIZATIONS)}"
        )
    shown = dict(fields)
    for key in NAME_LIST_PARAMS:
        if key in fields:
            fields[key] = _name_list(key, fields[key])
            shown[key] = ",".join(fields[key])  # as the command line gives it: results.json rebuilds from it
    own = {key: value for key, value in params.items() if key not in fields}
    own = _check_params(name, factory, own)
    given = " ".join(f"-p {k}={v}" for k, v in own.items()) or "no parameters"
    try:
        recipe = factory(**own)
    except HarnessError as e:
        raise UsageError(f"recipe '{name}' ({given}): {e}{_at(e, _factory_files(factory))}") from e
    except Exception as e:
        message = _one_line(e)
        raise UsageError(
            f"recipe '{name}' ({given}) raised {type(e).__name__}: {message}{_suspects(own, message)}"
            f"{_at(e, _factory_files(factory))}; check the parameters or fix the recipe there"
        ) from None
    if not isinstance(recipe, Recipe):
        raise UsageError(
            f"recipe '{name}': its factory {factory.__qualname__} returned {type(recipe).__name__}, "
            "not a Recipe"
        )
    return dataclasses.replace(
        recipe, **fields, params={**recipe.params, **own, **shown}, origin=resolved.origin
    )


def _name_list(key: str, value: Any) -> tuple[str, ...]:
    """`a,b` (the command line's form) or a sequence of names, as a tuple of names."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # parse_params reads a lone numeric name as a number
    if isinstance(value, str):
        names = tuple(n.strip() for n in value.split(",") if n.strip())
    elif isinstance(value, list | tuple) and all(isinstance(n, str) for n in value):
        names = tuple(value)
    else:
        raise UsageError(
            f"-p {key}={value!r}: expected ONNX node names separated by commas, e.g. -p {key}=a,b"
        )
    return tuple(dict.fromkeys(names))


def get_recipe(ref: str, **params: Any) -> Recipe:
    """The recipe `ref` names (see `resolve_recipe`), built with `params`."""
    return build_recipe(resolve_recipe(ref), **params)


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
