from __future__ import annotations

import onnx_graphsurgeon as gs
from trt_harness.conversions.onnx_passes.graph_edit import GraphSnapshot
from trt_harness.conversions.onnx_passes.registry import PassContext, PassOutcome, register_pass


@register_pass("cleanup")
def cleanup(graph: gs.Graph, context: PassContext) -> PassOutcome:
    """Remove nodes and tensors that no graph output depends on (subgraphs included).

    Graph inputs are kept even when unused, so the model's interface never changes.
    """
    before = GraphSnapshot.of(graph)
    graph.cleanup(remove_unused_graph_inputs=False)
    changes = before.changes_to(GraphSnapshot.of(graph))
    return PassOutcome(bool(changes), changes)
