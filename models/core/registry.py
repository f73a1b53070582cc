"""One registry type for everything found by name: recipes, backends, passes, replacements, benchmarks.

A registry belongs to a package: each module of it registers its entry with a decorator, and the
registry imports every module of the package the first time it is asked (so listing recipes or
passes needs no list kept by hand). One duplicate policy everywhere: the same name registered again
from the same place (a module imported twice) replaces the entry; from another place it is an error
naming both.

The cache derives its code keys from the imports of each stage; `package=` is how it knows that
using a registry depends on every module of that package.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from trt_harness.models.core.errors import HarnessError, UsageError

T = TypeVar("T")


def import_submodules(package: str) -> None:
    """Import every module of `package` whose name does not start with an underscore.

    A module that does not compile or import is a usage error naming its file and line: it is the
    user's recipe (or pass, or backend) that needs fixing, not the harness.
    """
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(module.__path__):
        if info.name.startswith("_"):
            continue
        name = f"{package}.{info.name}"
        try:
            importlib.import_module(name)
        except SyntaxError as e:
            raise UsageError(f"{e.filename}:{e.lineno}: {e.msg}; fix the module {name}") from None
        except ImportError as e:
            raise UsageError(f"module {name} cannot be imported: {e}; fix or remove it") from None


def _origin(value: Any) -> str:
    target = getattr(value, "__wrapped__", value)
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{module}.{qualname}" if module else qualname


class Registry(Generic[T]):
    """Name -> entry. `kind` words errors ("unknown backend 'x'"); `hint` says where names are set."""

    def __init__(self, kind: str, *, package: str | None = None, hint: str = "") -> None:
        self.kind = kind
        self.package = package
        self.hint = hint
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._loaded = package is None

    def register(self, name: str, entry: T, *, origin: str | None = None) -> T:
        origin = origin or _origin(entry)
        known = self._origins.get(name)
        if known is not None and known != origin:
            raise HarnessError(
                f"two {self.kind}s are registered as '{name}' ({known} and {origin}); rename one of them"
            )
        self._entries[name] = entry
        self._origins[name] = origin
        return entry

    def decorator(self, name: str, make: Callable[[Any], T] | None = None) -> Callable[[Any], Any]:
        """`@registry.decorator("name")` registers the decorated object (or `make(obj)`), returns it."""

        def register(obj: Any) -> Any:
            self.register(name, make(obj) if make else obj, origin=_origin(obj))
            return obj

        return register

    def unregister(self, name: str) -> None:
        """Forget an entry registered at run time (tests register throwaway entries)."""
        self._entries.pop(name, None)
        self._origins.pop(name, None)

    def load(self) -> None:
        if not self._loaded:
            self._loaded = True  # first: a module of the package may itself list the registry
            assert self.package is not None
            import_submodules(self.package)

    def names(self) -> list[str]:
        self.load()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self.load()
        try:
            return self._entries[name]
        except KeyError:
            hint = f" ({self.hint})" if self.hint else ""
            raise UsageError(
                f"unknown {self.kind} '{name}'; known {self.kind}s: {', '.join(self.names()) or 'none'}{hint}"
            ) from None

    def __contains__(self, name: str) -> bool:
        self.load()
        return name in self._entries

    def values(self) -> list[T]:
        self.load()
        return [self._entries[name] for name in sorted(self._entries)]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
