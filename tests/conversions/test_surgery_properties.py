"""Property: every pass, alone and in the recipes' order, keeps what small random graphs compute.

Hypothesis builds chains of the patterns the node suite samples and exporters emit: Shape with
start/end feeding Reshape or an output, Squeeze/Unsqueeze on static and dynamic dims, and `If` on a
constant condition, a condition decided by a (static or dynamic) dim, or a graph input. Each model
runs on ONNX Runtime at two sizes of its dynamic dims, before and after the passes; the outputs must
be bit-identical and the result must pass `onnx.checker` with full_check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from trt_harness.conversions.onnx_passes.driver import run_passes
from trt_harness.conversions.onnx_passes.output_check import max_difference

from tests.fixtures.onnx_runtime import ALL_PASSES

FLOAT, INT64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
PASS_LISTS = [(name,) for name in ALL_PASSES] + [ALL_PASSES]


@dataclass
class Builder:
    """A graph under construction: the current tensor, its dims (int, or the name of a dynamic dim)."""

    dims: list[int | str]
    sizes: list[dict[str, int]]  # per feed: dynamic dim name -> its size
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    outputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    needs_flag: bool = False
    current: str = "x"
    count: int = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}_{self.count}"

    def constant(self, values: object, dtype: type = np.int64) -> str:
        name = self.name("c")
        self.initializers.append(numpy_helper.from_array(np.array(values, dtype=dtype), name))
        return name

    def add(self, op: str, inputs: list[str], **attrs: object) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(f"n_{op}"), **attrs))
        return out

    def actual(self, dim: int | str, feed: int) -> int:
        return dim if isinstance(dim, int) else self.sizes[feed][dim]


@st.composite
def graphs(draw: st.DrawFn) -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]]]:
    rank = draw(st.integers(1, 3))
    # static dims first: that is where folding acts (and what hypothesis tries first)
    dims: list[int | str] = [draw(st.sampled_from([2, 3, 1, f"d{axis}"])) for axis in range(rank)]
    sizes = [{d: draw(st.integers(1, 3)) for d in dims if isinstance(d, str)} for _ in range(2)]
    b = Builder(list(dims), sizes)
    for _ in range(draw(st.integers(1, 5))):
        step = draw(
            st.sampled_from(
                [_Steps.unsqueeze, _Steps.squeeze, _Steps.flatten, _Steps.shape_out, _Steps.if_, _Steps.relu]
            )
        )
        step(b, draw)
    b.outputs.insert(0, _value("y", b.dims))
    b.nodes.append(helper.make_node("Identity", [b.current], ["y"], name="n_y"))
    inputs = [_value("x", dims)]
    if b.needs_flag:
        inputs.append(helper.make_tensor_value_info("flag", BOOL, []))
    graph = helper.make_graph(b.nodes, "random", inputs, b.outputs, initializer=b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    feeds = []
    for index, feed_sizes in enumerate(sizes):
        shape = [d if isinstance(d, int) else feed_sizes[d] for d in dims]
        feed: dict[str, np.ndarray] = {"x": np.arange(np.prod(shape), dtype=np.float32).reshape(shape) - 2.5}
        if b.needs_flag:
            feed["flag"] = np.array(index == 0)
        feeds.append(feed)
    return model, feeds


def _value(name: str, dims: list[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(
        name, FLOAT, [d if isinstance(d, int) else f"{name}_{i}" for i, d in enumerate(dims)]
    )


class _Steps:
    @staticmethod
    def unsqueeze(b: Builder, draw: st.DrawFn) -> None:
        if len(b.dims) >= 5:
            return
        axis = draw(st.integers(-len(b.dims) - 1, len(b.dims)))
        b.current = b.add("Unsqueeze", [b.current, b.constant([axis])])
        b.dims.insert(axis % (len(b.dims) + 1), 1)

    @staticmethod
    def squeeze(b: Builder, draw: st.DrawFn) -> None:
        ones = [axis for axis, d in enumerate(b.dims) if d == 1]
        if not ones:
            return
        axis = draw(st.sampled_from(ones))
        b.current = b.add(
            "Squeeze", [b.current, b.constant([axis - len(b.dims) if draw(st.booleans()) else axis])]
        )
        del b.dims[axis]

    @staticmethod
    def flatten(b: Builder, draw: st.DrawFn) -> None:
        """Reshape to Concat(Shape(t, end=k), [-1]): keeps the first k dims, merges the rest."""
        if len(b.dims) < 2:
            return
        keep = draw(st.integers(1, len(b.dims) - 1))
        head = b.add("Shape", [b.current], end=keep)
        target = b.add("Concat", [head, b.constant([-1])], axis=0)
        b.current = b.add("Reshape", [b.current, target])
        merged = b.dims[keep:]
        b.dims = b.dims[:keep] + [_product(merged, b)]

    @staticmethod
    def shape_out(b: Builder, draw: st.DrawFn) -> None:
        """An extra output: part of the shape (Shape with start/end), optionally one element of it."""
        start = draw(st.integers(-len(b.dims), len(b.dims)))
        end = draw(st.integers(-len(b.dims), len(b.dims) + 1))
        value = b.add("Shape", [b.current], start=start, end=end)
        if draw(st.booleans()):
            value = b.add("ReduceSum", [value], keepdims=1)  # a value computed from the slice
        out = b.name("shape_out")
        b.nodes.append(helper.make_node("Cast", [value], [out], to=FLOAT))
        b.outputs.append(helper.make_tensor_value_info(out, FLOAT, [f"{out}_0"]))

    @staticmethod
    def if_(b: Builder, draw: st.DrawFn) -> None:
        kind = draw(st.sampled_from(["constant", "dim", "input"]))
        if kind == "constant":
            condition = b.constant(draw(st.booleans()), dtype=np.bool_)
        elif kind == "dim":
            axis = draw(st.integers(0, len(b.dims) - 1))
            dim = b.add("Gather", [b.add("Shape", [b.current]), b.constant(axis)], axis=0)
            condition = b.add("Equal", [dim, b.constant(draw(st.integers(1, 3)))])
        else:
            condition, b.needs_flag = "flag", True
        then_out, else_out = b.name("then"), b.name("else")
        shape = [None] * len(b.dims)
        then_branch = helper.make_graph(
            [helper.make_node("Mul", [b.current, b.constant(2.0, np.float32)], [then_out])],
            b.name("then_branch"),
            [],
            [helper.make_tensor_value_info(then_out, FLOAT, shape)],
        )
        else_nodes = [helper.make_node("Neg", [b.current], [else_out])]
        if draw(st.booleans()):  # an else-branch returning an outer tensor through Identity
            else_nodes = [helper.make_node("Identity", [b.current], [else_out])]
        else_branch = helper.make_graph(
            else_nodes, b.name("else_branch"), [], [helper.make_tensor_value_info(else_out, FLOAT, shape)]
        )
        b.current = b.add("If", [condition], then_branch=then_branch, else_branch=else_branch)

    @staticmethod
    def relu(b: Builder, draw: st.DrawFn) -> None:
        b.current = b.add("Relu", [b.current])


def _product(dims: list[int | str], b: Builder) -> int | str:
    if all(isinstance(d, int) for d in dims):
        return int(np.prod(dims))
    name = b.name("merged")
    for feed in b.sizes:
        feed[name] = int(np.prod([d if isinstance(d, int) else feed[d] for d in dims]))
    return name


def _ort(model: bytes | str, feed: dict[str, np.ndarray]) -> list[object]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]).run(None, feed)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=graphs())
def test_every_pass_keeps_what_random_shape_graphs_compute(
    tmp_path: Path, case: tuple[onnx.ModelProto, list[dict[str, np.ndarray]]]
) -> None:
    model, feeds = case
    source = tmp_path / "m.onnx"
    onnx.save_model(model, source)
    expected = [_ort(model.SerializeToString(), feed) for feed in feeds]
    for passes in PASS_LISTS:
        out = tmp_path / "out.onnx"
        run_passes(source, out, passes, check_feeds=feeds)
        onnx.checker.check_model(str(out), full_check=True)
        for feed, before in zip(feeds, expected, strict=True):
            after = _ort(str(out), feed)
            for index, (a, b) in enumerate(zip(before, after, strict=True)):
                assert max_difference(a, b, rtol=0.0, atol=0.0) == 0.0, (passes, index)


def test_the_full_list_holds_every_registered_pass():
    from trt_harness.conversions.onnx_passes.registry import registered_passes

    assert sorted(ALL_PASSES) == sorted(registered_passes())
