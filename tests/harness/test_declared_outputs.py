"""Declared outputs: shapes (dynamic dims by name, shared with the inputs) and dtypes, checked on the
export and on every backend, so a positional mislabel between outputs that differ is exit 3."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from trt_harness.conversions.outputs import Produced, check_outputs
from trt_harness.harness.backends import tensorrt as tensorrt_backend
from trt_harness.harness.backends.base import BackendContext
from trt_harness.harness.gpu import CudaDevice
from trt_harness.harness.pipeline import RunConfig, run_pipeline
from trt_harness.models.core.errors import ExitCode, HarnessError, UsageError
from trt_harness.models.recipe import ExportOptions, Recipe, ShapeRange, TensorSpec
from trt_harness.models.results.stages import ExportDetails, RunDetails

BOXES = TensorSpec("boxes", ("batch", 4))
SCORES = TensorSpec("scores", ("batch", 10))


def tuple_head(labels: bool = False):
    import torch

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 14, 1)

        def forward(self, image: torch.Tensor):
            features = self.conv(image).mean(dim=(2, 3))  # (N, 14)
            if labels:  # same shape, another dtype
                return features[:, :4], features[:, 4:8].argmax(dim=1, keepdim=True).expand(-1, 4)
            return features[:, :4], torch.sigmoid(features[:, 4:])

    torch.manual_seed(0)
    return Head().eval()


def head_recipe(outputs, labels: bool = False, exporter: str = "torchscript") -> Recipe:
    rng = np.random.default_rng(0)
    samples = [{"image": rng.random((1, 3, 8, 8), dtype=np.float32)} for _ in range(2)]
    return Recipe(
        name="tuple_head_labels" if labels else "tuple_head",  # models are cached per recipe name
        description="a tuple of two outputs",
        build_model=lambda weights: tuple_head(labels),
        sample_inputs=lambda: samples,
        inputs=(TensorSpec("image", ("batch", 3, 8, 8)),),
        outputs=outputs,
        shape_ranges={"image": ShapeRange((1, 3, 8, 8), (2, 3, 8, 8), (2, 3, 8, 8))},
        export=ExportOptions(exporter=exporter, opset=17),
    )


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_tuple_mislabelled_between_outputs_of_different_shapes_is_exit_3_naming_both(tmp_path, exporter):
    results = run_pipeline(
        RunConfig(head_recipe((SCORES, BOXES), exporter=exporter), tmp_path, backends=("torch", "onnxrt"))
    )
    verdict = results.verdict
    assert verdict.exit_code == ExitCode.ORDERING_MISMATCH, verdict
    assert "'scores' has the shape declared for 'boxes'" in verdict.summary
    assert "'boxes' has the shape declared for 'scores'" in verdict.summary
    # found on the graph and on each backend, not by the comparison (both sides carry the same labels)
    export = results.details(ExportDetails)
    assert export is not None and any("ONNX graph 'scores'" in m for m in export.ordering_mismatches)
    run = results.details(RunDetails)
    assert run is not None
    assert any("Torch 'scores'" in m for m in run.runners["torch"].ordering_mismatches)
    assert any("ORT 'boxes'" in m for m in run.runners["onnxrt"].ordering_mismatches)
    assert "has the shape declared for" in (tmp_path / "report.html").read_text()


def test_the_same_tuple_declared_in_its_order_passes(tmp_path):
    results = run_pipeline(RunConfig(head_recipe((BOXES, SCORES)), tmp_path, backends=("torch", "onnxrt")))
    assert results.verdict.exit_code == ExitCode.PASSED, results.verdict
    run = results.details(RunDetails)
    assert run is not None and not any(r.ordering_mismatches for r in run.runners.values())


def test_a_mislabel_between_outputs_of_one_shape_and_different_dtypes_is_exit_3(tmp_path):
    labels = TensorSpec("labels", ("batch", 4), "int64")
    results = run_pipeline(
        RunConfig(head_recipe((labels, BOXES), labels=True), tmp_path, backends=("torch", "onnxrt"))
    )
    assert results.verdict.exit_code == ExitCode.ORDERING_MISMATCH, results.verdict
    assert "'labels' has the shape declared for 'boxes'" in results.verdict.summary


def test_an_output_that_fits_no_declaration_fails_the_export_naming_it(tmp_path):
    wrong = TensorSpec("scores", ("batch", 11))
    results = run_pipeline(RunConfig(head_recipe((BOXES, wrong)), tmp_path, backends=("torch", "onnxrt")))
    assert results.verdict.exit_code == ExitCode.STAGE_FAILED, results.verdict
    export = results.stage("export")
    assert export.status == "failed"
    assert (
        "output 'scores' is float32(?, 10)" in export.reason or "output 'scores' is float32(" in export.reason
    )
    assert "declares float32(batch, 11)" in export.reason


def test_plain_names_and_declared_outputs_mix_and_must_agree():
    recipe = head_recipe((BOXES, "scores"))
    assert recipe.output_names == ("boxes", "scores")
    assert set(recipe.declared_outputs) == {"boxes"}
    with pytest.raises(UsageError, match="give one of the two"):
        dataclasses.replace(recipe, output_names=("scores", "boxes"))


def seq_recipe() -> Recipe:
    return dataclasses.replace(
        head_recipe(()),
        inputs=(TensorSpec("ids", ("batch", "seq"), "int64"),),
        outputs=(TensorSpec("hidden", ("batch", "seq", 8)), TensorSpec("pooled", ("batch", 8))),
        output_names=(),
    )


def test_dynamic_dims_bind_across_the_inputs_and_the_outputs_of_one_sample():
    recipe = seq_recipe()
    feed = {"ids": np.zeros((2, 7), np.int64)}
    ok = {"hidden": Produced((2, 7, 8), "float32"), "pooled": Produced((2, 8), "float32")}
    assert check_outputs(recipe, ok, "ORT", feed) == ()
    # a symbolic dim (an ONNX file's) fits any size; a wrong concrete one does not
    assert check_outputs(recipe, {"hidden": Produced(("s0", "s1", 8), "float32")}, "ONNX graph") == ()
    with pytest.raises(
        HarnessError, match=r"ORT output 'hidden' is float32\(2, 5, 8\).*float32\(batch, seq, 8\)"
    ):
        check_outputs(recipe, {"hidden": Produced((2, 5, 8), "float32")}, "ORT", feed)
    with pytest.raises(HarnessError, match="'pooled' is float32"):
        check_outputs(recipe, {"pooled": Produced((3, 8), "float32")}, "ORT", feed)


def test_swapped_outputs_of_one_rank_fit_each_other_only_through_their_bound_dims():
    recipe = dataclasses.replace(
        seq_recipe(),
        outputs=(TensorSpec("per_token", ("batch", "seq")), TensorSpec("per_row", ("batch", 3))),
        output_names=(),  # else the names taken from the earlier outputs would contradict these
    )
    feed = {"ids": np.zeros((2, 7), np.int64)}
    swapped = {"per_token": Produced((2, 3), "float32"), "per_row": Produced((2, 7), "float32")}
    findings = check_outputs(recipe, swapped, "TensorRT", feed)
    assert len(findings) == 2
    assert "TensorRT 'per_token' has the shape declared for 'per_row'" in findings[0]
    assert "TensorRT 'per_row' has the shape declared for 'per_token'" in findings[1]


# --- TensorRT through its engine's I/O metadata, with a stand-in (TensorRT never executes here) ------


class StandInEngine:
    """An engine as Polygraphy's TrtRunner exposes it: I/O names, modes, shapes (-1 dynamic), dtypes."""

    def __init__(self, io: dict[str, tuple[str, tuple[int, ...], str]]) -> None:
        self._io = io
        self.num_io_tensors = len(io)

    def get_tensor_name(self, index: int) -> str:
        return list(self._io)[index]

    def _trt(self):
        from trt_harness.conversions.tensorrt_flavor import select_flavor

        return select_flavor().module()

    def get_tensor_mode(self, name: str):
        mode = self._io[name][0]
        return self._trt().TensorIOMode.INPUT if mode == "input" else self._trt().TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._io[name][1]

    def get_tensor_dtype(self, name: str):
        return getattr(self._trt().DataType, self._io[name][2])


