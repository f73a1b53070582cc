from __future__ import annotations

import onnx_graphsurgeon as gs
from trt_harness.conversions.onnx_passes.graph_edit import is_onnx_op, walk_graphs
from trt_harness.conversions.onnx_passes.if_inlining import inline_if, owner_of
from trt_harness.conversions.onnx_passes.partial_eval import PartialEvaluator, Unknown, decided
from trt_harness.conversions.onnx_passes.registry import PassContext, PassOutcome, register_pass
from trt_harness.conversions.onnx_passes.shape_facts import ShapeFacts


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
    if not any(is_onnx_op(n, "If") for owner in walk_graphs(graph) for n in owner.nodes):
        return PassOutcome(False, ())
    while True:
        # Shapes are re-inferred each round: an inlined If often reveals the rank of what follows it.
        evaluator = PartialEvaluator(ShapeFacts(graph, context.static_dims))
        undecided: list[str] = []
        inlined_this_round = 0
        for node in [n for owner in walk_graphs(graph) for n in owner.nodes if is_onnx_op(n, "If")]:
            owner = owner_of(graph, node)
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
            inline_if(graph, owner, node, node.attrs[f"{branch}_branch"])
            inlined_this_round += 1
            inlined.append(
                f"inlined If '{node.name}' ({branch}-branch): condition {condition} is {str(verdict).lower()}"
            )
        if inlined_this_round == 0:
            return PassOutcome(bool(inlined), tuple(inlined + undecided))
