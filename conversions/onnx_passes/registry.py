"""The registry of graph-surgery passes: each module of `passes/` registers one function by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from trt_harness.models.core.registry import Registry

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

PASSES: Registry[GraphPass] = Registry(
    "ONNX pass",
    package="trt_harness.conversions.onnx_passes.passes",
    hint="fix the recipe's surgery_passes or the --passes option",
)


def register_pass(name: str) -> Callable[[GraphPass], GraphPass]:
    """Register a pass under `name`; the pass edits the graph in place and returns a PassOutcome."""
    return PASSES.decorator(name)


def unregister_pass(name: str) -> None:
    """Forget a pass registered at run time (tests register throwaway passes)."""
    PASSES.unregister(name)


def registered_passes() -> list[str]:
    return PASSES.names()


def get_pass(name: str) -> GraphPass:
    return PASSES.get(name)
