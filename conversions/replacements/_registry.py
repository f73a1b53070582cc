"""The registry of replacements: name -> Replacement, filled by `@register_replacement` in each module."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.errors import UsageError

if TYPE_CHECKING:
    from conversions.replacements._session import ReplacementContext

# target (dotted path of the patched callable) -> the function that stands in for it
ReplacementFunctions = Mapping[str, Callable[..., Any]]
Builder = Callable[["ReplacementContext"], ReplacementFunctions]
# (target, args, kwargs) of one call -> why the replacement would not rewrite it, or None
Refusal = Callable[[str, tuple[Any, ...], Mapping[str, Any]], "str | None"]


@dataclass(frozen=True)
class Replacement:
    """One torch-level rewrite, patched in only while exporting.

    `targets` are dotted paths (`torch.nn.functional.pad`, `torch.Tensor.squeeze`); `build` returns
    the stand-in function for each. `refuses` tells, for one call, why the stand-in would not
    rewrite it (an unsupported option, or a case it leaves to the original op): the op scanner
    uses it so that it never promises a fix the replacement does not deliver.
    """

    name: str
    summary: str
    targets: tuple[str, ...]
    build: Builder
    refuses: Refusal | None = None

    def refusal(self, target: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
        return self.refuses(target, args, kwargs) if self.refuses else None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "summary": self.summary, "targets": list(self.targets)}


_REGISTRY: dict[str, Replacement] = {}
_loaded = False


def register_replacement(
    name: str, *, targets: Sequence[str], summary: str, refuses: Refusal | None = None
) -> Callable[[Builder], Builder]:
    """Register the decorated builder as replacement `name`."""

    def decorate(build: Builder) -> Builder:
        if name in _REGISTRY and _REGISTRY[name].build is not build:
            raise RuntimeError(f"replacement '{name}' is registered twice")
        _REGISTRY[name] = Replacement(name, summary, tuple(targets), build, refuses)
        return build

    return decorate


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    import conversions.replacements as package

    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{module.name}")
    _loaded = True


def replacement_names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_replacement(name: str) -> Replacement:
    _load_all()
    if name not in _REGISTRY:
        raise UsageError(
            f"unknown replacement '{name}'; known replacements: {', '.join(sorted(_REGISTRY))}. "
            "Fix the name in the recipe's ExportOptions.replacements"
        )
    return _REGISTRY[name]
