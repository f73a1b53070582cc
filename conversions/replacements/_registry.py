"""The registry of replacements: name -> Replacement, filled by `@register_replacement` in each module."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trt_harness.conversions.replacements._context import ReplacementContext
from trt_harness.models.core.registry import Registry

# target (dotted path of the patched callable) -> the function that stands in for it
ReplacementFunctions = Mapping[str, Callable[..., Any]]
Builder = Callable[[ReplacementContext], ReplacementFunctions]
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


REPLACEMENTS: Registry[Replacement] = Registry(
    "replacement",
    package="trt_harness.conversions.replacements",
    hint="fix the name in the recipe's ExportOptions.replacements",
)


def register_replacement(
    name: str, *, targets: Sequence[str], summary: str, refuses: Refusal | None = None
) -> Callable[[Builder], Builder]:
    """Register the decorated builder as replacement `name`."""
    return REPLACEMENTS.decorator(
        name, lambda build: Replacement(name, summary, tuple(targets), build, refuses)
    )


def replacement_names() -> list[str]:
    return REPLACEMENTS.names()


def get_replacement(name: str) -> Replacement:
    return REPLACEMENTS.get(name)
