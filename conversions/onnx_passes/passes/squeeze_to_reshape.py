from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from trt_harness.conversions.onnx_passes.graph_edit import (
    is_onnx_op,
    shape_text,
    tensor_names,
    unique_name,
    walk_graphs,
)
from trt_harness.conversions.onnx_passes.partial_eval import PartialEvaluator, Unknown
from trt_harness.conversions.onnx_passes.registry import PassContext, PassOutcome, register_pass
from trt_harness.conversions.onnx_passes.shape_facts import Dims, ShapeFacts

# (size or None when dynamic, the input axis it comes from or None for an inserted 1)
OutputDim = tuple[int | None, int | None]
_OPS = ("Squeeze", "Unsqueeze")


@register_pass("squeeze_to_reshape")
def squeeze_to_reshape(graph: gs.Graph, context: PassContext) -> PassOutcome:
    """Turn Squeeze/Unsqueeze into Reshape with a constant target shape where the input shape allows.

    The input's shape comes from the graph plus `context.static_dims`. Static dims are written out;
    a dynamic dim (e.g. the batch) that keeps its position becomes 0 ("copy this dim"); at most one
    dynamic dim that moves becomes -1. Squeezed dims must be known to be 1. Nodes that do not meet
    this are kept, with the reason in the changes. The old axes inputs are left for `cleanup`.
    """
    if not any(is_onnx_op(n, op) for owner in walk_graphs(graph) for n in owner.nodes for op in _OPS):
        return PassOutcome(False, ())
    facts = ShapeFacts(graph, context.static_dims)
    evaluator = PartialEvaluator(facts)
    names = tensor_names(graph)
    changes: list[str] = []
    converted = 0
    for owner in walk_graphs(graph):
        for node in owner.nodes:
            if not (is_onnx_op(node, "Squeeze") or is_onnx_op(node, "Unsqueeze")):
                continue
            dims = facts.dims(node.inputs[0])
            target = _reshape_target(node, dims, evaluator)
            if isinstance(target, Unknown):
                changes.append(f"kept {node.op} '{node.name}': {target.reason}")
                continue
            shape = gs.Constant(unique_name(f"{node.name}/shape", names), np.array(target, dtype=np.int64))
            changes.append(
                f"{node.op} '{node.name}' on {shape_text(dims)} -> Reshape to {shape_text(target)}"
            )
            while len(node.inputs) > 1:
                node.inputs.pop()
            node.inputs.append(shape)
            node.op = "Reshape"
            node.attrs.clear()
            converted += 1
    return PassOutcome(converted > 0, tuple(changes))


def _reshape_target(node: gs.Node, dims: Dims | None, evaluator: PartialEvaluator) -> list[int] | Unknown:
    if dims is None:
        return Unknown(f"the rank of its input '{node.inputs[0].name}' is unknown")
    axes = _axes(node, evaluator)
    if isinstance(axes, Unknown):
        return axes
    outputs = _squeezed(dims, axes) if node.op == "Squeeze" else _unsqueezed(dims, axes)
    if isinstance(outputs, Unknown):
        return outputs
    target: list[int] = []
    for index, (size, source) in enumerate(outputs):
        if size == 0:
            return Unknown("a zero-size dim would read as 'copy' in Reshape")
        if size is not None:
            target.append(size)
        elif source == index:
            target.append(0)
        elif -1 not in target:
            target.append(-1)
        else:
            return Unknown(f"more than one dynamic dim of {shape_text(dims)} changes position")
    return target


def _axes(node: gs.Node, evaluator: PartialEvaluator) -> list[int] | None | Unknown:
    if "axes" in node.attrs:  # before opset 13
        return list(node.attrs["axes"])
    if len(node.inputs) < 2 or node.inputs[1].is_empty():
        return None
    axes = evaluator.value(node.inputs[1])
    if isinstance(axes, Unknown) or any(isinstance(a, Unknown) for a in axes.flat):
        return Unknown(f"its axes '{node.inputs[1].name}' are not constant")
    return [int(a) for a in axes.flat]


def _squeezed(dims: Dims, axes: list[int] | None) -> list[OutputDim] | Unknown:
    if axes is None:
        if None in dims:
            return Unknown(f"it squeezes every 1 of {shape_text(dims)}, and a dynamic dim might be 1")
        removed = {axis for axis, size in enumerate(dims) if size == 1}
    else:
        removed = {axis % len(dims) for axis in axes}
        not_one = [axis for axis in sorted(removed) if dims[axis] != 1]
        if not_one:
            return Unknown(f"squeezed dim(s) {not_one} of {shape_text(dims)} are not known to be 1")
    return [(size, axis) for axis, size in enumerate(dims) if axis not in removed]


def _unsqueezed(dims: Dims, axes: list[int] | None) -> list[OutputDim] | Unknown:
    if axes is None:
        return Unknown("it has no axes")
    rank = len(dims) + len(axes)
    inserted = {axis % rank for axis in axes}
    sources = iter(enumerate(dims))
    outputs: list[OutputDim] = []
    for index in range(rank):
        if index in inserted:
            outputs.append((1, None))
        else:
            axis, size = next(sources)
            outputs.append((size, axis))
    return outputs
