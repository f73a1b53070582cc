"""Tensor sizes while tracing: Python ints (static), SymInts (torch.export) or 0-d tensors (TorchScript)."""

from __future__ import annotations

import warnings
from typing import Any


def trace_value(size: Any) -> int:
    """The value `size` has in this trace, without adding a guard where it can be avoided.

    Use it only for decisions that the traced graph may bake in (which branch to emit), never as
    a size inside the graph: there the original `size` object keeps dynamic dims dynamic.
    """
    import torch

    if isinstance(size, int):
        return size
    if isinstance(size, torch.SymInt):
        node = size.node
        return int(node.hint) if node.has_hint() else int(size)
    if isinstance(size, torch.Tensor):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return int(size)
    return int(size)


def product(sizes: list[Any]) -> Any:
    """Product of sizes, kept symbolic; 1 for an empty list."""
    result: Any = 1
    for size in sizes:
        result = size if isinstance(result, int) and result == 1 else result * size
    return result
