"""Inline an `If` node: move its taken branch's nodes into the graph that holds it, in its place.

Used by `remove_stray_if` (conditions decided from static shapes) and `fold_constants` (conditions that
folded to constants). onnx-graphsurgeon's own If flattening is not used: it leaves an If output
without a producer when the branch returns a constant, an outer-scope tensor or an input.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs
from trt_harness.conversions.onnx_passes.graph_edit import detach, replace_uses, unique_name, walk_graphs


def owner_of(root: gs.Graph, node: gs.Node) -> gs.Graph | None:
    """The graph holding `node` now (inlining an outer If moves the Ifs nested in its taken branch)."""
    return next((graph for graph in walk_graphs(root) if any(n is node for n in graph.nodes)), None)


def inline_if(root: gs.Graph, owner: gs.Graph, if_node: gs.Node, branch: gs.Graph) -> None:
    untaken = if_node.attrs["else_branch" if branch is if_node.attrs["then_branch"] else "then_branch"]
    for node in untaken.nodes:
        detach(node)

    outer_tensors, tensor_names, node_names = _names_outside(root, branch)
    branch_nodes = list(branch.nodes)
    branch_tensors = {id(t): t for n in branch_nodes for t in (*n.inputs, *n.outputs) if not t.is_empty()}
    branch_tensors.update({id(t): t for t in branch.outputs})
    for tensor in branch_tensors.values():
        if id(tensor) not in outer_tensors and tensor.name in tensor_names:
            tensor.name = unique_name(f"{tensor.name}__{if_node.name}", tensor_names)
    for node in branch_nodes:
        node.name = unique_name(node.name or f"{if_node.name}/{node.op}", node_names)

    if_outputs = list(if_node.outputs)
    if_node.inputs.clear()
    if_node.outputs.clear()
    branch_node_ids = {id(n) for n in branch_nodes}
    taken_over: dict[int, gs.Tensor] = {}  # branch output -> the If output that replaced it
    passthrough: list[gs.Node] = []
    for if_output, branch_output in zip(if_outputs, branch.outputs, strict=True):
        producer = branch_output.inputs[0] if branch_output.inputs else None
        if id(branch_output) in taken_over:
            source = taken_over[id(branch_output)]
        elif producer is not None and id(producer) in branch_node_ids:
            # the branch's producer writes the If's output tensor itself, so the output name survives
            producer.outputs[_index(producer.outputs, branch_output)] = if_output
            replace_uses(branch_output, if_output)
            taken_over[id(branch_output)] = if_output
            continue
        else:  # an outer-scope tensor or a branch constant
            source = branch_output
        name = unique_name(f"{if_node.name}/passthrough", node_names)
        passthrough.append(gs.Node("Identity", name=name, inputs=[source], outputs=[if_output]))

    position = _index(owner.nodes, if_node)
    owner.nodes[position : position + 1] = branch_nodes + passthrough


def _names_outside(root: gs.Graph, branch: gs.Graph) -> tuple[set[int], set[str], set[str]]:
    """Ids and names of tensors, and names of nodes, in every graph but `branch` and its nested subgraphs."""
    inside = {id(branch), *(id(g) for g in branch.subgraphs(recursive=True))}
    tensor_ids: set[int] = set()
    tensor_names: set[str] = set()
    node_names: set[str] = set()
    for graph in walk_graphs(root):
        if id(graph) in inside:
            continue
        for tensor in graph.tensors().values():
            tensor_ids.add(id(tensor))
            tensor_names.add(tensor.name)
        node_names.update(node.name for node in graph.nodes)
    return tensor_ids, tensor_names, node_names


def _index(items: list, item: object) -> int:
    return next(i for i, candidate in enumerate(items) if candidate is item)
