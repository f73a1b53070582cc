"""The registry of graph-surgery passes: each pass module registers one function by name."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from models.core.errors import UsageError

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs


@dataclass(frozen=True)
class PassContext:
    """What a pass may assume beyond the graph itself.

    `static_dims` (graph input name -> axis -> size) are dims the recipe promises are fixed
    although the exported graph declares them dynamic.
    """

    static_dims: Mapping[str, Mapping[int, int]] = field(default_factory=dict)


class PassOutcome(NamedTuple):
    modified: bool
    changes: tuple[str, ...]


GraphPass = Callable[["gs.Graph", PassContext], PassOutcome]

_PASSES: dict[str, GraphPass] = {}


def register_pass(name: str) -> Callable[[GraphPass], GraphPass]:
    """Register a pass under `name`; the pass edits the graph in place and returns a PassOutcome."""

    def register(graph_pass: GraphPass) -> GraphPass:
        if name in _PASSES and _PASSES[name] is not graph_pass:
            raise ValueError(f"two ONNX passes are registered as '{name}'; rename one of them")
        _PASSES[name] = graph_pass
        return graph_pass

    return register


def unregister_pass(name: str) -> None:
    """Forget a pass registered at run time (tests register throwaway passes)."""
    _PASSES.pop(name, None)


def _import_pass_modules() -> None:
    import conversions.onnx_passes.passes as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


def registered_passes() -> list[str]:
    _import_pass_modules()
    return sorted(_PASSES)


def get_pass(name: str) -> GraphPass:
    known = registered_passes()
    if name not in _PASSES:
        raise UsageError(
            f"unknown ONNX pass '{name}'; known passes: {', '.join(known)} "
            "(fix the recipe's surgery_passes or the --passes option)"
        )
    return _PASSES[name]
