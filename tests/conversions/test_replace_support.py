"""Shared helpers of the replacement tests: export with replacements, list ONNX op types, run in ONNX Runtime.

No tests here; the test_replace_* modules import it as `tests.conversions.test_replace_support`.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from trt_harness.conversions.replacements import AppliedReplacements, applied


def input_names(count: int) -> list[str]:
    return [f"input{i}" for i in range(count)]


def export_onnx(
    model: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    exporter: str,
    dynamic_axes: Sequence[Sequence[int]],
    replacements: Sequence[str] = (),
    dynamo_shapes: tuple[Mapping[int, Any], ...] | None = None,
) -> tuple[onnx.ModelProto, AppliedReplacements]:
    """Export `model` with the named replacements in force; dims in `dynamic_axes` stay dynamic."""
    names = input_names(len(args))
    with (
        applied(replacements) as record,
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            shapes = dynamo_shapes or tuple(
                {a: torch.export.Dim.DYNAMIC for a in axes} for axes in dynamic_axes
            )
            program = torch.onnx.export(
                model, args, None, input_names=names, output_names=["output"], dynamo=True,
                dynamic_shapes=shapes, external_data=False, opset_version=18,
            )  # fmt: skip
            proto = program.model_proto
        else:
            buffer = io.BytesIO()
            torch.onnx.export(
                model, args, buffer, input_names=names, output_names=["output"], dynamo=False, opset_version=18,
                dynamic_axes={n: {a: f"{n}_{a}" for a in axes} for n, axes in zip(names, dynamic_axes, strict=True)},
            )  # fmt: skip
            proto = onnx.load_from_string(buffer.getvalue())
    return proto, record


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from _nodes(subgraph)


def op_types(proto: onnx.ModelProto) -> set[str]:
    """Every op type in the model, subgraphs (If branches) included."""
    return {node.op_type for node in _nodes(proto.graph)}


def nodes_of(proto: onnx.ModelProto, op_type: str) -> list[onnx.NodeProto]:
    return [node for node in _nodes(proto.graph) if node.op_type == op_type]


def run_onnx(proto: onnx.ModelProto, args: Sequence[torch.Tensor]) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {name: arg.numpy() for name, arg in zip(input_names(len(args)), args, strict=True)}
    return session.run(None, feed)[0]


def assert_runs_like_torch(
    proto: onnx.ModelProto,
    model: torch.nn.Module,
    args: Sequence[torch.Tensor],
    atol: float,
    rtol: float = 0.0,
) -> None:
    """ONNX Runtime on inputs of other sizes than the traced ones gives torch's result (within atol, rtol)."""
    with torch.no_grad():
        expected = model(*args).numpy()
    actual = run_onnx(proto, args)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol)
