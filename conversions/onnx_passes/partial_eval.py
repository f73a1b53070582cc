"""Evaluate small shape-arithmetic tensors from known shapes, element by element.

A value is a numpy object array whose elements are numbers or `Unknown` (which carries why it is
unknown), so `Gather(Shape(x), 0)` is known when dim 0 of x is, even if other dims of x are dynamic.
Only the ops exporters use to compute shapes and conditions are understood; anything else is Unknown.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from trt_harness.conversions.onnx_passes.graph_edit import DEFAULT_DOMAINS
from trt_harness.conversions.onnx_passes.shape_facts import ShapeFacts

# Shape arithmetic never involves constants this large; reading weights as Python objects would be slow.
_MAX_CONSTANT_ELEMENTS = 1024


@dataclass(frozen=True)
class Unknown:
    reason: str


Value = np.ndarray | Unknown  # object-dtype array, or wholly unknown
Elementwise = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _strict(fn: Callable[[Any, Any], Any]) -> Elementwise:
    def apply(a: Any, b: Any) -> Any:
        for operand in (a, b):
            if isinstance(operand, Unknown):
                return operand
        return fn(a, b)

    return np.frompyfunc(apply, 2, 1)


def _logical(fn: Callable[[bool, bool], bool], absorbing: bool) -> Elementwise:
    """And/Or: a known absorbing operand (False for And, True for Or) decides despite an unknown one."""

    def apply(a: Any, b: Any) -> Any:
        if any(not isinstance(x, Unknown) and bool(x) == absorbing for x in (a, b)):
            return absorbing
        for operand in (a, b):
            if isinstance(operand, Unknown):
                return operand
        return fn(bool(a), bool(b))

    return np.frompyfunc(apply, 2, 1)


_ELEMENTWISE: dict[str, Elementwise] = {
    "Equal": _strict(operator.eq),
    "Greater": _strict(operator.gt),
    "GreaterOrEqual": _strict(operator.ge),
    "Less": _strict(operator.lt),
    "LessOrEqual": _strict(operator.le),
    "Add": _strict(operator.add),
    "Sub": _strict(operator.sub),
    "Mul": _strict(operator.mul),
    "And": _logical(operator.and_, absorbing=False),
    "Or": _logical(operator.or_, absorbing=True),
    "Xor": _strict(operator.xor),
}


class PartialEvaluator:
    def __init__(self, facts: ShapeFacts) -> None:
        self._facts = facts
        self._memo: dict[int, Value] = {}
        self._seen: list[gs.Tensor] = []  # kept alive so memo ids stay unique

    def value(self, tensor: gs.Tensor) -> Value:
        key = id(tensor)
        if key not in self._memo:
            self._seen.append(tensor)
            self._memo[key] = self._compute(tensor)
        return self._memo[key]

    def describe(self, tensor: gs.Tensor) -> str:
        """`Op(a, b)` with the operands' values, e.g. `Equal(4, 1)`; the value itself for a leaf."""
        if isinstance(tensor, gs.Constant):
            return _text(self.value(tensor))
        if not tensor.inputs:
            return f"'{tensor.name}'"
        node = tensor.inputs[0]
        operands = ", ".join(_text(self.value(t)) for t in node.inputs if not t.is_empty())
        return f"{node.op}({operands})"

    def _compute(self, tensor: gs.Tensor) -> Value:
        if isinstance(tensor, gs.Constant):
            return _constant(tensor, tensor.name)
        if not tensor.inputs:
            return Unknown(f"it depends on the value of graph input '{tensor.name}'")
        node = tensor.inputs[0]
        if node.domain not in DEFAULT_DOMAINS:
            return Unknown(f"it depends on custom op {node.domain}::{node.op} '{node.name}'")
        if node.outputs[0] is not tensor:
            return Unknown(f"it depends on a secondary output of {node.op} node '{node.name}'")
        if node.op in _ELEMENTWISE:
            return self._elementwise(node, _ELEMENTWISE[node.op])
        handler = getattr(self, f"_op_{node.op}", None)
        if handler is None:
            return Unknown(f"it depends on {node.op} node '{node.name}', which this pass cannot evaluate")
        return handler(node)

    def _operand(self, node: gs.Node, index: int) -> Value | None:
        if index >= len(node.inputs) or node.inputs[index].is_empty():
            return None
        return self.value(node.inputs[index])

    def _elementwise(self, node: gs.Node, fn: Elementwise) -> Value:
        a, b = self._operand(node, 0), self._operand(node, 1)
        if isinstance(a, Unknown) and isinstance(b, Unknown):
            return a
        # a wholly unknown operand still lets And/Or decide elementwise from the other one
        a = np.full(np.shape(b), a, dtype=object) if isinstance(a, Unknown) else a
        b = np.full(np.shape(a), b, dtype=object) if isinstance(b, Unknown) else b
        return np.asarray(fn(a, b), dtype=object)

    # -- ops, one method each ----------------------------------------------------------------------

    def _op_Constant(self, node: gs.Node) -> Value:
        for attr in ("value", "value_int", "value_ints", "value_float", "value_floats"):
            if attr in node.attrs:
                return _constant(node.attrs[attr], node.name)
        return Unknown(f"Constant node '{node.name}' holds a kind of value this pass cannot read")

    def _op_Shape(self, node: gs.Node) -> Value:
        source = node.inputs[0]
        dims = self._facts.dims(source)
        if dims is None:
            return Unknown(f"the rank of '{source.name}' is unknown")
        declared = source.shape or [None] * len(dims)
        elements = [
            dim
            if dim is not None
            else Unknown(f"dim {axis} of '{source.name}'{_dim_label(declared[axis])} is dynamic")
            for axis, dim in enumerate(dims)
        ]
        return _vector(elements[slice(node.attrs.get("start", 0), node.attrs.get("end", len(dims)))])

    def _op_Size(self, node: gs.Node) -> Value:
        shape = self._op_Shape(node)
        unknown = _first_unknown(shape)
        if unknown is not None:
            return unknown
        return np.array(math.prod(shape), dtype=object)

    def _op_Identity(self, node: gs.Node) -> Value:
        return self._operand(node, 0)

    def _op_Cast(self, node: gs.Node) -> Value:
        data = self._operand(node, 0)
        if isinstance(data, Unknown):
            return data
        target = onnx.helper.tensor_dtype_to_np_dtype(node.attrs["to"])
        cast = np.frompyfunc(lambda v: v if isinstance(v, Unknown) else target.type(v).item(), 1, 1)
        return np.asarray(cast(data), dtype=object)

    def _op_Not(self, node: gs.Node) -> Value:
        data = self._operand(node, 0)
        if isinstance(data, Unknown):
            return data
        negate = np.frompyfunc(lambda v: v if isinstance(v, Unknown) else not bool(v), 1, 1)
        return np.asarray(negate(data), dtype=object)

    def _op_Gather(self, node: gs.Node) -> Value:
        data, indices = self._operand(node, 0), self._operand(node, 1)
        unknown = _first_unknown(indices) or (data if isinstance(data, Unknown) else None)
        if unknown is not None:
            return unknown
        return np.asarray(
            np.take(data, indices.astype(np.int64), axis=node.attrs.get("axis", 0)), dtype=object
        )

    def _op_Slice(self, node: gs.Node) -> Value:
        data = self._operand(node, 0)
        if isinstance(data, Unknown):
            return data
        if len(node.inputs) == 1:  # before opset 10 the parameters are attributes
            starts, ends, axes = (node.attrs.get(k) for k in ("starts", "ends", "axes"))
            steps = None
        else:
            starts, ends, axes, steps = (self._operand(node, i) for i in range(1, 5))
            unknown = _first_unknown(starts, ends, axes, steps)
            if unknown is not None:
                return unknown
        count = len(starts)
        axes = range(count) if axes is None else axes
        steps = [1] * count if steps is None else steps
        index = [slice(None)] * data.ndim
        for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
            index[int(axis)] = slice(int(start), int(end), int(step))
        return data[tuple(index)]

    def _op_Concat(self, node: gs.Node) -> Value:
        operands = [self.value(t) for t in node.inputs]
        for operand in operands:
            if isinstance(operand, Unknown):
                return operand
        return np.concatenate(operands, axis=node.attrs["axis"])

    def _op_Squeeze(self, node: gs.Node) -> Value:
        data, axes = self._operand(node, 0), self._axes(node)
        for operand in (data, axes):
            if isinstance(operand, Unknown):
                return operand
        if axes is None:
            return np.squeeze(data)
        return np.squeeze(data, axis=tuple(int(a) % data.ndim for a in axes))

    def _op_Unsqueeze(self, node: gs.Node) -> Value:
        data, axes = self._operand(node, 0), self._axes(node)
        for operand in (data, axes):
            if isinstance(operand, Unknown):
                return operand
        rank = data.ndim + len(axes)
        return np.expand_dims(data, axis=tuple(int(a) % rank for a in axes))

    def _op_Reshape(self, node: gs.Node) -> Value:
        data, shape = self._operand(node, 0), self._operand(node, 1)
        unknown = _first_unknown(shape) or (data if isinstance(data, Unknown) else None)
        if unknown is not None:
            return unknown
        return data.reshape([int(d) if int(d) != 0 else data.shape[i] for i, d in enumerate(shape)])

    def _axes(self, node: gs.Node) -> np.ndarray | Unknown | None:
        if "axes" in node.attrs:  # before opset 13 axes are an attribute
            return np.asarray(node.attrs["axes"])
        axes = self._operand(node, 1)
        return _first_unknown(axes) or axes


