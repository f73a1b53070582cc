from __future__ import annotations

import onnx_graphsurgeon as gs
from trt_harness.conversions.onnx_passes.graph_edit import GraphSnapshot
from trt_harness.conversions.onnx_passes.registry import PassContext, PassOutcome, register_pass


@register_pass("toposort")
def toposort(graph: gs.Graph, context: PassContext) -> PassOutcome:
    """Order nodes so every node comes after the producers of its inputs (subgraphs included).

    Precondition: the graph is acyclic (onnx-graphsurgeon raises on a cycle).
    """
    before = GraphSnapshot.of(graph)
    graph.toposort()
    changes = before.changes_to(GraphSnapshot.of(graph))
    return PassOutcome(bool(changes), changes)