@pytest.fixture
def engine_with(monkeypatch, tmp_path):
    """A TensorRT backend activated on a stand-in engine with the given I/O (no runner executes)."""
    from trt_harness.conversions.tensorrt_flavor import select_flavor

    select_flavor()  # before polygraphy.backend.trt is imported (see select_flavor)
    import polygraphy.backend.trt as polygraphy_trt

    monkeypatch.setattr(tensorrt_backend, "cuda_devices", lambda: (CudaDevice(0, "stand-in", (8, 6)),))
    monkeypatch.setattr(polygraphy_trt, "EngineFromBytes", lambda data: data)

    def activate(recipe: Recipe, io) -> tensorrt_backend.TensorRTBackend:
        class Runner:
            def __init__(self, loader) -> None:
                self.engine = StandInEngine(io)

            def activate(self) -> None: ...

            def deactivate(self) -> None: ...

        monkeypatch.setattr(polygraphy_trt, "TrtRunner", Runner)
        engine = tmp_path / "model.engine"
        engine.write_bytes(b"stand-in")
        backend = tensorrt_backend.TensorRTBackend(BackendContext(recipe, engine_path=engine))
        backend.activate()
        return backend

    return activate


def test_a_tensorrt_engine_whose_outputs_are_mislabelled_is_found_from_its_io_metadata(engine_with):
    recipe = head_recipe((BOXES, SCORES))
    io = {"image": ("input", (-1, 3, 8, 8), "FLOAT"), "boxes": ("output", (-1, 10), "FLOAT")}
    io["scores"] = ("output", (-1, 4), "FLOAT")
    backend = engine_with(recipe, io)
    assert list(backend.ordering_mismatches) == [
        "ordering mismatch: TensorRT 'boxes' has the shape declared for 'scores' (float32(?, 10); "
        "'boxes' is declared float32(batch, 4), 'scores' float32(batch, 10))",
        "ordering mismatch: TensorRT 'scores' has the shape declared for 'boxes' (float32(?, 4); "
        "'scores' is declared float32(batch, 10), 'boxes' float32(batch, 4))",
    ]


def test_a_tensorrt_engine_true_to_the_declaration_and_one_of_another_dtype(engine_with):
    recipe = head_recipe((BOXES, SCORES))
    io = {"image": ("input", (-1, 3, 8, 8), "FLOAT"), "scores": ("output", (-1, 10), "FLOAT")}
    io["boxes"] = ("output", (-1, 4), "FLOAT")  # the engine's order is not the recipe's: fine
    assert not engine_with(recipe, io).ordering_mismatches
    io["boxes"] = ("output", (-1, 4), "HALF")
    with pytest.raises(HarnessError, match=r"TensorRT output 'boxes' is float16\(\?, 4\)"):
        engine_with(recipe, io)
