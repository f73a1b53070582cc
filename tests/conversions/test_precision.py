"""Precision variants on small generated models: FP16 conversion, the FP16 range check, INT8 Q/DQ.

ONNX Runtime's CPU provider is no FP16 emulator: it has FP16 kernels only for data-movement ops
(Reshape, Transpose, Concat, Slice, ...), runs every other FP16 node in FP32 between inserted casts,
and runs even a data-movement node in FP32 when it sits alone between such nodes. A tensor is held in
FP16 on ORT only along a chain of two or more data-movement ops (or at an explicit Cast). The overflow
and underflow models therefore pass their out-of-range tensor through Reshape -> Transpose, as a
detector head does; TensorRT holds every FP16 tensor in FP16 anyway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from trt_harness.conversions.precision import fp16_onnx, fp16_range_check, int8_qdq_onnx
from trt_harness.conversions.precision.range_check import DEFAULT_UNDERFLOW_FRACTION, FP16_MAX
from trt_harness.models.core.errors import UsageError
from trt_harness.models.core.serde import from_json, to_json
from trt_harness.models.results.stages import PrecisionVariant, RangeReport

FP16_UNIT_ROUNDOFF = 2.0**-11  # FP16 keeps 11 significant bits
# A few layers of FP16 rounding (weights and stored activations): a handful of unit roundoffs of the
# output's range. Measured ~1 u on the conv net.
FP16_BOUND = 4 * FP16_UNIT_ROUNDOFF
# INT8 has 8 bits for the whole range of a tensor: per-tensor activation scales on smooth inputs
# give ~2% of the range on the conv net; 5% still catches a wrong scale or a zeroed channel.
INT8_BOUND = 0.05
REPO = Path(__file__).resolve().parents[2]


# -- models ---------------------------------------------------------------------------------------


def _conv_net():  # -> torch.nn.Module, a YOLO-like block: conv/BN/SiLU, downsample, resize, concat, head
    import torch
    from torch import nn

    class ConvNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.SiLU())
            self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.SiLU())
            self.head = nn.Conv2d(48, 8, 1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            a = self.stem(x)
            up = nn.functional.interpolate(self.down(a), scale_factor=2.0, mode="nearest")
            y = self.head(torch.cat([a, up], 1))
            return torch.sigmoid(y[:, :4]).flatten(2), y[:, 4:].flatten(2)

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = ConvNet().eval()
        with torch.no_grad():
            net.stem[1].running_mean.uniform_(-0.2, 0.2)
            net.stem[1].running_var.uniform_(0.5, 2.0)
    return net


def _smooth_images(seed: int, count: int = 1) -> np.ndarray:
    """(count, 3, 32, 32) smooth sinusoidal fields in [0.25, 0.75], like low-frequency photo content."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    images = np.empty((count, 3, 32, 32), np.float32)
    for index in np.ndindex(count, 3):
        fx, fy = rng.uniform(0.5, 3.0, 2)
        px, py = rng.uniform(0.0, 2 * np.pi, 2)
        images[index] = 0.5 + 0.25 * np.sin(2 * np.pi * fx * xx + px) * np.cos(2 * np.pi * fy * yy + py)
    return images


CALIBRATION = [{"images": _smooth_images(seed)} for seed in range(8)]
HELD_OUT = [{"images": _smooth_images(100 + seed)} for seed in range(3)]


def _export(path: Path, exporter: str) -> Path:
    import torch

    example = (torch.from_numpy(_smooth_images(0)),)
    names = {"input_names": ["images"], "output_names": ["scores", "boxes"]}
    if exporter == "dynamo":
        torch.onnx.export(
            _conv_net(), example, path, dynamo=True, external_data=False, verbose=False, **names
        )
    else:
        torch.onnx.export(_conv_net(), example, path, dynamo=False, opset_version=17, **names)
    return path


