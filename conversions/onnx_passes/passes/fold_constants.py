from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import onnx_graphsurgeon as gs
from trt_harness.conversions.onnx_passes.graph_edit import (
    GraphSnapshot,
    contains,
    is_onnx_op,
    tensor_names,
    unique_name,
    walk_graphs,
)
from trt_harness.conversions.onnx_passes.if_inlining import inline_if, owner_of
from trt_harness.conversions.onnx_passes.model_io import unexportable_as_tensors
from trt_harness.conversions.onnx_passes.registry import PassContext, PassOutcome, register_pass
from trt_harness.conversions.onnx_passes.shape_facts import ShapeFacts

# Ops whose outputs are sequences or optionals by definition (onnx-graphsurgeon folds values into
# numpy arrays, and a list or None in their place crashes it: `'list' object has no attribute 'nbytes'`).
_NON_TENSOR_OPS = frozenset(
    {
        "Optional",
        "OptionalGetElement",
        "SequenceConstruct",
        "SequenceEmpty",
        "SequenceErase",
        "SequenceInsert",
        "SequenceMap",
        "SplitToSequence",
    }
)
_MAX_ROUNDS = 8  # fold, inline the Ifs whose condition became constant, fold what they revealed, ...
_INT64_MAX = np.iinfo(np.int64).max


@register_pass("fold_constants")
def fold_constants(graph: gs.Graph, context: PassContext) -> PassOutcome:
    """Evaluate everything computable from constants and static shapes, and drop what became dead.

    Uses onnx-graphsurgeon's folding (ONNX Runtime on CPU, plus Shape/Gather/Slice of tensors of
    static shape), around three of its defects:
    - it ignores `Shape`'s `start`/`end` attributes, so such a Shape is split into Shape -> Slice for
      the folding (and rejoined where it stays);
    - it reads the shapes declared on intermediate tensors, which may be stale, so during the folding
      they are replaced by the shapes inference derives from the graph's inputs (`ShapeFacts`);
    - its If flattening can leave an If output without a producer, so it is off, and Ifs whose
      condition became constant are inlined by our own `inline_if`, then folding runs again.
    Sequence- and optional-valued tensors are never folded. The recipe's `static_dims` are not used:
    folding bakes shapes into the model. Precondition: the ops feeding constants must run on ONNX
    Runtime's CPU provider (others are left, not failed).
    """
    if not _has_roots_to_fold(graph):
        return PassOutcome(False, ())
    before = GraphSnapshot.of(graph)
    inlined: list[str] = []
    for _ in range(_MAX_ROUNDS):
        # inference (the costly part) only where its answers are used: shapes by Shape nodes, value
        # kinds where sequences/optionals may be
        facts = ShapeFacts(graph, {}) if _inference_matters(graph) else None
        non_tensors = _non_tensor_names(graph, facts)
        splits = _split_shape_ranges(graph)
        with _trusted_shapes(graph, facts), unexportable_as_tensors(graph):
            # graphsurgeon's own recursion into subgraphs drops `should_exclude_node`, so recurse here
            # (outer graph first, as graphsurgeon does: folding it may make subgraph inputs constant)
            for owner in walk_graphs(graph):
                owner.fold_constants(
                    recurse_subgraphs=False,
                    flatten_subgraphs=False,
                    should_exclude_node=lambda node, names=non_tensors: _produces(node, names),
                    recurse_functions=False,
                )
        _rejoin_shape_ranges(splits)
        graph.cleanup(remove_unused_graph_inputs=False)
        inlined_now = _inline_constant_ifs(graph)
        if not inlined_now:
            break
        inlined.extend(inlined_now)
    changes = (*before.changes_to(GraphSnapshot.of(graph)), *inlined)
    return PassOutcome(bool(changes), changes)


def _produces(node: gs.Node, names: set[str]) -> bool:
    return any(tensor.name in names for tensor in node.outputs)


def _has_roots_to_fold(root: gs.Graph) -> bool:
    """Whether folding can start anywhere: a constant, a node without inputs, or a Shape/Size."""
    for graph in walk_graphs(root):
        if any(isinstance(t, gs.Constant) for t in graph.tensors().values()):
            return True
        if any(not node.inputs or node.op in ("Shape", "Size") for node in graph.nodes):
            return True
    return False


def _inference_matters(root: gs.Graph) -> bool:
    for graph in walk_graphs(root):
        for node in graph.nodes:
            if is_onnx_op(node, "Shape") or node.op in _NON_TENSOR_OPS or node.subgraphs():
                return True
        if any(getattr(t, "type", "tensor_type") != "tensor_type" for t in graph.tensors().values()):
            return True
    return False


