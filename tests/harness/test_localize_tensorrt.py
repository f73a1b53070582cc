"""The TensorRT side of the layer-wise comparison: marked ahead-of-time builds, and the curve where it runs.

The builds are real (TensorRT for RTX builds on a machine without a GPU). TensorRT never executes on
the machines this project is tested on, so the execution path runs with a stand-in for Polygraphy's
`TrtRunner` that behaves as the library does: `infer()` returns an OrderedDict of views of host
buffers it overwrites on its next call, in the engine's order (here the reverse of the request's).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from trt_harness.conversions import tensorrt_marking
from trt_harness.conversions.tensorrt_flavor import select_flavor
from trt_harness.harness.backends import tensorrt as tensorrt_backend
from trt_harness.harness.cli import main
from trt_harness.harness.gpu import CudaDevice
from trt_harness.harness.localize import layer_curve
from trt_harness.harness.localize_tensorrt import TrtIntermediates
from trt_harness.harness.pipeline import RunConfig, localize_and_report, run_pipeline
from trt_harness.models.core.errors import ExitCode, HarnessError
from trt_harness.models.recipe import ExportOptions, Recipe, ShapeRange, TensorSpec, Tolerance
from trt_harness.models.results.document import load_results
from trt_harness.models.results.localize import MODULE_MAP_FILE, load_module_map

FLAVOR = select_flavor()  # before polygraphy.backend.trt is imported (see select_flavor)
needs_rtx = pytest.mark.skipif(
    FLAVOR is None or not FLAVOR.is_rtx, reason="TensorRT for RTX builds ahead of time without a GPU"
)


def small_model():
    import torch

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
            self.act = torch.nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.act(self.conv(x))

    class Small(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 4, 1)
            self.blocks = torch.nn.Sequential(Block(), Block())
            self.head = torch.nn.Conv2d(4, 2, 1)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.head(self.blocks(self.stem(image)))

    torch.manual_seed(0)
    return Small().eval()


def small_recipe() -> Recipe:
    rng = np.random.default_rng(0)
    samples = [{"image": rng.standard_normal((1, 3, 8, 8), dtype=np.float32)} for _ in range(2)]
    return Recipe(
        name="small_marked",
        description="stem, two residual blocks, head",
        build_model=lambda weights: small_model(),
        sample_inputs=lambda: samples,
        inputs=(TensorSpec("image", ("batch", 3, 8, 8)),),
        output_names=("out",),
        shape_ranges={"image": ShapeRange((1, 3, 8, 8), (1, 3, 8, 8), (2, 3, 8, 8))},
        export=ExportOptions(exporter="torchscript", opset=18),
        default_tolerance=Tolerance(atol=1e-4, rtol=1e-4),
        compare_profile_shapes=False,
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One finished run (Torch and ORT; its build stage built the unmarked engine) for every test."""
    out = tmp_path_factory.mktemp("marked")
    results = run_pipeline(RunConfig(small_recipe(), out, backends=("torch", "onnxrt")))
    assert results.verdict.passed, results.verdict
    return out


def _mapped_tensors(run_dir: Path) -> list[str]:
    # a container and its last child share a tensor: each is marked once
    return list(
        dict.fromkeys(b.output for b in load_module_map(run_dir / MODULE_MAP_FILE).modules if b.output)
    )


@needs_rtx
def test_marked_builds_record_layer_counts_and_output_marking_makes_engine_outputs(run_dir):
    recipe = small_recipe()
    tensors = _mapped_tensors(run_dir)
    assert len(tensors) >= 6  # stem, blocks, blocks.0(.conv/.act), ..., head
    marking = tensorrt_marking.build_marked(
        run_dir / "model.final.onnx", run_dir, recipe.build, recipe.shape_ranges, tensors
    )
    assert marking.not_built is None and marking.not_in_network == ()
    none, debug, output = (marking.build(m) for m in ("none", "debug", "output"))
    assert none.built and output.built
    # marking adds no network layer; the engine's layer count is the builder's own, measured
    assert none.network_layers == output.network_layers > 0
    assert none.engine_layers is not None and output.engine_layers is not None
    assert output.engine_layers >= none.engine_layers
    graph_output = "out"
    inner = [t for t in tensors if t != graph_output]
    # every marked tensor is an output of the network and a layer output the engine materializes
    assert set(output.network_outputs) == {graph_output, *inner}
    assert output.marked == len(inner) and set(output.marked_in_engine) == set(inner)
    assert none.network_outputs == (graph_output,) and none.marked_in_engine == ()
    assert (run_dir / output.engine).stat().st_size == output.plan_size_bytes
    assert marking.supports_debug == hasattr(FLAVOR.module().INetworkDefinition, "mark_debug")
    if marking.supports_debug:
        assert debug.built and debug.marked == len(inner)
        assert debug.network_layers == none.network_layers and debug.network_outputs == (graph_output,)
    else:
        assert not debug.built and "mark_debug" in debug.reason