def decided(value: Value) -> bool | Unknown:
    """A condition's truth value, or why it cannot be decided."""
    if isinstance(value, Unknown):
        return value
    if value.size != 1:
        return Unknown(f"it has {value.size} elements instead of one")
    element = value.flat[0]
    return element if isinstance(element, Unknown) else bool(element)


def _constant(raw: Any, name: str) -> Value:
    values = raw.values if isinstance(raw, gs.Constant) else np.asarray(raw)
    if math.prod(values.shape) > _MAX_CONSTANT_ELEMENTS:
        return Unknown(f"it depends on the large constant '{name}'")
    return np.asarray(values).astype(object)


def _dim_label(declared: object) -> str:
    return f" ({declared!r})" if isinstance(declared, str) else ""


def _vector(elements: list[Any]) -> np.ndarray:
    array = np.empty(len(elements), dtype=object)
    array[:] = elements
    return array


def _first_unknown(*values: Value | None) -> Unknown | None:
    """Why any of `values` is unknown (wholly or in one element), or None if all are known."""
    for value in values:
        if isinstance(value, Unknown):
            return value
        if isinstance(value, np.ndarray):
            for element in value.flat:
                if isinstance(element, Unknown):
                    return element
    return None


def _text(value: Value | None) -> str:
    if value is None or isinstance(value, Unknown):
        return "?"
    texts = [
        "?" if isinstance(v, Unknown) else str(v).lower() if isinstance(v, bool) else str(v)
        for v in value.flat
    ]
    return texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