def _non_tensor_names(root: gs.Graph, facts: ShapeFacts | None) -> set[str]:
    """Names of sequence/optional values: inferred, declared, or produced by a sequence/optional op."""
    names = set(facts.non_tensor_values) if facts is not None else set()
    for graph in walk_graphs(root):
        for tensor in graph.tensors().values():
            if getattr(tensor, "type", "tensor_type") != "tensor_type":
                names.add(tensor.name)
        for node in graph.nodes:
            if node.op in _NON_TENSOR_OPS:
                names.update(t.name for t in node.outputs)
            for subgraph in node.subgraphs():  # If/Loop/Scan returning what their bodies return
                if any(getattr(t, "type", "tensor_type") != "tensor_type" for t in subgraph.outputs):
                    names.update(t.name for t in node.outputs)
    return names


_Split = tuple[gs.Node, gs.Node, dict[str, int]]  # the Shape, the Slice after it, the Shape's own attrs


def _split_shape_ranges(root: gs.Graph) -> list[_Split]:
    """Turn each `Shape(start, end)` into `Shape -> Slice(start, end)`, which graphsurgeon folds right."""
    names = tensor_names(root)
    splits: list[_Split] = []
    for graph in walk_graphs(root):
        for index in reversed(range(len(graph.nodes))):
            node = graph.nodes[index]
            ranges = {k: int(node.attrs[k]) for k in ("start", "end") if k in node.attrs}
            if not (is_onnx_op(node, "Shape") and ranges):
                continue
            output = node.outputs[0]
            full = gs.Variable(unique_name(f"{output.name}/full", names), dtype=np.int64)
            bounds = [
                gs.Constant(unique_name(f"{output.name}/{key}", names), np.array([value], dtype=np.int64))
                for key, value in (
                    ("starts", ranges.get("start", 0)),
                    ("ends", ranges.get("end", _INT64_MAX)),
                )
            ]
            axes = gs.Constant(unique_name(f"{output.name}/axes", names), np.array([0], dtype=np.int64))
            node.attrs.pop("start", None)
            node.attrs.pop("end", None)
            node.outputs[0] = full
            piece = gs.Node(
                "Slice", name=f"{node.name}/range", inputs=[full, *bounds, axes], outputs=[output]
            )
            graph.nodes.insert(index + 1, piece)
            splits.append((node, piece, ranges))
    return splits


def _rejoin_shape_ranges(splits: list[_Split]) -> None:
    """Undo the split of each Shape that was not folded, so the graph keeps its original form."""
    for shape, piece, ranges in splits:
        full = shape.outputs[0] if shape.outputs else None
        if full is None or not piece.outputs or piece.inputs[0] is not full or len(full.outputs) != 1:
            continue  # folded: both nodes were dropped (or now serve another consumer)
        shape.attrs.update(ranges)
        shape.outputs[0] = piece.outputs[0]
        piece.inputs.clear()
        piece.outputs.clear()
        # the now unconnected Slice is removed by the cleanup after the folding


@contextmanager
def _trusted_shapes(root: gs.Graph, facts: ShapeFacts | None) -> Iterator[None]:
    """While graphsurgeon folds, intermediates carry only the shapes inference proved (or none)."""
    if facts is None:  # no Shape node reads them
        yield
        return
    declared: dict[int, tuple[gs.Variable, object]] = {}
    for graph in walk_graphs(root):
        for tensor in graph.tensors().values():  # a subgraph lists the outer tensors it reads too
            if (
                isinstance(tensor, gs.Variable)
                and id(tensor) not in declared
                and not contains(root.inputs, tensor)
            ):
                declared[id(tensor)] = (tensor, tensor.shape)
                dims = facts.dims(tensor)
                tensor.shape = None if dims is None else list(dims)
    try:
        yield
    finally:
        for tensor, shape in declared.values():
            if isinstance(tensor, gs.Variable):
                tensor.shape = shape


def _inline_constant_ifs(root: gs.Graph) -> list[str]:
    inlined: list[str] = []
    for node in [n for graph in walk_graphs(root) for n in graph.nodes if is_onnx_op(n, "If")]:
        owner = owner_of(root, node)
        condition = node.inputs[0] if node.inputs else None
        if owner is None or not isinstance(condition, gs.Constant) or condition.values.size != 1:
            continue
        taken = bool(condition.values.reshape(()))
        branch = "then" if taken else "else"
        inline_if(root, owner, node, node.attrs[f"{branch}_branch"])
        inlined.append(
            f"inlined If '{node.name}' ({branch}-branch): its condition folded to {str(taken).lower()}"
        )
    return inlined
