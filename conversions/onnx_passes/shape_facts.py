"""Tensor shapes a pass may rely on: the graph's own, plus the recipe's static dims propagated by ONNX inference.

Dims are ints when known and None when dynamic. Inference runs on a weightless copy (large constants
become typed inputs), so it is cheap and works for models over 2 GB.

Only what ONNX Runtime enforces is trusted: the declared shapes of the graph's inputs, and constants.
A shape declared on an intermediate tensor (`value_info`, an output) may be stale, e.g. static where
the model has since become dynamic, so intermediates get the inferred shape or none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import onnx
import onnx_graphsurgeon as gs
from trt_harness.conversions.onnx_passes.graph_edit import walk_graphs
from trt_harness.conversions.onnx_passes.model_io import unexportable_as_tensors

Dims = tuple[int | None, ...]

# Constants this large never feed shape arithmetic; inference sees them as inputs of known type and shape.
_WEIGHT_ELEMENTS = 4096


class ShapeFacts:
    """Known shapes keyed by tensor object, so they survive renaming while a pass edits the graph."""

    def __init__(self, graph: gs.Graph, static_dims: Mapping[str, Mapping[int, int]]) -> None:
        inferred, self.non_tensor_values = _inferred_shapes(graph, static_dims)
        self._dims: dict[int, Dims] = {}
        self._tensors: list[gs.Tensor] = []  # kept alive so their ids stay unique
        trusted = {id(tensor) for tensor in graph.inputs}
        for owner in walk_graphs(graph):
            for tensor in owner.tensors().values():
                own = _own_dims(tensor) if id(tensor) in trusted or isinstance(tensor, gs.Constant) else None
                dims = _merge(own, inferred.get(tensor.name))
                if dims is not None:
                    self._tensors.append(tensor)
                    self._dims[id(tensor)] = dims
        for tensor in graph.inputs:
            promised = static_dims.get(tensor.name, {})
            dims = self._dims.get(id(tensor))
            if promised and dims is not None:
                self._dims[id(tensor)] = tuple(promised.get(axis, dim) for axis, dim in enumerate(dims))

    def dims(self, tensor: gs.Tensor) -> Dims | None:
        return self._dims.get(id(tensor))


def _own_dims(tensor: gs.Tensor) -> Dims | None:
    shape = tensor.shape
    if shape is None:
        return None
    return tuple(dim if isinstance(dim, int) and dim >= 0 else None for dim in shape)


def _merge(own: Dims | None, inferred: Dims | None) -> Dims | None:
    if own is None or inferred is None or len(own) != len(inferred):
        return own if own is not None else inferred
    return tuple(a if a is not None else b for a, b in zip(own, inferred, strict=True))


def _inferred_shapes(
    graph: gs.Graph, static_dims: Mapping[str, Mapping[int, int]]
) -> tuple[dict[str, Dims], frozenset[str]]:
    """Inferred shapes by tensor name, and the names of values that are not tensors (sequences, optionals)."""
    if not any(
        isinstance(t, gs.Constant) and math.prod(t.shape) > _WEIGHT_ELEMENTS
        for owner in walk_graphs(graph)
        for t in owner.tensors().values()
    ):
        # no weights to keep out of the export: export as is and drop the untrusted shapes from the proto
        with unexportable_as_tensors(graph):
            model = gs.export_onnx(graph, do_type_check=False)
        _keep_only_input_shapes(model.graph, static_dims)
        return _read_inferred(model)
    skeleton = graph.copy()
    input_names = {tensor.name for tensor in skeleton.inputs}
    for tensor in skeleton.inputs:
        promised = static_dims.get(tensor.name, {})
        if tensor.shape is not None:
            tensor.shape = [promised.get(axis, dim) for axis, dim in enumerate(tensor.shape)]
    for owner in walk_graphs(skeleton):
        for tensor in owner.tensors().values():
            if isinstance(tensor, gs.Constant) and math.prod(tensor.shape) > _WEIGHT_ELEMENTS:
                tensor.to_variable(dtype=tensor.dtype, shape=list(tensor.shape))
                if not hasattr(tensor, "type"):
                    # onnx-graphsurgeon 0.6's Constant.to_variable leaves Variable.type unset, and export needs it
                    tensor.type = "tensor_type"
                skeleton.inputs.append(tensor)
            elif isinstance(tensor, gs.Variable) and tensor.name not in input_names:
                # stale annotations (e.g. an exporter's dim_params) would shadow what the static dims imply
                tensor.shape = None
    with unexportable_as_tensors(skeleton):
        model = gs.export_onnx(skeleton, do_type_check=False)
    return _read_inferred(model)


def _keep_only_input_shapes(root: onnx.GraphProto, static_dims: Mapping[str, Mapping[int, int]]) -> None:
    """What the skeleton above does, on the exported proto: the graph inputs' shapes (with the static
    dims promised) are kept, every other declared shape is dropped (types stay)."""
    for value in root.input:
        for axis, size in static_dims.get(value.name, {}).items():
            dims = value.type.tensor_type.shape.dim
            if value.type.HasField("tensor_type") and axis < len(dims):
                dims[axis].Clear()
                dims[axis].dim_value = size
    graphs = [(root, True)]
    while graphs:
        current, top = graphs.pop()
        for value in (*current.value_info, *current.output, *(() if top else current.input)):
            if value.type.HasField("tensor_type"):
                value.type.tensor_type.ClearField("shape")
        for node in current.node:
            for attr in node.attribute:
                graphs.extend(
                    (g, False) for g in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs)
                )


def _read_inferred(model: onnx.ModelProto) -> tuple[dict[str, Dims], frozenset[str]]:
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except onnx.shape_inference.InferenceError:
        return {}, frozenset()
    shapes: dict[str, Dims] = {}
    non_tensors: set[str] = set()
    graphs = [model.graph]
    while graphs:
        current = graphs.pop()
        for info in (*current.input, *current.value_info, *current.output):
            if info.type.WhichOneof("value") not in (None, "tensor_type"):
                non_tensors.add(info.name)
            if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
                shapes[info.name] = tuple(
                    dim.dim_value if dim.HasField("dim_value") else None
                    for dim in info.type.tensor_type.shape.dim
                )
        for node in current.node:
            graphs.extend(attr.g for attr in node.attribute if attr.type == onnx.AttributeProto.GRAPH)
            for attr in node.attribute:
                graphs.extend(attr.graphs)
    return shapes, frozenset(non_tensors)
