"""Contract tests for what the TensorRT backend relies on in Polygraphy, with a stand-in `TrtRunner`.

TensorRT never executes on the machines this project is tested on, so the TensorRT backend stays a
thin use of Polygraphy and each behaviour of `polygraphy.backend.trt.TrtRunner` it depends on is
reproduced here by a stand-in that behaves as the library does:

- `infer()` returns an OrderedDict of arrays that are views of host buffers the runner keeps and
  overwrites on the next call (`TrtRunner._infer_impl` copies each output into
  `self.host_output_buffers[name]` and returns a view of it; Polygraphy's own `Comparator.run`
  deep-copies outputs when it runs more than one iteration for this reason);
- outputs come in the engine's I/O order, which need not be the recipe's;
- the engine reports each I/O tensor's mode through `get_tensor_mode`.

The stand-in computes its values with ONNX Runtime on the same final model the engine was built
from, so a Torch<->TensorRT comparison through the real run and compare stages passes only if every
saved sample holds that sample's values.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from trt_harness.conversions.tensorrt_flavor import select_flavor
from trt_harness.harness.backends import tensorrt as tensorrt_backend
from trt_harness.harness.backends.base import BackendContext
from trt_harness.harness.gpu import CudaDevice
from trt_harness.harness.pipeline import RunConfig, run_pipeline
from trt_harness.harness.sample_files import read_sample
from trt_harness.models.core.errors import ExitCode
from trt_harness.models.results.comparisons import SAMPLES
from trt_harness.models.results.stages import CompareDetails, RunDetails

from tests.harness.test_pipeline import recipe as depth_recipe


class StandInEngine:
    def __init__(self, inputs: list[str], outputs: list[str]) -> None:
        self._names = [*inputs, *reversed(outputs)]  # outputs not in the recipe's order, as engines may
        self._inputs = set(inputs)
        self.num_io_tensors = len(self._names)

    def get_tensor_name(self, index: int) -> str:
        return self._names[index]

    def get_tensor_mode(self, name: str):
        trt = select_flavor().module()
        return trt.TensorIOMode.INPUT if name in self._inputs else trt.TensorIOMode.OUTPUT


class StandInTrtRunner:
    """Polygraphy's TrtRunner as far as the backend uses it: reused host output buffers, engine order."""

    onnx_path: Path  # set per test: the model the engine was built from

    def __init__(self, engine_loader) -> None:
        self.engine_loader = engine_loader
        self.host_output_buffers: OrderedDict[str, np.ndarray] = OrderedDict()
        self.infer_calls = 0

    def activate(self) -> None:
        self.session = ort.InferenceSession(str(self.onnx_path), providers=["CPUExecutionProvider"])
        self.engine = StandInEngine(
            [i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()]
        )

    def infer(self, feed_dict):
        self.infer_calls += 1
        values = dict(
            zip(
                [o.name for o in self.session.get_outputs()],
                self.session.run(None, dict(feed_dict)),
                strict=True,
            )
        )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        returned = OrderedDict()
        for name in (n for n in names if n in values):
            value = values[name]
            buffer = self.host_output_buffers.get(name)
            if buffer is None or buffer.size < value.size:
                buffer = self.host_output_buffers[name] = np.empty(value.size, value.dtype)
            buffer[: value.size] = value.ravel()
            returned[name] = buffer[: value.size].reshape(value.shape)  # a view, overwritten next call
        return returned

    def deactivate(self) -> None:
        del self.session, self.engine, self.host_output_buffers


@pytest.fixture
def stand_in_tensorrt(monkeypatch):
    """TensorRT 'executes' through the stand-in on a fake GPU the engine targets."""
    select_flavor()  # before polygraphy.backend.trt is imported (see select_flavor)
    import polygraphy.backend.trt as polygraphy_trt

    device = CudaDevice(0, "stand-in GPU", (8, 6))  # sm86: the first default TensorRT for RTX target
    monkeypatch.setattr(tensorrt_backend, "cuda_devices", lambda: (device,))
    monkeypatch.setattr(polygraphy_trt, "TrtRunner", StandInTrtRunner)
    monkeypatch.setattr(polygraphy_trt, "EngineFromBytes", lambda data: data)
    return StandInTrtRunner


