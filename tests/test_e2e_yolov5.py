"""The spine, end to end: YOLOv5s through every stage, TensorRT build included (at 320x320 to stay fast)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from trt_harness.harness.sample_files import read_sample
from trt_harness.models.core.errors import ExitCode
from trt_harness.models.results.comparisons import SAMPLES
from trt_harness.models.results.document import Results, load_results
from trt_harness.models.results.stages import (
    BuildDetails,
    CompareDetails,
    RunDetails,
    SamplesDetails,
    ScanDetails,
    SurgeryDetails,
)

pytestmark = pytest.mark.slow


CONVERT = ("convert", "yolov5", "-p", "image_size=320")


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory) -> dict[str, str]:
    return {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path_factory.mktemp("cache")), "CI": "true"}


def harness(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=900, env=env
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, cache_env) -> Path:
    out = tmp_path_factory.mktemp("yolov5")
    proc = harness(*CONVERT, "--out", str(out), env=cache_env)
    assert proc.returncode == ExitCode.PASSED, proc.stdout + proc.stderr
    return out


def statuses(results: Results) -> dict[str, str]:
    return {s.name: s.status for s in results.stages}


def test_every_stage_ran_and_wrote_its_artifacts(run_dir):
    results = load_results(run_dir)
    assert [(s.name, s.status) for s in results.stages] == [
        ("samples", "ok"),
        ("scan", "ok"),
        ("export", "ok"),
        ("surgery", "ok"),
        ("precision", "skipped"),
        ("build", "ok"),
        ("run", "ok"),
        ("compare", "ok"),
    ]
    for s in results.stages:
        for artifact in s.artifacts.values():
            assert artifact.verified(run_dir).exists()
            assert sum((run_dir / m.path).stat().st_size for m in artifact.members) == artifact.size_bytes
    assert (run_dir / "report.html").is_file() and (run_dir / "junit.xml").is_file()
    assert results.verdict.passed and results.verdict.status == "PASSED"
    # written once, read by everyone: the raw file has the schema and the same verdict
    raw = json.loads((run_dir / "results.json").read_text())
    assert raw["schema"] == "trt-harness/results" and raw["schema_version"] == 2
    assert raw["verdict"]["exit_code"] == 0


def test_onnx_names_equal_the_recipe(run_dir):
    for name in ("model.onnx", "model.final.onnx"):
        graph = onnx.load(str(run_dir / name), load_external_data=False).graph
        assert [i.name for i in graph.input] == ["images"]
        assert [o.name for o in graph.output] == ["output0"]
        dim = graph.input[0].type.tensor_type.shape.dim[0]
        assert dim.dim_param and not dim.dim_value, "batch is dynamic"


def test_surgery_keeps_ort_outputs_within_1e6_relative(run_dir):
    surgery = load_results(run_dir).details(SurgeryDetails)
    assert surgery is not None and surgery.op_counts_before and surgery.op_counts_after
    assert [p.name for p in surgery.passes] == ["fold_constants", "cleanup", "toposort"]
    feed = read_sample(next((run_dir / "samples" / SAMPLES).glob("*.npz")))
    before, after = (
        ort.InferenceSession(str(run_dir / name), providers=["CPUExecutionProvider"]).run(None, feed)[0]
        for name in ("model.onnx", "model.final.onnx")
    )
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=0)


def test_tensorrt_built_but_not_executed_without_a_gpu(run_dir):
    results = load_results(run_dir)
    build = results.details(BuildDetails)
    assert build is not None and build.flavor.module_name in ("tensorrt", "tensorrt_rtx")
    engine_record = build.engines["fp32"]
    assert engine_record.network_layers > 100 and engine_record.plan_size_bytes > 1_000_000
    engine = run_dir / engine_record.engine
    assert engine.stat().st_size == engine_record.plan_size_bytes
    assert build.flavor.version in engine.name
    run = results.details(RunDetails)
    tensorrt = run.runners["tensorrt"]
    assert tensorrt.state == "built, not executed" and tensorrt.reason and tensorrt.outputs is None
    assert not (run_dir / "outputs" / "tensorrt").exists()
    compare = results.details(CompareDetails)
    compared = {(c.ref_backend, c.cand_backend, c.output) for c in compare.comparisons}
    assert compared == {("torch", "onnxrt", "output0")}, "no TensorRT number that was not measured"
    html = (run_dir / "report.html").read_text()
    assert "built, not executed" in html and tensorrt.reason in html


def test_same_run_with_zero_tolerance_fails_and_reruns_only_compare(run_dir, cache_env):
    strict = harness(*CONVERT, "--out", str(run_dir), "--atol", "0", "--rtol", "0", env=cache_env)
    assert strict.returncode == ExitCode.ACCURACY_FAILED, strict.stdout + strict.stderr
    results = load_results(run_dir)
    assert statuses(results) == {
        "samples": "ok",  # never cached: the feeds come from the recipe's code, each run
        "scan": "cached",
        "export": "cached",
        "surgery": "cached",
        "precision": "skipped",
        "build": "cached",
        "run": "cached",
        "compare": "ok",
    }
    assert not results.verdict.passed


def test_harness_compare_changes_the_verdict_without_running_models(run_dir, cache_env):
    saved = {p: p.stat().st_mtime_ns for p in (run_dir / "outputs").rglob("*.npz")}
    assert saved
    strict = harness("compare", str(run_dir), "--atol", "output0=0", "--rtol", "0", env=cache_env)
    assert strict.returncode == ExitCode.ACCURACY_FAILED, strict.stdout + strict.stderr
    again = harness("compare", str(run_dir), env=cache_env)
    assert again.returncode == ExitCode.PASSED, again.stdout + again.stderr
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "outputs").rglob("*.npz")} == saved, (
        "no backend re-ran"
    )


def test_a_run_killed_during_the_build_rebuilds_next_time(run_dir, cache_env, tmp_path):
    """Kill a run while TensorRT builds; the next run must rebuild, not trust anything half-written."""
    env = {**cache_env, "CI": "false", "PYTHONUNBUFFERED": "1"}
    # a new workspace size gives a new build key while export and surgery stay cached
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "harness", *CONVERT, "-p", "max_batch=4", "--out", str(out)]
    build_entries = Path(cache_env["HARNESS_CACHE_DIR"]).glob("build/*/entry.json")
    entries_before = set(build_entries)
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    for line in proc.stderr:
        if line.startswith("[build]"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not list(out.glob("*.engine")), "no engine under its final name after a kill"
    assert set(Path(cache_env["HARNESS_CACHE_DIR"]).glob("build/*/entry.json")) == entries_before

    rerun = harness(*CONVERT, "-p", "max_batch=4", "--out", str(out), env=cache_env)
    assert rerun.returncode == ExitCode.PASSED, rerun.stdout + rerun.stderr
    results = load_results(out)
    assert statuses(results)["build"] == "ok", "rebuilt, not taken from a partial entry"
    engine = next(out.glob("*.engine"))
    assert engine.stat().st_size == results.details(BuildDetails).engines["fp32"].plan_size_bytes


def test_scan_finds_nothing_to_replace_in_yolov5(run_dir):
    assert load_results(run_dir).details(ScanDetails).findings == ()


def test_one_dynamic_model_is_compared_at_the_three_profile_batch_sizes(run_dir):
    results = load_results(run_dir)
    rows = [c for c in results.details(CompareDetails).comparisons if c.sample_set != SAMPLES]
    sets = results.details(SamplesDetails).sets
    batches = sorted(sets[c.sample_set].shapes[0]["images"][0] for c in rows)
    assert batches == [1, 4, 8]
    assert all(c.passed for c in rows)
    html = (run_dir / "report.html").read_text()
    for batch in (1, 4, 8):
        assert f"images {batch}x3x320x320" in html


def test_reduced_precisions_are_built_and_measured_on_ort_against_torch_fp32(run_dir, cache_env, tmp_path):
    out = tmp_path / "precisions"
    proc = harness(*CONVERT, "--out", str(out), "--precision", "fp32", "fp16", "int8", env=cache_env)
    assert proc.returncode == ExitCode.PASSED, proc.stdout + proc.stderr
    results = load_results(out)
    engines = results.details(BuildDetails).engines
    assert set(engines) == {"fp32", "fp16", "int8"}
    for precision, engine in engines.items():
        assert engine.built or engine.reason.startswith(f"{precision.upper()} not supported"), engine
    by_precision = {
        c.precision: c
        for c in results.details(CompareDetails).comparisons
        if c.sample_set == SAMPLES and c.ref_backend == "torch"
    }
    assert by_precision["fp16"].cand_backend == "onnxrt-fp16"
    assert by_precision["int8"].cand_backend == "onnxrt-int8"
    assert by_precision["fp32"].rmse < by_precision["fp16"].rmse < by_precision["int8"].rmse
    assert all(c.passed for c in by_precision.values())
    html = (out / "report.html").read_text()
    assert "ORT FP16" in html and "ORT INT8" in html


def test_polygraphy_reproduces_the_torch_vs_ort_comparison_from_saved_files(run_dir, cache_env, tmp_path):
    golden = tmp_path / "golden"
    written = harness("golden", str(run_dir), "--out", str(golden), env=cache_env)
    assert written.returncode == 0, written.stdout + written.stderr
    polygraphy = Path(sys.executable).with_name("polygraphy")
    env = {**cache_env, "POLYGRAPHY_USE_TENSORRT_RTX": "0"}
    args = [
        str(polygraphy),
        "run",
        str(run_dir / "model.final.onnx"),
        "--onnxrt",
        "--load-inputs",
        str(golden / SAMPLES / "inputs"),  # folders of per-sample files, streamed by Polygraphy
        "--load-outputs",
        str(golden / SAMPLES / "torch"),
        "--atol",
        "1e-3",
        "--rtol",
        "3e-3",
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "PASSED" in proc.stdout
    samples = len(list((run_dir / "samples" / SAMPLES).glob("*.npz")))
    assert f"Passed: {samples}/{samples} iterations" in proc.stdout, "every sample compared"
    # and it really compares: with zero tolerance Polygraphy fails too
    strict = subprocess.run(
        [*args[:-4], "--atol", "0", "--rtol", "0"], capture_output=True, text=True, timeout=600, env=env
    )
    assert strict.returncode != 0
