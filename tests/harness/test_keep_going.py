"""A TensorRT parse failure fails the run (exit 4) but Torch and ORT still run and are compared.

The model holds a `NonZero`, which ONNX Runtime runs and TensorRT for RTX's parser refuses
("NonZero plugin creator ... not found"): the parse is real, on this CPU machine.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from trt_harness.harness import cli
from trt_harness.harness.stages.build import failing_node
from trt_harness.models.core.errors import ExitCode
from trt_harness.models.recipe import ExportOptions, Recipe, ShapeRange, TensorSpec
from trt_harness.models.results.document import load_results
from trt_harness.models.results.stages import BuildDetails, CompareDetails, RunDetails

from tests.reports.page import parse as parse_html


def nonzero_model():
    import torch

    class CountsPositives(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
            features = self.conv(image)
            # NonZero in the graph: ORT runs it, TensorRT for RTX has no importer for it
            positives = torch.nonzero(features.flatten() > 0).shape[0]
            return {"features": features, "scaled": features * positives / features.numel()}

    torch.manual_seed(0)
    return CountsPositives().eval()


def nonzero_recipe() -> Recipe:
    rng = np.random.default_rng(0)
    samples = [{"image": rng.random((1, 3, 8, 8), dtype=np.float32)} for _ in range(2)]
    return Recipe(
        name="nonzero",
        description="a model TensorRT for RTX cannot parse",
        build_model=lambda weights: nonzero_model(),
        sample_inputs=lambda: samples,
        inputs=(TensorSpec("image", (1, 3, 8, 8)),),
        output_names=("features", "scaled"),
        shape_ranges={"image": ShapeRange((1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8))},
        export=ExportOptions(exporter="torchscript", opset=17),
    )


def test_failing_node_is_read_from_the_parsers_message():
    messages = [
        'ModelImporter.cpp:140: While parsing node number 11 [NonZero -> "/NonZero_output_0"]:',
        "In node 11 with name: /NonZero and operator: NonZero (importNonZero): UNSUPPORTED_NODE: ...",
    ]
    assert failing_node(messages) == ("/NonZero", "NonZero")
    assert failing_node(messages[:1]) == (None, "NonZero")  # the op, where no name is given
    assert failing_node(["Could not parse ONNX correctly"]) == (None, None)


@pytest.mark.slow
def test_a_tensorrt_parse_failure_still_compares_torch_and_ort(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorrt_rtx")
    monkeypatch.setattr(cli, "get_recipe", lambda name, **params: nonzero_recipe())
    out = tmp_path / "run"
    code = cli.main(["convert", "nonzero", "--out", str(out), "--no-cache"])
    assert code == ExitCode.STAGE_FAILED, capsys.readouterr().out

    results = load_results(out)
    stages = {s.name: s for s in results.stages}
    build = stages["build"]
    assert build.status == "failed"
    assert "at node '/model/NonZero' (NonZero)" in build.reason and "plugin creator" in build.reason
    assert isinstance(build.details, BuildDetails)
    refusal = build.details.engines["fp32"]
    assert (refusal.built, refusal.phase, refusal.failing_node, refusal.failing_op) == (
        False,
        "ONNX parse",
        "/model/NonZero",
        "NonZero",
    )
    # the other backends ran and were compared, the TensorRT column says why it has nothing
    assert stages["run"].status == "ok" and stages["compare"].status == "ok"
    run = stages["run"].details
    assert isinstance(run, RunDetails)
    assert {n: r.state for n, r in run.runners.items()} == {
        "torch": "executed",
        "onnxrt": "executed",
        "tensorrt": "build failed",
    }
    assert "/model/NonZero" in (run.runners["tensorrt"].reason or "")
    compare = stages["compare"].details
    assert isinstance(compare, CompareDetails)
    compared = {(c.ref_backend, c.cand_backend, c.output) for c in compare.comparisons}
    assert compared >= {("torch", "onnxrt", "features"), ("torch", "onnxrt", "scaled")}
    assert all(compare.comparisons), [c.reason for c in compare.comparisons if not c]
    assert results.verdict.exit_code == ExitCode.STAGE_FAILED
    assert "the backends that ran: PASSED" in results.verdict.summary

    # as written: results.json holds the comparisons, the report shows them and the refusal
    written = json.loads((out / "results.json").read_text())
    compare_json = next(s for s in written["stages"] if s["name"] == "compare")
    assert {c["cand_backend"] for c in compare_json["details"]["comparisons"]} == {"onnxrt"}
    tree = parse_html((out / "report.html").read_text())
    summary = tree.by_id("summary").text
    assert "Torch vs ORT" in summary and "build failed" in summary
    assert "/model/NonZero" in tree.by_id("build").text
    assert "exit code 4" in tree.by_id("verdict").text
