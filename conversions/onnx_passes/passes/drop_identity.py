from __future__ import annotations

import onnx_graphsurgeon as gs
from trt_harness.conversions.onnx_passes.graph_edit import (
    GraphSnapshot,
    contains,
    is_onnx_op,
    replace_uses,
    walk_graphs,
)
from trt_harness.conversions.onnx_passes.registry import PassContext, PassOutcome, register_pass


@register_pass("drop_identity")
def drop_identity(graph: gs.Graph, context: PassContext) -> PassOutcome:
    """Remove Identity nodes (subgraphs included), then nodes no output depends on.

    Consumers of an Identity read its input instead. When the Identity produces a graph output, the
    producer of its input is made to write the output tensor itself, so output names never change.
    Kept (with the reason in the changes): an Identity of a constant, and one that is the only way to
    expose a graph input, an outer-scope tensor or another output under the output's name.
    """
    changes: list[str] = []
    removed = 0
    for owner in walk_graphs(graph):
        local_nodes = {id(node) for node in owner.nodes}
        dropped: set[int] = set()
        for node in owner.nodes:
            if not is_onnx_op(node, "Identity"):
                continue
            reason = _removal_blocker(owner, node, local_nodes)
            if reason is not None:
                changes.append(f"kept Identity '{node.name}': {reason}")
                continue
            source, target = node.inputs[0], node.outputs[0]
            node.inputs.clear()
            node.outputs.clear()
            if contains(owner.outputs, target):
                producer = source.inputs[0]
                producer.outputs[next(i for i, t in enumerate(producer.outputs) if t is source)] = target
                replace_uses(source, target)
            else:
                replace_uses(target, source)
            dropped.add(id(node))
        owner.nodes[:] = [node for node in owner.nodes if id(node) not in dropped]
        removed += len(dropped)
    if removed:
        changes.append(f"removed {removed} Identity nodes")
    before = GraphSnapshot.of(graph)
    graph.cleanup(remove_unused_graph_inputs=False)
    dead = before.changes_to(GraphSnapshot.of(graph))
    changes.extend(f"dead code: {change}" for change in dead)
    return PassOutcome(removed > 0 or bool(dead), tuple(changes))


def _removal_blocker(owner: gs.Graph, node: gs.Node, local_nodes: set[int]) -> str | None:
    """Why this Identity must stay, or None if it can go."""
    source, target = node.inputs[0], node.outputs[0]
    if isinstance(source, gs.Constant):
        # Consumers would read an initializer, whose value ONNX's load-time inference evaluates: that can
        # expose a constraint the model breaks where the value was hidden (e.g. Range given a 1-element
        # vector, as ONNX's own AffineGrid function body does, once an If returning it was inlined).
        # Making constants visible is fold_constants' decision, checked on ORT; it folds Identity too.
        return f"its input '{source.name}' is a constant (fold_constants folds such an Identity when it can)"
    if not contains(owner.outputs, target):
        return None
    if contains(owner.outputs, source):
        return f"outputs '{source.name}' and '{target.name}' of graph '{owner.name}' are the same tensor"
    if contains(owner.inputs, source):
        return f"it passes input '{source.name}' of graph '{owner.name}' to its output '{target.name}'"
    producer = source.inputs[0] if len(source.inputs) == 1 else None
    if producer is None or id(producer) not in local_nodes:
        kind = "a constant" if isinstance(source, gs.Constant) else "produced outside this graph"
        return (
            f"its input '{source.name}' is {kind}, so output '{target.name}' of graph '{owner.name}' needs it"
        )
    return None
