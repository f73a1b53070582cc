"""A model in and out of onnx-graphsurgeon without loss, and saved under the project's file policy.

onnx-graphsurgeon (0.5, 0.6) cannot export what it imports in two cases, so `GraphRoundTrip` keeps
them aside and puts them back:
- values of a type other than tensor or sequence of tensors (optionals, maps): its exporter has no
  branch for them (`UnboundLocalError: ... 'onnx_tensor'` in `export_value_info_proto`). They are
  exported under a placeholder tensor type, and the original declaration is restored by name;
- attributes of type TYPE_PROTO (`Optional(type=...)`): its importer drops them ("Attribute of type
  TYPE_PROTO is currently unsupported"). They are restored on the same node, matched by position.
Passes see such values with graphsurgeon's own `type` ("optional_type", ...), so they can leave them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from trt_harness.conversions.onnx_files import save_onnx
from trt_harness.models.core.errors import HarnessError

_EXPORTABLE_TYPES = ("tensor_type", "sequence_type", "sparse_tensor_type")


@dataclass
class GraphRoundTrip:
    """What graphsurgeon cannot carry through `export_onnx`, kept from the imported model."""

    declared_types: dict[str, onnx.TypeProto] = field(default_factory=dict)  # value name -> its type
    type_attributes: dict[int, tuple[gs.Node, list[onnx.AttributeProto]]] = field(default_factory=dict)

    @classmethod
    def import_model(cls, model: onnx.ModelProto) -> tuple[gs.Graph, GraphRoundTrip]:
        graph = gs.import_onnx(model)
        trip = cls()
        for proto_graph, _ in _graph_pairs(model.graph, graph):
            for info in (*proto_graph.input, *proto_graph.output, *proto_graph.value_info):
                if not _exportable(info.type):
                    trip.declared_types[info.name] = info.type
        for proto_node, node in _node_pairs(model.graph, graph):
            kept = [
                a
                for a in proto_node.attribute
                if a.type in (onnx.AttributeProto.TYPE_PROTO, onnx.AttributeProto.TYPE_PROTOS)
            ]
            if kept:
                trip.type_attributes[id(node)] = (node, kept)
        return graph, trip

    def export_model(self, graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
        """The model of `graph`, with `like`'s model-level fields (version, doc, metadata)."""
        with unexportable_as_tensors(graph, np.dtype(np.float32)):  # graph I/O must have a dtype
            exported = gs.export_onnx(graph)
        for proto_graph, _ in _graph_pairs(exported.graph, graph):
            for info in (*proto_graph.input, *proto_graph.output, *proto_graph.value_info):
                if info.name in self.declared_types:
                    info.type.CopyFrom(self.declared_types[info.name])
        for proto_node, node in _node_pairs(exported.graph, graph):
            saved = self.type_attributes.get(id(node))
            if saved is not None and saved[0] is node:
                present = {a.name for a in proto_node.attribute}
                proto_node.attribute.extend(a for a in saved[1] if a.name not in present)
        exported.model_version = like.model_version
        exported.domain = like.domain
        exported.doc_string = like.doc_string
        del exported.metadata_props[:]
        exported.metadata_props.extend(like.metadata_props)
        return exported


@contextmanager
def unexportable_as_tensors(root: gs.Graph, dtype: np.dtype | None = None) -> Iterator[None]:
    """While graphsurgeon exports (itself, or inside `fold_constants`), values of a type it cannot
    export pose as tensors of unknown shape: of `dtype`, or untyped when None."""
    saved: dict[int, tuple[gs.Variable, str, object, object]] = {}
    for tensor in _all_tensors(root):
        kind = getattr(tensor, "type", "tensor_type")
        unexportable = kind not in _EXPORTABLE_TYPES or isinstance(
            getattr(tensor, "dtype", None), onnx.TypeProto
        )
        if isinstance(tensor, gs.Variable) and unexportable and id(tensor) not in saved:
            saved[id(tensor)] = (tensor, kind, tensor.dtype, tensor.shape)
            tensor.type, tensor.dtype, tensor.shape = "tensor_type", dtype, None
    try:
        yield
    finally:
        for tensor, kind, dtype_, shape in saved.values():
            tensor.type, tensor.dtype, tensor.shape = kind, dtype_, shape


def _exportable(value_type: onnx.TypeProto) -> bool:
    kind = value_type.WhichOneof("value")
    if kind == "sequence_type":
        return value_type.sequence_type.elem_type.WhichOneof("value") == "tensor_type"
    return kind in (None, "tensor_type", "sparse_tensor_type")


def _all_tensors(root: gs.Graph) -> Iterator[gs.Tensor]:
    for graph in [root, *root.subgraphs(recursive=True)]:
        yield from graph.tensors().values()


def _graph_pairs(proto: onnx.GraphProto, graph: gs.Graph) -> Iterator[tuple[onnx.GraphProto, gs.Graph]]:
    """The graph and its subgraphs, each with graphsurgeon's counterpart (nodes are in the same order)."""
    yield proto, graph
    for proto_node, node in zip(proto.node, graph.nodes, strict=False):
        for attribute in proto_node.attribute:
            subgraph = node.attrs.get(attribute.name)
            if attribute.type == onnx.AttributeProto.GRAPH and isinstance(subgraph, gs.Graph):
                yield from _graph_pairs(attribute.g, subgraph)


def _node_pairs(proto: onnx.GraphProto, graph: gs.Graph) -> Iterator[tuple[onnx.NodeProto, gs.Node]]:
    for proto_graph, gs_graph in _graph_pairs(proto, graph):
        if len(proto_graph.node) == len(gs_graph.nodes):
            yield from zip(proto_graph.node, gs_graph.nodes, strict=True)


def save_model(model: onnx.ModelProto, out_path: Path, *, source: Path | None = None) -> list[Path]:
    """Check (`onnx.checker`, full check) and write `model` to `out_path` under the one ONNX file policy.

    A model whose source already fails the full check (e.g. an exporter's) is held to the basic check.
    """
    return list(save_onnx(model, out_path, check=lambda staged: _check(staged, out_path, source)))


def _check(staged: Path, final: Path, source: Path | None) -> None:
    try:
        onnx.checker.check_model(str(staged), full_check=True)
        return
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        full_error = e
    if source is not None and not _passes_full_check(source):
        try:
            onnx.checker.check_model(str(staged))
            return
        except onnx.checker.ValidationError as e:
            full_error = e
    raise HarnessError(
        f"the model after the ONNX passes fails onnx.checker, so {final} was not written: {full_error}; "
        "run the passes one at a time to find the one that broke it"
    ) from full_error


def _passes_full_check(path: Path) -> bool:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
        return False
    return True