def test_stand_in_reuses_its_buffers_as_polygraphy_does(tmp_path, stand_in_tensorrt):
    """Guards the stand-in itself: without reuse the tests below could not fail."""
    recipe = depth_recipe(("depth", "depth_min"))
    run_pipeline(RunConfig(recipe, tmp_path, backends=("onnxrt",)))
    stand_in_tensorrt.onnx_path = tmp_path / "model.final.onnx"
    runner = stand_in_tensorrt(b"")
    runner.activate()
    first, second = recipe.sample_inputs()
    kept = runner.infer(first)["depth"]
    before = kept.copy()
    runner.infer(second)
    assert not np.array_equal(kept, before)


def _saved(run_dir: Path, runner: str, output: str) -> list[np.ndarray]:
    files = sorted((run_dir / "outputs" / runner / SAMPLES).glob("*.npz"))
    return [read_sample(f)[output] for f in files]


def test_every_saved_tensorrt_sample_holds_its_own_values(tmp_path, stand_in_tensorrt):
    recipe = depth_recipe(("depth", "depth_min"))
    # the build stage writes the final model first; the stand-in reads it when the run stage activates it
    stand_in_tensorrt.onnx_path = tmp_path / "model.final.onnx"
    results = run_pipeline(RunConfig(recipe, tmp_path, backends=("torch", "onnxrt", "tensorrt")))

    run = results.details(RunDetails)
    assert run is not None and run.runners["tensorrt"].executed, run
    trt_outputs = _saved(tmp_path, "tensorrt", "depth")
    torch_outputs = _saved(tmp_path, "torch", "depth")
    assert len(trt_outputs) == 2 and not np.array_equal(trt_outputs[0], trt_outputs[1])
    for trt, reference in zip(trt_outputs, torch_outputs, strict=True):
        np.testing.assert_allclose(trt, reference, atol=1e-5)
    compare = results.details(CompareDetails)
    assert compare is not None
    assert {(c.ref_backend, c.cand_backend) for c in compare.comparisons} >= {("torch", "tensorrt")}
    assert results.verdict.exit_code == ExitCode.PASSED, results.verdict


def test_io_order_is_read_from_the_engine_not_assumed(tmp_path, stand_in_tensorrt):
    recipe = depth_recipe(("depth", "depth_min"))
    run_pipeline(RunConfig(recipe, tmp_path, backends=("onnxrt",)))
    stand_in_tensorrt.onnx_path = tmp_path / "model.final.onnx"
    engine = next(tmp_path.glob("*.fp32.engine"))
    backend = tensorrt_backend.TensorRTBackend(BackendContext(recipe, engine_path=engine))
    with backend:
        outputs = backend.infer(recipe.sample_inputs()[0])
        order = backend.io_order()
    assert order.inputs == ("image",)
    assert order.outputs == ("depth_min", "depth")  # the engine's order, reversed by the stand-in
    assert set(outputs) == {"depth", "depth_min"}
    assert all(a.dtype == np.float32 for a in outputs.values())


def test_outputs_kept_past_the_next_infer_keep_their_own_values(tmp_path, stand_in_tensorrt):
    recipe = depth_recipe(("depth", "depth_min"))
    run_pipeline(RunConfig(recipe, tmp_path, backends=("onnxrt",)))
    stand_in_tensorrt.onnx_path = tmp_path / "model.final.onnx"
    engine = next(tmp_path.glob("*.fp32.engine"))
    first, second = recipe.sample_inputs()
    reference = ort.InferenceSession(str(stand_in_tensorrt.onnx_path), providers=["CPUExecutionProvider"])
    expected = reference.run(["depth"], first)[0]
    with tensorrt_backend.TensorRTBackend(BackendContext(recipe, engine_path=engine)) as backend:
        kept = backend.infer(first)
        backend.infer(second)
    np.testing.assert_array_equal(kept["depth"], expected)