class StandInTrtRunner:
    """Polygraphy's TrtRunner as `TrtIntermediates` uses it: reused host buffers, the engine's order."""

    onnx_path: Path  # set per test: the model the engine was built from
    outputs: tuple[str, ...]  # and the engine's outputs (the output-marked build's)

    def __init__(self, engine_loader) -> None:
        self.host_output_buffers: OrderedDict[str, np.ndarray] = OrderedDict()

    def activate(self) -> None:
        proto = onnx.load(str(self.onnx_path))
        present = {o.name for o in proto.graph.output}
        proto.graph.output.extend(onnx.ValueInfoProto(name=n) for n in self.outputs if n not in present)
        self.session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])

    def infer(self, feed_dict):
        names = list(reversed(self.outputs))  # not the order asked for, as an engine's may be
        returned = OrderedDict()
        for name, value in zip(names, self.session.run(names, dict(feed_dict)), strict=True):
            buffer = self.host_output_buffers.get(name)
            if buffer is None or buffer.size < value.size:
                buffer = self.host_output_buffers[name] = np.empty(value.size, value.dtype)
            buffer[: value.size] = value.ravel()
            returned[name] = buffer[: value.size].reshape(value.shape)  # a view, overwritten next call
        return returned

    def deactivate(self) -> None:
        del self.session, self.host_output_buffers


@pytest.fixture
def stand_in(monkeypatch, run_dir):
    import polygraphy.backend.trt as polygraphy_trt

    StandInTrtRunner.onnx_path = run_dir / "model.final.onnx"
    StandInTrtRunner.outputs = ("out", *(t for t in _mapped_tensors(run_dir) if t != "out"))
    monkeypatch.setattr(polygraphy_trt, "TrtRunner", StandInTrtRunner)
    monkeypatch.setattr(polygraphy_trt, "EngineFromBytes", lambda data: data)
    engine = run_dir / "stand-in.engine"
    engine.write_bytes(b"")
    return engine


def test_trt_intermediates_copies_each_output_by_name_before_the_next_call(run_dir, stand_in):
    first, second = small_recipe().sample_inputs()
    outputs = StandInTrtRunner.outputs
    wanted = list(outputs[1:3])
    with TrtIntermediates(stand_in, outputs) as intermediates:
        runner = intermediates.runner
        # guards the stand-in: a kept view changes on the next call, and the order is not the request's
        view = runner.infer(first)[wanted[0]]
        before = view.copy()
        assert list(runner.infer(second))[: len(wanted)] != wanted
        assert not np.array_equal(view, before)

        kept = intermediates.values(wanted, first)
        kept_copy = {n: v.copy() for n, v in kept.items()}
        intermediates.values(wanted, second)
        for name in wanted:
            np.testing.assert_array_equal(kept[name], kept_copy[name])  # not overwritten
        expected = dict(zip(wanted, runner.session.run(wanted, dict(first)), strict=True))
        for name in wanted:  # each under its own name, though the engine returned them in another order
            np.testing.assert_array_equal(kept[name], expected[name])
        with pytest.raises(HarnessError, match="returned no output \\['nowhere'\\]"):
            intermediates.values(["nowhere"], first)


def test_the_curve_over_trt_intermediates_matches_the_ort_curve(run_dir, stand_in):
    """The stand-in computes what ORT does, so the TensorRT-side curve must equal ORT's, layer by layer."""
    recipe = small_recipe()
    module_map = load_module_map(run_dir / MODULE_MAP_FILE)
    feeds = list(enumerate(recipe.sample_inputs()))
    common = dict(
        input_names=("image",), output_names=("out",), output="out", tolerance=recipe.default_tolerance
    )
    onnx_path = run_dir / "model.final.onnx"
    ort_curve = layer_curve(small_model(), module_map, onnx_path, feeds, **common)
    # an engine missing one marked tensor: that module is not compared, with the reason
    provided = StandInTrtRunner.outputs[:-1]
    with TrtIntermediates(stand_in, provided) as intermediates:
        trt_curve = layer_curve(
            small_model(), module_map, onnx_path, feeds, intermediates=intermediates, **common
        )
    assert trt_curve.candidate == "tensorrt" and ort_curve.candidate == "onnxrt"
    dropped = {b.path for b in module_map.modules if b.output == StandInTrtRunner.outputs[-1]}
    assert {n.module for n in trt_curve.not_compared} >= dropped
    assert all(
        "not an output of the tensorrt engine" in n.reason
        for n in trt_curve.not_compared
        if n.module in dropped
    )
    ort_errors = {layer.module: layer.max_abs_err for layer in ort_curve.layers}
    assert [layer.module for layer in trt_curve.layers] == [m for m in ort_errors if m not in dropped]
    assert all(layer.max_abs_err == ort_errors[layer.module] for layer in trt_curve.layers)


