"""ONNX graph-surgery passes built on onnx-graphsurgeon, and the driver that proves they change no output.

A pass is one module in `passes/` registering one function with `@register_pass(name)`; it edits a
`gs.Graph` in place and returns `PassOutcome(modified, changes)`. `run_passes` applies a list of them
to a file and reports what each did.
"""

from __future__ import annotations

from conversions.onnx_passes.driver import run_passes
from conversions.onnx_passes.registry import (
    PassContext,
    PassOutcome,
    register_pass,
    registered_passes,
    unregister_pass,
)

__all__ = [
    "PassContext",
    "PassOutcome",
    "register_pass",
    "registered_passes",
    "run_passes",
    "unregister_pass",
]
