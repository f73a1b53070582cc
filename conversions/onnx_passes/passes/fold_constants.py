from __future__ import annotations

import onnx_graphsurgeon as gs

from conversions.onnx_passes.graph_edit import GraphSnapshot
from conversions.onnx_passes.registry import PassContext, PassOutcome, register_pass


@register_pass("fold_constants")
def fold_constants(graph: gs.Graph, context: PassContext) -> PassOutcome:
    """Evaluate everything computable from constants (ONNX Runtime on CPU) and drop what became dead.

    Uses onnx-graphsurgeon's folding, which also folds Shape/Gather/Slice of tensors whose shapes the
    graph declares static and inlines `If` nodes whose condition became constant. Precondition: the
    ops feeding constants must run on ONNX Runtime's CPU provider (others are skipped, not failed).
    """
    before = GraphSnapshot.of(graph)
    graph.fold_constants().cleanup()
    changes = before.changes_to(GraphSnapshot.of(graph))
    return PassOutcome(bool(changes), changes)