@needs_rtx
def test_where_tensorrt_cannot_execute_the_reason_is_recorded_and_reported(run_dir, monkeypatch, capsys):
    import trt_harness.models.recipes as recipes

    monkeypatch.setattr(tensorrt_backend, "cuda_devices", lambda: ())
    recipes.RECIPES.register("small_marked", small_recipe)
    try:
        assert main(["localize", str(run_dir), "--tensorrt"]) == ExitCode.PASSED
    finally:
        recipes.RECIPES.unregister("small_marked")
    printed = capsys.readouterr().out
    assert "tensorrt: TensorRT side not executed: no CUDA GPU on this machine" in printed
    marking = load_results(run_dir).localization.tensorrt_marking
    assert marking.not_executed == "no CUDA GPU on this machine" and marking.curve is None
    output = marking.build("output")
    assert f"tensorrt output-marked build: {output.marked} tensor(s) marked" in printed
    page = (run_dir / "report.html").read_text()
    assert "TensorRT: the mapped tensors marked" in page
    assert "TensorRT side not executed: no CUDA GPU on this machine" in page
    assert "Torch vs TensorRT" not in page  # no TensorRT number that was not measured

    # a GPU the RTX engine was not built for: the same, with the targets named
    monkeypatch.setattr(tensorrt_backend, "cuda_devices", lambda: (CudaDevice(0, "old GPU", (7, 5)),))
    marking = localize_and_report(run_dir, small_recipe(), tensorrt=True).localization.tensorrt_marking
    assert "engine targets sm86" in marking.not_executed and "compute capability 7.5" in marking.not_executed


@needs_rtx
def test_where_the_engine_can_execute_the_tensorrt_curve_is_recorded_and_drawn(
    run_dir, stand_in, monkeypatch
):
    monkeypatch.setattr(tensorrt_backend, "cuda_devices", lambda: (CudaDevice(0, "stand-in GPU", (8, 6)),))
    localization = localize_and_report(run_dir, small_recipe(), tensorrt=True).localization
    marking = localization.tensorrt_marking
    assert marking.not_executed is None
    curve = marking.curve
    (ort_curve,) = localization.curves
    assert curve.candidate == "tensorrt" and curve.first_divergence is None
    assert [layer.max_abs_err for layer in curve.layers] == [layer.max_abs_err for layer in ort_curve.layers]
    assert load_results(run_dir).localization == localization
    page = (run_dir / "report.html").read_text()
    assert "Torch vs TensorRT FP32" in page and "TensorRT side not executed" not in page


def test_without_a_tensorrt_that_builds_the_record_says_so(run_dir, monkeypatch):
    monkeypatch.setattr(tensorrt_marking, "select_flavor", lambda: None)
    marking = localize_and_report(run_dir, small_recipe(), tensorrt=True).localization.tensorrt_marking
    assert marking.builds == () and marking.not_built == "no TensorRT installed"
    assert marking.not_executed == "not built: no TensorRT installed"
    page = (run_dir / "report.html").read_text()
    assert "Marked builds not made: no TensorRT installed" in page
    assert "TensorRT side not executed: not built: no TensorRT installed" in page


@needs_rtx
def test_a_flavor_without_mark_debug_builds_the_other_two_and_says_so(run_dir, monkeypatch):
    monkeypatch.setattr(tensorrt_marking, "has_mark_debug", lambda trt: False)
    marking = localize_and_report(run_dir, small_recipe(), tensorrt=True).localization.tensorrt_marking
    debug = marking.build("debug")
    assert not marking.supports_debug and not debug.built and debug.engine_layers is None
    assert debug.reason == f"{FLAVOR.display_name} {FLAVOR.version} has no INetworkDefinition.mark_debug"
    assert marking.build("none").built and marking.build("output").built
    page = (run_dir / "report.html").read_text()
    assert "marked as outputs (mark_output); it has no mark_debug" in page
    assert debug.reason in page
