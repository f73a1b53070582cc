"""The benchmark suite's code at tiny sizes: it must measure what it says, not reach any number."""

from __future__ import annotations

import json
import resource

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper

import harness.bench.__main__ as bench_cli
import harness.bench.convert as bench_convert
import harness.bench.suite as bench_suite
from harness.bench.base import Benchmark, BenchResult, BenchSettings, Table, Target, benchmarks, percentile
from harness.bench.convert import ConvertRun, StageTiming, ensure_run, run_convert
from harness.bench.latency import batch_feed, measure_latency, onnx_models, time_interleaved
from harness.bench.memory import fresh_samples, measure_in_fresh_process, write_spec
from harness.bench.pipeline_time import expected_statuses, unexpected_statuses
from harness.bench.report import to_markdown, write_report
from harness.bench.throughput import measure_throughput
from models.core.errors import HarnessError
from models.recipe import Tolerance

# --- shared pieces ---------------------------------------------------------------------------------


def convert_run(*statuses: tuple[str, str], wall: float = 1.0) -> ConvertRun:
    return ConvertRun(wall, 0, tuple(StageTiming(name, status, 0.1) for name, status in statuses))


def relu_onnx(path) -> None:
    """A one-node model with a dynamic batch axis: enough for ONNX Runtime to run and be timed."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_every_benchmark_registers_in_run_order():
    names = [b.name for b in benchmarks()]
    assert names == ["pipeline", "latency", "comparison", "memory"]


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50), st.floats(0, 100))
def test_percentile_is_numpys_linear_percentile(values, q):
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    ("value", "direction", "passed"),
    [
        (0.05, "<=", True),
        (0.2, "<=", False),
        (5.0, ">=", True),
        (1.0, ">=", False),
        (None, "<=", False),
        (float("nan"), "<=", False),
    ],
)
def test_target_passes_only_on_a_measured_value_on_the_right_side(value, direction, passed):
    limit = 0.1 if direction == "<=" else 3.0
    assert Target("b", "m", value, limit, direction).passed is passed


# --- benchmark 1: pipeline -------------------------------------------------------------------------


def test_a_later_run_must_serve_ok_stages_from_the_cache_and_keep_skips():
    cold = convert_run(("export", "ok"), ("build", "skipped"), ("compare", "ok"))
    assert expected_statuses(cold) == {"export": "cached", "build": "skipped", "compare": "cached"}
    tolerance = expected_statuses(cold, rerun=("compare",))
    assert tolerance == {"export": "cached", "build": "skipped", "compare": "ok"}
    good = convert_run(("export", "cached"), ("build", "skipped"), ("compare", "ok"))
    assert unexpected_statuses([good], tolerance) == []
    rerun_export = convert_run(("export", "ok"), ("build", "skipped"), ("compare", "ok"))
    problems = unexpected_statuses([good, rerun_export], tolerance)
    assert problems == ["run 2: export ok, expected cached"]


def test_outside_stages_time_is_the_wall_time_not_spent_in_stages():
    run = convert_run(("export", "ok"), ("compare", "ok"), wall=2.0)
    assert run.outside_stages_s == pytest.approx(1.8)


def test_a_convert_that_reaches_no_verdict_is_an_error_naming_the_command(tmp_path):
    settings = BenchSettings(out_dir=tmp_path, recipe="no-such-recipe", params={})
    with pytest.raises(HarnessError, match="no-such-recipe.*exited with 2"):
        run_convert(settings)


def _saved_run(run_dir, recipe: str, params: dict, backends: dict[str, bool]) -> None:
    run_dir.mkdir(parents=True)
    artifacts = {f"outputs_{name}": {"path": f"{name}_outputs.json"} for name in backends}
    results = {
        "recipe": {"name": recipe, "params": params},
        "stages": [
            {
                "name": "run",
                "artifacts": artifacts,
                "details": {"backends": {name: {"executed": ran} for name, ran in backends.items()}},
            }
        ],
    }
    (run_dir / "results.json").write_text(json.dumps(results))


def test_ensure_run_reuses_a_matching_run_and_converts_otherwise(tmp_path, monkeypatch):
    converted = []
    monkeypatch.setattr(bench_convert, "run_convert", lambda settings: converted.append(settings))
    settings = BenchSettings(out_dir=tmp_path, recipe="yolov5", params={"image_size": 320})
    _saved_run(settings.run_dir, "yolov5", {"image_size": 320, "batch": 1}, {"torch": True, "onnxrt": True})
    assert ensure_run(settings) == settings.run_dir
    assert converted == []
    other_size = BenchSettings(out_dir=tmp_path, recipe="yolov5", params={"image_size": 640})
    ensure_run(other_size)
    assert converted == [other_size]


def test_ensure_run_converts_when_fewer_than_two_backends_ran(tmp_path, monkeypatch):
    converted = []
    monkeypatch.setattr(bench_convert, "run_convert", lambda settings: converted.append(settings))
    settings = BenchSettings(out_dir=tmp_path, recipe="yolov5", params={})
    _saved_run(settings.run_dir, "yolov5", {}, {"torch": True, "onnxrt": False})
    ensure_run(settings)
    assert converted == [settings]


# --- benchmark 2: latency --------------------------------------------------------------------------


def test_onnx_models_labels_the_final_model_and_its_precision_variants(tmp_path):
    for name in (
        "model.onnx",
        "model.final.onnx",
        "model.final.fp16.onnx",
        "model.final.int8.onnx",
        "x.engine",
    ):
        (tmp_path / name).write_bytes(b"")
    models = onnx_models(tmp_path)
    assert {label: p.name for label, p in models.items()} == {
        "onnxrt": "model.final.onnx",
        "onnxrt-fp16": "model.final.fp16.onnx",
        "onnxrt-int8": "model.final.int8.onnx",
    }


def test_onnx_models_falls_back_to_the_export_and_fails_without_any(tmp_path):
    with pytest.raises(HarnessError, match="model.final.onnx"):
        onnx_models(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"")
    assert onnx_models(tmp_path) == {"onnxrt": tmp_path / "model.onnx"}


def test_batch_feed_takes_rows_in_turn_from_every_sample():
    feeds = [{"x": np.full((2, 3), i, dtype=np.float32)} for i in range(2)]  # rows 0, 0, 1, 1
    batch = batch_feed(feeds, 5)["x"]
    assert batch.shape == (5, 3)
    assert batch[:, 0].tolist() == [0, 0, 1, 1, 0]
    assert batch.flags.c_contiguous


def test_time_interleaved_times_every_round_and_drops_a_failing_runner():
    calls = []

    def broken():
        raise RuntimeError("no kernel for this op")

    samples, errors = time_interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b"), "bad": broken}, runs=3, warmup=1
    )
    assert {name: len(xs) for name, xs in samples.items()} == {"a": 3, "b": 3}
    assert calls == ["a", "b", "a", "b", "a", "b", "a", "b"]  # one warm-up each, then interleaved rounds
    assert "no kernel for this op" in errors["bad"]


def test_measure_latency_times_torch_and_ort_at_each_batch_and_reports_a_broken_variant(tmp_path):
    import torch

    relu_onnx(tmp_path / "model.final.onnx")
    (tmp_path / "model.final.fp16.onnx").write_bytes(b"not an onnx file")
    feeds = {b: {"x": np.ones((b, 3), dtype=np.float32)} for b in (1, 4)}
    threads_before = torch.get_num_threads()
    data = measure_latency(torch.nn.ReLU(), onnx_models(tmp_path), feeds, ("x",), runs=3, warmup=1, threads=1)
    assert torch.get_num_threads() == threads_before
    assert data["threads"]["torch_intra_op"] == data["threads"]["ort_intra_op"] == 1
    assert set(data["batches"]) == {"1", "4"}
    for engines in data["batches"].values():
        assert set(engines) == {"torch", "onnxrt"}
        for stats in engines.values():
            assert len(stats["samples_s"]) == 3
            assert min(stats["samples_s"]) <= stats["median_s"] <= stats["p90_s"] <= max(stats["samples_s"])
    one = data["batches"]["1"]
    assert data["ratios_to_torch"]["1"]["onnxrt"] == pytest.approx(
        one["onnxrt"]["median_s"] / one["torch"]["median_s"]
    )
    assert "onnxrt-fp16" in data["errors"]


# --- benchmark 3: comparison throughput ------------------------------------------------------------


def _samples(count: int, offset: float) -> list[dict[str, dict[str, np.ndarray]]]:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((2, 300), dtype=np.float32)
    return [{"torch": {"y": base}, "onnxrt": {"y": base + np.float32(offset)}} for _ in range(count)]


@pytest.mark.parametrize(("offset", "passed"), [(1e-6, True), (0.5, False)])
def test_measure_throughput_runs_both_on_the_same_data_with_the_same_tolerance(offset, passed):
    from polygraphy.logger import G_LOGGER

    severity = G_LOGGER.module_severity
    samples = _samples(3, offset)
    data = measure_throughput(samples, ("torch", "onnxrt"), lambda _: Tolerance(1e-3, 1e-3), {}, repeats=2)
    assert G_LOGGER.module_severity is severity
    assert data["bytes_per_pass"] == 3 * 2 * samples[0]["torch"]["y"].nbytes
    assert {name: len(xs) for name, xs in data["seconds"].items()} == {"ours": 2, "polygraphy": 2}
    assert data["passed"] == {"ours": passed, "polygraphy": passed}
    mb = data["bytes_per_pass"] / 1e6
    assert data["mb_per_s"]["ours"] == pytest.approx(mb / data["median_s"]["ours"])
    assert data["speedup"] == pytest.approx(data["mb_per_s"]["ours"] / data["mb_per_s"]["polygraphy"])


# --- benchmark 4: memory ---------------------------------------------------------------------------


def test_fresh_samples_are_new_arrays_close_to_the_base():
    base = {"y": (np.arange(1, 7, dtype=np.float32), np.arange(2, 8, dtype=np.float32))}
    samples = list(fresh_samples(base, ("torch", "onnxrt"), 3, seed=0))
    assert len(samples) == 3
    arrays = [s[backend]["y"] for s in samples for backend in ("torch", "onnxrt")]
    assert not any(
        np.shares_memory(a, b) for i, a in enumerate(arrays) for b in [*arrays[i + 1 :], *base["y"]]
    )
    np.testing.assert_allclose(samples[0]["torch"]["y"], base["y"][0], rtol=1e-3)
    assert samples[0]["torch"]["y"].dtype == np.float32


def test_memory_worker_compares_every_sample_and_does_not_inherit_this_process_peak(tmp_path):
    ballast = np.ones(64 * 2**20 // 8)  # raise this process's peak RSS well above a small worker's
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((1, 2000, 85), dtype=np.float32)
    sample = {"torch": {"out": ref}, "onnxrt": {"out": ref + np.float32(1e-6)}}
    spec = write_spec(tmp_path, ("torch", "onnxrt"), sample, lambda _: Tolerance(1e-3, 1e-3))
    result = measure_in_fresh_process(spec, 4, trace=True)
    assert result["compared_samples"] == 4
    assert result["bytes_per_sample"] == 2 * ref.nbytes
    assert result["peak_rss_bytes"] >= result["baseline_rss_bytes"]
    assert result["tracemalloc_peak_bytes"] > 0
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert result["baseline_rss_bytes"] < own_peak - ballast.nbytes // 2
    if result["vm_hwm_peak_bytes"] is not None:  # Linux: the worker's own address space agrees
        assert abs(result["vm_hwm_peak_bytes"] - result["peak_rss_bytes"]) < 16 * 2**20


# --- suite, report, command line -------------------------------------------------------------------


def _result(name: str, value: float) -> BenchResult:
    table = Table("caption | with a pipe", ("a", "b"), (("1", "x|y"),))
    target = Target(name, "speed", value, 3.0, ">=", "detail")
    return BenchResult(name, f"{name} title", {"samples": [value]}, (target,), (table,), ("a note",))


def _fake_benchmarks(*results: BenchResult | Exception) -> list[Benchmark]:
    def runner(outcome):
        def run(settings: BenchSettings) -> BenchResult:
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        return run

    return [Benchmark(f"b{i}", f"bench {i}", runner(r), i) for i, r in enumerate(results)]


def test_run_suite_records_a_failing_benchmark_and_still_runs_the_rest(tmp_path, monkeypatch):
    fakes = _fake_benchmarks(HarnessError("no run folder"), _result("b1", 5.0))
    monkeypatch.setattr(bench_suite, "benchmarks", lambda: fakes)
    report = bench_suite.run_suite(BenchSettings(out_dir=tmp_path), log=lambda _: None)
    assert report.errors == {"b0": "no run folder"}
    assert [r.name for r in report.results] == ["b1"]
    assert not report.passed  # an error fails the suite even when every measured target is met
    only = bench_suite.run_suite(BenchSettings(out_dir=tmp_path), names=["b1"], log=lambda _: None)
    assert only.passed and not only.errors


def test_report_files_hold_the_schema_raw_data_and_a_row_per_target(tmp_path, monkeypatch):
    monkeypatch.setattr(
        bench_suite, "benchmarks", lambda: _fake_benchmarks(_result("b0", 5.0), _result("b1", 1.0))
    )
    report = bench_suite.run_suite(
        BenchSettings(out_dir=tmp_path), command="python -m harness.bench", log=lambda _: None
    )
    json_path, md_path = write_report(report, tmp_path)
    data = json.loads(json_path.read_text())
    assert data["schema_version"] == bench_suite.SCHEMA_VERSION
    assert data["benchmarks"]["b0"]["data"] == {"samples": [5.0]}
    assert [t["passed"] for t in data["targets"]] == [True, False]
    assert data["passed"] is False
    assert data["machine"]["processor_count"] >= 1
    markdown = md_path.read_text()
    assert markdown == to_markdown(report)
    assert markdown.count("**MISSED**") == 1
    assert "x\\|y" in markdown  # cells cannot break the table


@pytest.mark.parametrize(("value", "exit_code"), [(5.0, 0), (1.0, 1)])
def test_cli_exits_1_when_a_target_is_missed(tmp_path, monkeypatch, capsys, value, exit_code):
    from polygraphy.logger import G_LOGGER

    monkeypatch.setattr(G_LOGGER, "module_severity", G_LOGGER.module_severity)  # main() sets it
    monkeypatch.setattr(bench_suite, "benchmarks", lambda: _fake_benchmarks(_result("b0", value)))
    assert bench_cli.main(["--out", str(tmp_path), "--quick"]) == exit_code
    assert "## Targets" in capsys.readouterr().out
    assert (tmp_path / "bench.json").is_file() and (tmp_path / "bench.md").is_file()


def test_cli_quick_preset_yields_to_explicit_flags(tmp_path):
    parser = bench_cli.build_parser()
    quick = bench_cli.settings_from_args(parser.parse_args(["--quick", "--out", str(tmp_path)]))
    full = bench_cli.settings_from_args(parser.parse_args([]))
    assert quick.warm_runs < full.warm_runs and quick.params["image_size"] < full.params["image_size"]
    chosen = bench_cli.settings_from_args(
        parser.parse_args(["--quick", "--warm-runs", "7", "--image-size", "256", "--batch", "1", "3"])
    )
    assert (chosen.warm_runs, chosen.params["image_size"], chosen.batches) == (7, 256, (1, 3))
    assert chosen.latency_runs == quick.latency_runs


def test_cli_rejects_a_zero_repeat_count():
    with pytest.raises(SystemExit):
        bench_cli.build_parser().parse_args(["--warm-runs", "0"])


# --- the whole suite on the smallest recipe --------------------------------------------------------


@pytest.mark.slow  # ~17 s: one cold and two warm `harness convert` processes
def test_suite_runs_every_benchmark_end_to_end_on_mnist(tmp_path):
    settings = BenchSettings(
        out_dir=tmp_path,
        recipe="mnist",
        params={},
        warm_runs=1,
        latency_runs=2,
        latency_warmup=1,
        batches=(1, 2),
        threads=1,
        compare_samples=3,
        compare_repeats=1,
        memory_samples=(1, 3),
    )
    report = bench_suite.run_suite(settings, log=lambda _: None)
    assert report.errors == {}
    results = {r.name: r for r in report.results}
    assert list(results) == ["pipeline", "latency", "comparison", "memory"]

    pipeline = results["pipeline"].data
    assert pipeline["runs_per_phase"] == {"cold": 1, "warm": 1, "tolerance_change": 1}
    (changed,) = pipeline["runs"]["tolerance_change"]
    assert {s["name"]: s["status"] for s in changed["stages"]}[
        "compare"
    ] == "ok"  # its cache entry was removed
    assert all(run["wall_s"] > 0 for phase in pipeline["runs"].values() for run in phase)

    latency = results["latency"].data
    assert set(latency["batches"]) == {"1", "2"} and set(latency["batches"]["1"]) == {"torch", "onnxrt"}
    assert latency["threads"]["torch_intra_op"] == latency["threads"]["ort_intra_op"] == 1

    comparison = results["comparison"].data
    assert comparison["samples"] == 3 and comparison["pair"] == ["torch", "onnxrt"]

    memory = results["memory"].data
    assert {n: r["compared_samples"] for n, r in memory["runs"].items()} == {"1": 1, "3": 3}

    assert len(report.targets) == 6  # 3 pipeline, 1 each for the others
    json_path, md_path = write_report(report, tmp_path)
    assert json.loads(json_path.read_text())["benchmarks"].keys() == results.keys()
    assert md_path.read_text().count("\n## ") == 5  # the targets, then one section per benchmark
