"""Pipeline behaviour on small models: the ordering-mismatch gate, and failures written as data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from trt_harness.harness.pipeline import RunConfig, run_pipeline
from trt_harness.models.core.errors import ExitCode
from trt_harness.models.recipe import ExportOptions, Recipe, ShapeRange, TensorSpec
from trt_harness.models.results.document import load_results


def depth_model():
    import torch

    class Depth(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)

        def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
            depth = torch.sigmoid(self.conv(image)) * 10.0
            # same shape as depth, different values: swapping the two labels is invisible to shape checks
            depth_min = depth.amin(dim=(2, 3), keepdim=True).expand_as(depth)
            return {"depth": depth, "depth_min": depth_min}

    torch.manual_seed(0)
    return Depth().eval()


def recipe(output_names: tuple[str, ...]) -> Recipe:
    rng = np.random.default_rng(0)
    samples = [{"image": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(2)]
    return Recipe(
        name="depth_pair",
        description="two same-shape outputs",
        build_model=lambda weights: depth_model(),
        sample_inputs=lambda: samples,
        inputs=(TensorSpec("image", ("batch", 3, 16, 16)),),
        output_names=output_names,
        shape_ranges={"image": ShapeRange((1, 3, 16, 16), (1, 3, 16, 16), (2, 3, 16, 16))},
        export=ExportOptions(exporter="torchscript", opset=17),
    )


@pytest.mark.parametrize(
    ("output_names", "exit_code"),
    [(("depth_min", "depth"), ExitCode.ORDERING_MISMATCH), (("depth", "depth_min"), ExitCode.PASSED)],
    ids=["swapped", "in-order"],
)
def test_swapped_output_names_fail_the_gate_with_the_mismatch_code(tmp_path, output_names, exit_code):
    results = run_pipeline(RunConfig(recipe(output_names), tmp_path, backends=("torch", "onnxrt")))
    verdict = results.verdict
    assert verdict.exit_code == exit_code, verdict
    assert load_results(tmp_path) == results  # what was written reads back as the same values
    if exit_code == ExitCode.ORDERING_MISMATCH:
        assert "ordering mismatch: ORT 'depth' matches Torch 'depth_min'" in verdict.summary
        assert "ordering mismatch" in (tmp_path / "report.html").read_text()


def test_an_unexpected_error_in_a_stage_is_a_failed_stage_and_the_report_is_still_written(tmp_path):
    broken = recipe(("depth", "depth_min"))

    def no_samples():
        raise ValueError("sample loader crashed")

    results = run_pipeline(RunConfig(dataclasses.replace(broken, sample_inputs=no_samples), tmp_path))
    failed = [s for s in results.stages if s.status == "failed"]
    assert [s.name for s in failed] == ["samples"]
    assert "ValueError" in failed[0].reason and "sample loader crashed" in failed[0].reason
    assert failed[0].traceback and "no_samples" in failed[0].traceback
    assert all(s.status == "skipped" for s in results.stages[1:])
    assert results.verdict.exit_code == ExitCode.STAGE_FAILED
    assert "sample loader crashed" in (tmp_path / "report.html").read_text()
    assert load_results(tmp_path).verdict == results.verdict


def wide_model():
    import torch

    class Wide(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)  # 1.7 kB of weights: above the inline limit
            self.head = torch.nn.Conv2d(16, 1, 1)

        def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"depth": self.head(torch.relu(self.conv(image)))}

    torch.manual_seed(0)
    return Wide().eval()


def test_models_over_the_single_file_limit_keep_their_sidecar_through_every_stage_and_the_cache(
    tmp_path, monkeypatch
):
    from trt_harness.conversions import onnx_files

    monkeypatch.setattr(onnx_files, "SINGLE_FILE_LIMIT", 1024)  # as if the model were over 2 GiB
    wide = dataclasses.replace(recipe(("depth",)), name="wide", build_model=lambda weights: wide_model())
    config = RunConfig(wide, tmp_path / "run", cache_dir=tmp_path / "cache")
    results = run_pipeline(config)
    assert results.verdict.passed, results.verdict
    for stage, artifact, model in (
        ("export", "onnx", "model.onnx"),
        ("surgery", "onnx_final", "model.final.onnx"),
    ):
        record = results.stage(stage).artifacts[artifact]
        sidecars = [m.path for m in record.members[1:]]
        assert len(sidecars) == 1 and sidecars[0].startswith(f"{model}.") and sidecars[0].endswith(".data")
        assert (tmp_path / "run" / sidecars[0]).stat().st_size > 1024
    assert results.stage("build").status == "ok"

    # a fresh folder from the cache: every stage restored, each model with its own sidecar
    again = run_pipeline(dataclasses.replace(config, out_dir=tmp_path / "again"))
    rerun = ("samples",)  # the samples stage is never cached: its feeds come from the recipe, each run
    assert {s.name: s.status for s in again.stages if s.name not in rerun} == {
        s.name: "cached" if s.status == "ok" else s.status for s in results.stages if s.name not in rerun
    }
    for record in again.stages:
        for artifact in record.artifacts.values():
            artifact.verified(tmp_path / "again")
    assert again.verdict.passed


def head_model():
    import torch

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 14, 1)

        def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
            features = self.conv(image).mean(dim=(2, 3))  # (N, 14)
            return {"boxes": features[:, :4], "scores": torch.sigmoid(features[:, 4:])}

    torch.manual_seed(0)
    return Head().eval()


@pytest.mark.parametrize("declared", [False, True], ids=["names", "declared-outputs"])
def test_swapped_names_of_outputs_with_different_shapes_are_an_ordering_mismatch_not_a_failed_stage(
    tmp_path, declared
):
    swapped = dataclasses.replace(
        recipe(("scores", "boxes")), name="head", build_model=lambda weights: head_model()
    )
    if declared:  # shapes declared as for inputs: the graph and ORT are caught by them too, naming both
        specs = (TensorSpec("scores", ("batch", 10)), TensorSpec("boxes", ("batch", 4)))
        swapped = dataclasses.replace(swapped, output_names=(), outputs=specs)
    results = run_pipeline(RunConfig(swapped, tmp_path, backends=("torch", "onnxrt")))
    assert all(s.status != "failed" for s in results.stages), results.verdict
    assert results.verdict.exit_code == ExitCode.ORDERING_MISMATCH, results.verdict
    assert "ORT 'scores' matches Torch 'boxes'" in results.verdict.summary
    if declared:
        assert "ORT 'scores' has the shape declared for 'boxes'" in results.verdict.summary
        assert "ONNX graph 'boxes' has the shape declared for 'scores'" in results.verdict.summary
        assert "Torch 'scores' has" not in results.verdict.summary  # the dict keeps its true names
    comparisons = results.stage("compare").details.comparisons
    compared = {c.output: c for c in comparisons if c.sample_set == "samples"}
    assert compared["boxes"].shape_mismatches == 2 and "Torch (1, 4), ORT (1, 10)" in compared["boxes"].reason
    # the cross-match is computed although the shapes differ, and shown in the report
    report = (tmp_path / "report.html").read_text()
    assert "ORT (rows) against Torch (columns)" in report
    assert "ordering mismatch: ORT &#39;scores&#39; matches Torch &#39;boxes&#39;" in report or (
        "ordering mismatch: ORT 'scores' matches Torch 'boxes'" in report
    )
