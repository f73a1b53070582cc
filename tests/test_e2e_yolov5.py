"""The spine, end to end: YOLOv5s through every stage, TensorRT build included (at 320x320 to stay fast)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from harness.errors import ExitCode

pytestmark = pytest.mark.slow


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("yolov5")
    proc = harness("convert", "yolov5", "-p", "image_size=320", "--out", str(out))
    assert proc.returncode == ExitCode.PASSED, proc.stdout + proc.stderr
    return out


def stage(results: dict, name: str) -> dict:
    return next(s for s in results["stages"] if s["name"] == name)


def test_every_stage_ran_and_wrote_its_artifacts(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    assert [(s["name"], s["status"]) for s in results["stages"]] == [
        ("export", "ok"), ("surgery", "ok"), ("build", "ok"), ("run", "ok"), ("compare", "ok"),
    ]
    for s in results["stages"]:
        for artifact in s["artifacts"].values():
            assert (run_dir / artifact["path"]).stat().st_size == artifact["size_bytes"]
    assert (run_dir / "report.html").is_file()
    assert results["verdict"] == {
        "passed": True, "exit_code": 0, "status": "PASSED", "summary": results["verdict"]["summary"],
    }


def test_onnx_names_equal_the_recipe(run_dir):
    for name in ("model.onnx", "model.final.onnx"):
        graph = onnx.load(str(run_dir / name), load_external_data=False).graph
        assert [i.name for i in graph.input] == ["images"]
        assert [o.name for o in graph.output] == ["output0"]
        dim = graph.input[0].type.tensor_type.shape.dim[0]
        assert dim.dim_param and not dim.dim_value, "batch is dynamic"


def test_surgery_keeps_ort_outputs_within_1e6_relative(run_dir):
    import numpy as np
    import onnxruntime as ort
    from polygraphy.json import load_json

    results = json.loads((run_dir / "results.json").read_text())
    surgery = stage(results, "surgery")["details"]
    assert surgery["op_counts_before"] and surgery["op_counts_after"]
    assert [p["name"] for p in surgery["passes"]] == ["fold_constants", "cleanup", "toposort"]
    feed = load_json(str(run_dir / "inputs.json"))[0]
    before, after = (
        ort.InferenceSession(str(run_dir / name), providers=["CPUExecutionProvider"]).run(None, feed)[0]
        for name in ("model.onnx", "model.final.onnx")
    )
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=0)


def test_tensorrt_built_but_not_executed_without_a_gpu(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    build = stage(results, "build")["details"]
    assert build["flavor"]["module"] in ("tensorrt", "tensorrt_rtx")
    assert build["network_layers"] > 100 and build["plan_size_bytes"] > 1_000_000
    engine = run_dir / build["engine"]
    assert engine.stat().st_size == build["plan_size_bytes"]
    assert build["flavor"]["version"] in engine.name
    tensorrt = stage(results, "run")["details"]["backends"]["tensorrt"]
    assert tensorrt["executed"] is False and tensorrt["reason"]
    compared = {(c["ref_backend"], c["cand_backend"], c["output"]) for c in stage(results, "compare")["details"]["comparisons"]}
    assert compared == {("torch", "onnxrt", "output0")}, "no TensorRT number that was not measured"
    html = (run_dir / "report.html").read_text()
    assert "built, not executed" in html and tensorrt["reason"] in html


def test_zero_tolerance_fails_the_gate_and_the_recipe_tolerance_passes_again(run_dir):
    strict = harness("compare", str(run_dir), "--atol", "0", "--rtol", "0")
    assert strict.returncode == ExitCode.ACCURACY_FAILED, strict.stdout + strict.stderr
    assert json.loads((run_dir / "results.json").read_text())["verdict"]["passed"] is False
    again = harness("compare", str(run_dir))
    assert again.returncode == ExitCode.PASSED, again.stdout + again.stderr
