from __future__ import annotations

import onnx_graphsurgeon as gs

from conversions.onnx_passes.graph_edit import detach, is_onnx_op, replace_uses, unique_name, walk_graphs
from conversions.onnx_passes.partial_eval import PartialEvaluator, Unknown, decided
from conversions.onnx_passes.registry import PassContext, PassOutcome, register_pass
from conversions.onnx_passes.shape_facts import ShapeFacts


@register_pass("remove_stray_if")
def remove_stray_if(graph: gs.Graph, context: PassContext) -> PassOutcome:
    """Inline every `If` whose condition is decidable from static shapes, keeping the taken branch.

    The TorchScript exporter turns `x.squeeze(1)` on a dim it cannot prove is 1 into
    Shape -> Gather -> Equal(dim, 1) -> If(then: Squeeze, else: Identity). The branches have different
    ranks, which TensorRT rejects unless it can decide the condition at build time. This pass evaluates
    the condition from the graph's static shapes plus `context.static_dims` (propagated through ONNX
    shape inference), then moves the taken branch's nodes into the enclosing graph in place of the If.
    Branch tensors whose names collide with names elsewhere are renamed; the If's output names are kept.
    Ifs it cannot decide are left, with the reason in the changes. The condition's now-dead nodes
    stay for the `cleanup` pass. Preconditions: none (nested Ifs are handled too).
    """
    inlined: list[str] = []
    while True:
        # Shapes are re-inferred each round: an inlined If often reveals the rank of what follows it.
        evaluator = PartialEvaluator(ShapeFacts(graph, context.static_dims))
        undecided: list[str] = []
        inlined_this_round = 0
        for node in [n for owner in walk_graphs(graph) for n in owner.nodes if is_onnx_op(n, "If")]:
            owner = _owner(graph, node)
            if owner is None:  # it sat in the untaken branch of an If inlined this round
                continue
            verdict = decided(evaluator.value(node.inputs[0]))
            condition = evaluator.describe(node.inputs[0])
            if isinstance(verdict, Unknown):
                undecided.append(
                    f"left If '{node.name}': cannot decide its condition {condition}: {verdict.reason}"
                )
                continue
            branch = "then" if verdict else "else"
            _inline(graph, owner, node, node.attrs[f"{branch}_branch"])
            inlined_this_round += 1
            inlined.append(
                f"inlined If '{node.name}' ({branch}-branch): condition {condition} is {str(verdict).lower()}"
            )
        if inlined_this_round == 0:
            return PassOutcome(bool(inlined), tuple(inlined + undecided))


def _owner(root: gs.Graph, node: gs.Node) -> gs.Graph | None:
    """The graph holding `node` now (inlining an outer If moves the Ifs nested in its taken branch)."""
    return next((graph for graph in walk_graphs(root) if any(n is node for n in graph.nodes)), None)


def _inline(root: gs.Graph, owner: gs.Graph, if_node: gs.Node, branch: gs.Graph) -> None:
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
