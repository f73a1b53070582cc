"""Swap callables in place and put every one of them back, including aliases made by `from x import f`."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_MISSING = object()

# Aliases inside these are left alone: torch's own machinery (decompositions, both exporters) must
# keep calling the real ops, and these packages never hold a model's code.
_ALIAS_WALK_SKIPS = ("torch", "functorch", "onnx", "onnxscript", "trt_harness.conversions.replacements")


def resolve(target: str) -> tuple[Any, str] | None:
    """(owner, attribute) for a dotted path such as `torch.Tensor.squeeze`; None if not installed."""
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            owner: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            for name in parts[split:-1]:
                owner = getattr(owner, name)
            getattr(owner, parts[-1])
        except AttributeError:
            return None
        return owner, parts[-1]
    return None


@dataclass
class _Swap:
    owner: Any
    attribute: str
    previous: Any  # _MISSING: the attribute was inherited, not set on the owner itself


def _skipped(module_name: str) -> bool:
    return any(module_name == p or module_name.startswith(p + ".") for p in _ALIAS_WALK_SKIPS)


class Patcher:
    """Collects swaps; `restore()` undoes all of them in reverse order."""

    def __init__(self) -> None:
        self._swaps: list[_Swap] = []
        self._by_original: dict[int, tuple[Callable[..., Any], Callable[..., Any]]] = {}

    def swap(self, owner: Any, attribute: str, new: Callable[..., Any]) -> None:
        original = getattr(owner, attribute)
        previous = owner.__dict__.get(attribute, _MISSING) if isinstance(owner, type) else original
        setattr(owner, attribute, new)
        self._swaps.append(_Swap(owner, attribute, previous))
        self._by_original[id(original)] = (original, new)

    def swap_aliases(self) -> None:
        """Swap module-level names bound to a swapped original (`from einops import rearrange`)."""
        for module_name, module in list(sys.modules.items()):
            if _skipped(module_name):
                continue
            try:
                namespace = vars(module)
            except TypeError:  # sys.modules may hold objects without a __dict__
                continue
            for name, value in list(namespace.items()):
                entry = self._by_original.get(id(value))
                if entry is not None and entry[0] is value:
                    setattr(module, name, entry[1])
                    self._swaps.append(_Swap(module, name, value))

    def restore(self) -> None:
        while self._swaps:
            swap = self._swaps.pop()
            if swap.previous is _MISSING:
                delattr(swap.owner, swap.attribute)
            else:
                setattr(swap.owner, swap.attribute, swap.previous)
        self._by_original.clear()
