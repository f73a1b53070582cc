"""The TensorRT parser's and builder's warnings are kept, typed, for every build: a real TensorRT
(for RTX) build of a tiny ONNX model with an int64 input, which the parser warns about."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper
from trt_harness.conversions.tensorrt_build import engine_from_onnx
from trt_harness.conversions.tensorrt_flavor import select_flavor
from trt_harness.models.recipe import BuildOptions, ShapeRange
from trt_harness.models.results.stages import BuildWarning

INT64_WARNING = "Make sure input ids has Int64 binding."

pytestmark = pytest.mark.skipif(select_flavor() is None, reason="no TensorRT installed")


def int64_input_model(path):
    """ids (int64) -> Cast to float -> Add 1: the parser warns that the input needs an Int64 binding."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["ids"], ["as_float"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["as_float", "one"], ["y"]),
        ],
        "int64_input",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_the_int64_binding_warning_is_kept_typed_in_every_build_of_the_process(tmp_path):
    model = int64_input_model(tmp_path / "int64.onnx")
    ranges = {"ids": ShapeRange((1, 4), (2, 4), (4, 4))}
    # Polygraphy prints a TensorRT warning once per process: the second build must keep it all the same
    records = [engine_from_onnx(model, tmp_path, BuildOptions(), ranges) for _ in range(2)]
    for record in records:
        assert record.built
        parse_warnings = [w for w in record.warnings if w.phase == "parse"]
        assert any(w.source == "TensorRT" and w.message.endswith(INT64_WARNING) for w in parse_warnings), (
            record.warnings
        )
        assert all(isinstance(w, BuildWarning) for w in record.warnings)
        assert not any("colored" in w.message for w in record.warnings)  # Polygraphy's colour notice