@pytest.fixture(scope="module", params=["torchscript", "dynamo"])
def conv_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The conv net from either exporter (opset 17 TorchScript, opset 18 torch.export-based)."""
    return _export(tmp_path_factory.mktemp(request.param) / "convnet.onnx", request.param)


@pytest.fixture(scope="module")
def torchscript_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tmp_path_factory.mktemp("ts") / "convnet.onnx", "torchscript")


def _save(path: Path, nodes: list, inputs: list, outputs: list, initializers: list) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def _const(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, np.float32), name)


SUM_LENGTH = 1024


def overflow_model(path: Path) -> Path:
    """y = sum((100 x)^2) / N: the squares fit FP16 (<= 1e4), their sum (~3e6) does not, y (~3e3) does."""
    nodes = [
        helper.make_node("Mul", ["x", "hundred"], ["scaled"], name="scale"),
        helper.make_node("Mul", ["scaled", "scaled"], ["squares"], name="square"),
        helper.make_node("ReduceSum", ["squares", "axes"], ["sum"], name="sum_sq", keepdims=1),
        helper.make_node("Reshape", ["sum", "row"], ["sum_row"], name="flatten"),
        helper.make_node("Transpose", ["sum_row"], ["sum_col"], name="transpose", perm=[1, 0]),
        helper.make_node("Div", ["sum_col", "length"], ["y"], name="normalize"),
    ]
    initializers = [
        _const("hundred", 100.0),
        _const("length", float(SUM_LENGTH)),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
        numpy_helper.from_array(np.array([1, -1], np.int64), "row"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SUM_LENGTH])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])]
    return _save(path, nodes, inputs, outputs, initializers)


def underflow_model(path: Path) -> Path:
    """y = x * 2^-20 * 2^20 in steps of 2^10: the middle tensors (~1e-6) are FP16 subnormals."""
    nodes = [
        helper.make_node("Mul", ["x", "k_down"], ["small"], name="shrink1"),
        helper.make_node("Mul", ["small", "k_down"], ["tiny"], name="shrink2"),
        helper.make_node("Reshape", ["tiny", "grid"], ["tiny_grid"], name="reshape"),
        helper.make_node("Transpose", ["tiny_grid"], ["tiny_t"], name="transpose", perm=[1, 0]),
        helper.make_node("Mul", ["tiny_t", "k_up"], ["back"], name="grow1"),
        helper.make_node("Mul", ["back", "k_up"], ["y"], name="grow2"),
    ]
    initializers = [
        _const("k_down", 2.0**-10),
        _const("k_up", 2.0**10),
        numpy_helper.from_array(np.array([16, 16], np.int64), "grid"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 16])]
    return _save(path, nodes, inputs, outputs, initializers)


def relu_model(path: Path) -> Path:
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])]
    return _save(path, nodes, inputs, outputs, [])


# -- helpers --------------------------------------------------------------------------------------


def _run(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # run the graph as written
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _relative_errors(reference: Path, variant: Path, feeds: list[dict[str, np.ndarray]]) -> list[float]:
    """Per output and feed: max |variant - reference| / max |reference|."""
    errors = []
    for feed in feeds:
        for expected, actual in zip(_run(reference, feed), _run(variant, feed), strict=True):
            assert actual.dtype == np.float32
            errors.append(float(np.abs(actual - expected).max() / np.abs(expected).max()))
    return errors


def _initializer_types(path: Path) -> dict[str, int]:
    return {init.name: init.data_type for init in onnx.load(path).graph.initializer}


def _nodes(path: Path) -> dict[str, onnx.NodeProto]:
    return {node.name: node for node in onnx.load(path).graph.node}


def _io_types(path: Path) -> list[int]:
    graph = onnx.load(path).graph
    return [value.type.tensor_type.elem_type for value in [*graph.input, *graph.output]]


def _tensor_types(path: Path) -> dict[str, int]:
    graph = onnx.shape_inference.infer_shapes(onnx.load(path), strict_mode=True).graph
    values = [*graph.input, *graph.value_info, *graph.output]
    return {value.name: value.type.tensor_type.elem_type for value in values}


# -- FP16 -----------------------------------------------------------------------------------------


def test_fp16_outputs_stay_within_fp16_bound_with_fp32_io(conv_model: Path, tmp_path: Path) -> None:
    result = fp16_onnx(conv_model, tmp_path / "fp16.onnx")

    assert (tmp_path / result.path).is_file() and result.precision == "fp16"
    assert _io_types(tmp_path / result.path) == _io_types(conv_model) == [TensorProto.FLOAT] * 3
    assert result.op_counts.get("Cast", 0) >= 3  # one after the input, one before each output
    conv_weights = [
        node.input[1] for node in onnx.load(tmp_path / result.path).graph.node if node.op_type == "Conv"
    ]
    assert len(conv_weights) == 3
    assert {_initializer_types(tmp_path / result.path)[w] for w in conv_weights} == {TensorProto.FLOAT16}
    errors = _relative_errors(conv_model, (tmp_path / result.path), HELD_OUT)
    assert 0 < max(errors) <= FP16_BOUND


def test_fp16_block_list_keeps_named_node_in_fp32(torchscript_model: Path, tmp_path: Path) -> None:
    convs = [node for node in onnx.load(torchscript_model).graph.node if node.op_type == "Conv"]
    head = convs[-1]
    result = fp16_onnx(torchscript_model, tmp_path / "fp16.onnx", block_list=[head.name])

    assert result.block_list == (head.name,)
    types = _tensor_types(tmp_path / result.path)
    initializers = _initializer_types(tmp_path / result.path)
    blocked = _nodes(tmp_path / result.path)[head.name]
    assert {types.get(name, initializers.get(name)) for name in blocked.input} == {TensorProto.FLOAT}
    assert types[blocked.output[0]] == TensorProto.FLOAT
    assert {initializers[conv.input[1]] for conv in convs[:-1]} == {TensorProto.FLOAT16}
    assert max(_relative_errors(torchscript_model, (tmp_path / result.path), HELD_OUT)) <= FP16_BOUND


def test_fp16_unknown_block_list_node_is_a_usage_error(torchscript_model: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no_such_node"):
        fp16_onnx(torchscript_model, tmp_path / "fp16.onnx", block_list=["no_such_node"])
    assert not any(tmp_path.iterdir())


def test_fp16_result_serializes(torchscript_model: Path, tmp_path: Path) -> None:
    result = fp16_onnx(torchscript_model, tmp_path / "fp16.onnx")
    data = json.loads(json.dumps(to_json(result)))
    assert from_json(PrecisionVariant, data) == result
    assert data["precision"] == "fp16" and data["path"] == "fp16.onnx"
    assert data["library"] and data["library_version"]
    assert data["op_counts"] == result.op_counts and data["block_list"] == []


# -- FP16 range check and the overflow/underflow acceptance tests ---------------------------------


def _overflow_feed() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(7).uniform(-1.0, 1.0, (1, SUM_LENGTH)).astype(np.float32)}


def test_range_check_flags_exactly_the_overflowing_nodes(tmp_path: Path) -> None:
    model = overflow_model(tmp_path / "overflow.onnx")
    report = fp16_range_check(model, [_overflow_feed()])

    assert {t.producer for t in report.flagged} == {"sum_sq", "flatten", "transpose"}
    assert all(t.flags == ("overflow",) for t in report.flagged)
    # the overflowing tensors stay FP32 from their producer to their consumers
    assert report.block_list == ("sum_sq", "flatten", "transpose", "normalize")
    assert report.top[0].max_abs > FP16_MAX
    assert [t.max_abs for t in report.top] == sorted((t.max_abs for t in report.top), reverse=True)
    data = json.loads(json.dumps(to_json(report)))
    assert from_json(RangeReport, data) == report
    assert data["block_list"] == list(report.block_list)
    assert {t["name"] for t in data["flagged"]} == {"sum", "sum_row", "sum_col"}


def test_fp16_overflow_is_fixed_by_the_suggested_block_list(tmp_path: Path) -> None:
    model = overflow_model(tmp_path / "overflow.onnx")
    feed = _overflow_feed()
    (expected,) = _run(model, feed)

    plain = fp16_onnx(model, tmp_path / "plain.fp16.onnx")
    (overflowed,) = _run(tmp_path / plain.path, feed)
    assert not np.isfinite(overflowed).all()

    report = fp16_range_check(model, [feed])
    fixed = fp16_onnx(model, tmp_path / "fixed.fp16.onnx", block_list=report.block_list)
    (actual,) = _run(tmp_path / fixed.path, feed)
    assert np.isfinite(actual).all()
    np.testing.assert_allclose(actual, expected, rtol=FP16_BOUND)
    # the block-listed chain reads FP32 end to end, under the source model's tensor names
    assert _nodes(tmp_path / fixed.path)["flatten"].input[0] == "sum"
    assert _tensor_types(tmp_path / fixed.path)["sum"] == TensorProto.FLOAT
    assert (
        _initializer_types(tmp_path / fixed.path)["hundred"] == TensorProto.FLOAT16
    )  # the rest is still FP16


def test_range_check_flags_underflow_and_the_block_list_restores_precision(tmp_path: Path) -> None:
    model = underflow_model(tmp_path / "underflow.onnx")
    feed = {"x": np.random.default_rng(3).uniform(0.5, 1.0, (1, 256)).astype(np.float32)}
    report = fp16_range_check(model, [feed])

    assert {t.name for t in report.flagged} == {"tiny", "tiny_grid", "tiny_t"}
    assert all(t.flags == ("underflow",) and t.subnormal_fraction == 1.0 for t in report.flagged)
    assert report.block_list == ("shrink2", "reshape", "transpose", "grow1")

    def error(variant: Path) -> float:
        return _relative_errors(model, variant, [feed])[0]

    assert error(tmp_path / fp16_onnx(model, tmp_path / "plain.onnx").path) > 10 * FP16_BOUND
    assert (
        error(tmp_path / fp16_onnx(model, tmp_path / "fixed.onnx", block_list=report.block_list).path)
        <= FP16_BOUND
    )


@settings(max_examples=25, deadline=None)
@given(
    tiny=st.integers(0, 60),
    zeros=st.integers(0, 100),
    threshold=st.sampled_from([DEFAULT_UNDERFLOW_FRACTION, 0.02, 0.5]),
)
def test_underflow_flag_is_the_share_of_nonzeros_below_fp16_min_normal(
    tmp_path_factory: pytest.TempPathFactory, tiny: int, zeros: int, threshold: float
) -> None:
    model = relu_model(tmp_path_factory.mktemp("relu") / "relu.onnx")
    normal = 200 - tiny
    values = np.concatenate([np.full(tiny, 3e-6), np.zeros(zeros), np.linspace(0.1, 1.0, normal)])
    report = fp16_range_check(model, [{"x": values.astype(np.float32)}], underflow_fraction=threshold)

    expected = tiny / (tiny + normal) > threshold
    assert {t.name for t in report.flagged} == ({"x", "y"} if expected else set())
    assert report.block_list == (("relu",) if expected else ())


def test_range_check_rejects_bad_arguments(tmp_path: Path) -> None:
    model = relu_model(tmp_path / "relu.onnx")
    with pytest.raises(UsageError, match="at least one feed"):
        fp16_range_check(model, [])
    with pytest.raises(UsageError, match="underflow_fraction"):
        fp16_range_check(model, [{"x": np.ones(3, np.float32)}], underflow_fraction=0.0)
    with pytest.raises(UsageError, match="does not exist"):
        fp16_range_check(tmp_path / "missing.onnx", [{"x": np.ones(3, np.float32)}])


# -- INT8 Q/DQ ------------------------------------------------------------------------------------


def test_int8_qdq_quantizes_conv_inputs_symmetrically(torchscript_model: Path, tmp_path: Path) -> None:
    result = int8_qdq_onnx(torchscript_model, tmp_path / "int8.onnx", CALIBRATION)

    assert result.precision == "int8"
    assert result.op_counts["QuantizeLinear"] >= 3 and result.op_counts["DequantizeLinear"] >= 6
    model = onnx.load(tmp_path / result.path)
    producers = {out: node for node in model.graph.node for out in node.output}
    initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for conv in (node for node in model.graph.node if node.op_type == "Conv"):
        data, weight = (producers[name] for name in conv.input[:2])
        assert data.op_type == weight.op_type == "DequantizeLinear"
        assert initializers[weight.input[0]].dtype == np.int8
        assert initializers[weight.input[1]].shape == (initializers[weight.input[0]].shape[0],)  # per channel
        if len(conv.input) > 2:
            assert conv.input[2] in initializers and initializers[conv.input[2]].dtype == np.float32
    zero_points = [initializers[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert all(zp.dtype == np.int8 and not zp.any() for zp in zero_points)
    quantized_inputs = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert not quantized_inputs & {o.name for o in model.graph.output}


def test_int8_error_exceeds_fp16_but_stays_bounded(conv_model: Path, tmp_path: Path) -> None:
    int8 = int8_qdq_onnx(conv_model, tmp_path / "int8.onnx", CALIBRATION)
    fp16 = fp16_onnx(conv_model, tmp_path / "fp16.onnx")

    int8_error = max(_relative_errors(conv_model, (tmp_path / int8.path), HELD_OUT))
    fp16_error = max(_relative_errors(conv_model, (tmp_path / fp16.path), HELD_OUT))
    assert fp16_error < int8_error <= INT8_BOUND


def test_int8_exclude_nodes_stay_float(torchscript_model: Path, tmp_path: Path) -> None:
    head = [node for node in onnx.load(torchscript_model).graph.node if node.op_type == "Conv"][-1]
    result = int8_qdq_onnx(torchscript_model, tmp_path / "int8.onnx", CALIBRATION, exclude_nodes=[head.name])

    model = onnx.load(tmp_path / result.path)
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    excluded = _nodes(tmp_path / result.path)[head.name]
    assert producers.get(excluded.input[0]) != "DequantizeLinear"
    assert _initializer_types(tmp_path / result.path)[excluded.input[1]] == TensorProto.FLOAT
    assert result.block_list == (head.name,)


_QUANTIZE_IN_SUBPROCESS = """
import sys
from pathlib import Path
import numpy as np
from trt_harness.conversions.precision import int8_qdq_onnx
feeds = np.load(sys.argv[3])
int8_qdq_onnx(Path(sys.argv[1]), Path(sys.argv[2]), [{"images": feeds[k]} for k in sorted(feeds)])
"""


def test_int8_is_byte_identical_across_runs_and_processes(torchscript_model: Path, tmp_path: Path) -> None:
    first = (
        tmp_path / "a" / int8_qdq_onnx(torchscript_model, tmp_path / "a" / "int8.onnx", CALIBRATION).path
    ).read_bytes()
    second = (
        tmp_path / "b" / int8_qdq_onnx(torchscript_model, tmp_path / "b" / "int8.onnx", CALIBRATION).path
    ).read_bytes()
    assert first == second

    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, **{f"f{i:02d}": feed["images"] for i, feed in enumerate(CALIBRATION)})
    elsewhere = tmp_path / "c" / "int8.onnx"
    # another process with another string-hash seed: set iteration order changes, the file must not
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    subprocess.run(
        [sys.executable, "-c", _QUANTIZE_IN_SUBPROCESS, str(torchscript_model), str(elsewhere), str(feeds)],
        check=True, env=env, cwd=tmp_path, capture_output=True,
    )  # fmt: skip
    assert elsewhere.read_bytes() == first
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["int8.onnx"]  # no temp files left behind


def test_int8_rejects_bad_arguments(torchscript_model: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="at least one feed"):
        int8_qdq_onnx(torchscript_model, tmp_path / "int8.onnx", [])
    with pytest.raises(
        UsageError, match=r"int8_exclude_nodes names nodes .*'no_such_conv'.*harness localize"
    ):
        int8_qdq_onnx(torchscript_model, tmp_path / "int8.onnx", CALIBRATION, exclude_nodes=["no_such_conv"])
    with pytest.raises(UsageError, match="entropy"):
        int8_qdq_onnx(torchscript_model, tmp_path / "int8.onnx", CALIBRATION, method="entropy")  # type: ignore[arg-type]
    assert not (tmp_path / "int8.onnx").exists()


# -- TensorRT (for RTX: builds ahead of time without a GPU) ---------------------------------------


def _tensorrt_network_or_skip(path: Path):  # -> (trt module, INetworkDefinition)
    from trt_harness.conversions.tensorrt_flavor import select_flavor

    flavor = select_flavor()
    if flavor is None:
        pytest.skip("no TensorRT installed")
    if not flavor.is_rtx:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("full TensorRT builds only with a CUDA GPU")
    from polygraphy.backend.trt import NetworkFromOnnxPath

    _, network, _ = NetworkFromOnnxPath(str(path))()
    return flavor.module(), network


def _layer_output_types(network, layer_type) -> dict[str, object]:
    layers = (network.get_layer(i) for i in range(network.num_layers))
    return {layer.name: layer.get_output(0).dtype for layer in layers if layer.type == layer_type}


def test_tensorrt_builds_the_fp16_variant_with_fp16_convolutions(conv_model: Path, tmp_path: Path) -> None:
    from trt_harness.conversions.tensorrt_build import engine_from_onnx
    from trt_harness.models.recipe import BuildOptions

    fp16 = fp16_onnx(conv_model, tmp_path / "convnet.fp16.onnx")
    trt, network = _tensorrt_network_or_skip(tmp_path / fp16.path)
    convs = _layer_output_types(network, trt.LayerType.CONVOLUTION)
    assert len(convs) == 3 and set(convs.values()) == {trt.DataType.HALF}

    built = engine_from_onnx(tmp_path / fp16.path, tmp_path, BuildOptions(), {}, "fp16")
    assert (tmp_path / built.engine).is_file() and built.plan_size_bytes > 0


def test_tensorrt_keeps_the_block_list_in_fp32(tmp_path: Path) -> None:
    from trt_harness.conversions.tensorrt_build import engine_from_onnx
    from trt_harness.models.recipe import BuildOptions

    model = overflow_model(tmp_path / "overflow.onnx")
    report = fp16_range_check(model, [_overflow_feed()])
    fixed = fp16_onnx(model, tmp_path / "overflow.fp16.onnx", block_list=report.block_list)
    trt, network = _tensorrt_network_or_skip(tmp_path / fixed.path)
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    output_types = {layer.name: layer.get_output(0).dtype for layer in layers}
    assert {output_types[name] for name in report.block_list} == {trt.DataType.FLOAT}
    assert output_types["square"] == trt.DataType.HALF

    built = engine_from_onnx(tmp_path / fixed.path, tmp_path, BuildOptions(), {}, "fp16")
    assert built.plan_size_bytes > 0


def test_tensorrt_builds_the_int8_qdq_variant(torchscript_model: Path, tmp_path: Path) -> None:
    from trt_harness.conversions.tensorrt_build import TensorRTBuildFailed, engine_from_onnx
    from trt_harness.models.recipe import BuildOptions

    int8 = int8_qdq_onnx(torchscript_model, tmp_path / "convnet.int8.onnx", CALIBRATION)
    trt, network = _tensorrt_network_or_skip(tmp_path / int8.path)
    quantize = _layer_output_types(network, trt.LayerType.QUANTIZE)
    assert quantize and set(quantize.values()) == {trt.DataType.INT8}

    try:
        built = engine_from_onnx(tmp_path / int8.path, tmp_path, BuildOptions(), {}, "int8")
    except TensorRTBuildFailed as e:  # the message the report needs if a TensorRT version drops INT8
        pytest.fail(f"INT8 Q/DQ not supported by {e}")
    assert built.plan_size_bytes > 0
