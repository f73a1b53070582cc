"""The benchmark suite's code at tiny sizes: it must measure what it says, not reach any number."""

from __future__ import annotations

import dataclasses
import json
import resource
import sys

import numpy as np
import onnx
import pytest
import trt_harness.harness.bench.__main__ as bench_cli
import trt_harness.harness.bench.convert as bench_convert
import trt_harness.harness.bench.memory as bench_memory
import trt_harness.harness.bench.suite as bench_suite
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper
from trt_harness.harness.bench.base import (
    Benchmark,
    BenchResult,
    BenchSettings,
    Table,
    Target,
    benchmarks,
    percentile,
)
from trt_harness.harness.bench.convert import (
    ConvertRun,
    StageTiming,
    ensure_run,
    run_convert,
    saved_outputs,
    saved_outputs_pair,
)
from trt_harness.harness.bench.latency import batch_feed, measure_latency, onnx_models, time_interleaved
from trt_harness.harness.bench.memory import (
    measure_peak_rss,
    memory_params,
    memory_result,
    memory_run_dir,
    outputs_on_disk,
    run_stage_overhead,
)
from trt_harness.harness.bench.pipeline_time import expected_statuses, unexpected_statuses
from trt_harness.harness.bench.report import to_markdown, write_report
from trt_harness.harness.bench.throughput import load_samples, measure_throughput
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.recipe import Tolerance
from trt_harness.models.results.document import load_results, save_results
from trt_harness.models.results.stages import RunDetails

from tests.harness import detection_runs as runs

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
    assert names == ["pipeline", "latency", "comparison", "memory", "localize"]


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
    cold = convert_run(("samples", "ok"), ("export", "ok"), ("build", "skipped"), ("compare", "ok"))
    assert expected_statuses(cold) == {
        "samples": "ok",  # a stage without a cache key runs every time
        "export": "cached",
        "build": "skipped",
        "compare": "cached",
    }
    cold = convert_run(("export", "ok"), ("build", "skipped"), ("compare", "ok"))
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


def _saved_run(run_dir, params: dict, samples: int = 2):
    """A real run folder of the tiny detector recipe (tests/harness/detection_runs.py) with `params`."""
    recipe = dataclasses.replace(runs.detector_recipe(), params=params)
    outputs = runs.outputs_per_sample(samples=samples, batch=1)
    return runs.write_run(run_dir, {"torch": outputs, "onnxrt": outputs}, recipe)


def _with_runner(run_dir, name: str, **changes) -> None:
    """Edit one runner's record in the run folder's results.json."""
    results = load_results(run_dir)
    record = results.stage("run")
    details = results.details(RunDetails)
    runner = dataclasses.replace(details.runners[name], **changes)
    run = dataclasses.replace(record, details=RunDetails({**details.runners, name: runner}))
    save_results(results.with_stage(run), run_dir)


def test_ensure_run_reuses_a_matching_run_and_converts_otherwise(tmp_path, monkeypatch):
    converted = []
    monkeypatch.setattr(bench_convert, "run_convert", lambda settings: converted.append(settings))
    settings = BenchSettings(out_dir=tmp_path, recipe="tiny-detector", params={"image_size": 320})
    _saved_run(settings.run_dir, {"image_size": 320, "batch": 1})
    assert ensure_run(settings) == settings.run_dir
    assert converted == []
    other_size = dataclasses.replace(settings, params={"image_size": 640})
    ensure_run(other_size)
    other_recipe = dataclasses.replace(settings, recipe="yolov5")
    ensure_run(other_recipe)
    assert converted == [other_size, other_recipe]


def test_ensure_run_converts_when_fewer_than_two_backends_ran_or_there_is_no_readable_run(
    tmp_path, monkeypatch
):
    converted = []
    monkeypatch.setattr(bench_convert, "run_convert", lambda settings: converted.append(settings))
    settings = BenchSettings(out_dir=tmp_path, recipe="tiny-detector", params={})
    _saved_run(settings.run_dir, {})
    _with_runner(settings.run_dir, "onnxrt", state="not executed", outputs=None)
    ensure_run(settings)
    assert converted == [settings]
    (settings.run_dir / "results.json").write_text(
        json.dumps({"schema": "trt-harness/results", "schema_version": 1})
    )
    ensure_run(settings)
    assert converted == [settings, settings]


def test_saved_outputs_are_the_executed_runners_sample_files_and_load_one_sample_each(tmp_path):
    _saved_run(tmp_path, {}, samples=3)
    folders = saved_outputs_pair(tmp_path)
    assert list(folders) == ["torch", "onnxrt"] and [len(f) for f in folders.values()] == [3, 3]
    samples = load_samples(folders, 5)
    assert len(samples) == 5 and samples[3] is samples[0], "saved samples repeat, shared"
    written = runs.outputs_per_sample(samples=3, batch=1)
    for i, sample in enumerate(samples[:3]):
        assert set(sample) == {"torch", "onnxrt"}
        np.testing.assert_array_equal(sample["onnxrt"][runs.OUTPUT], written[i])
    _with_runner(tmp_path, "onnxrt", state="not executed", outputs=None)
    assert list(saved_outputs(tmp_path)) == ["torch"]
    with pytest.raises(HarnessError, match="fewer than two runners"):
        saved_outputs_pair(tmp_path)


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


def test_peak_rss_is_the_commands_own_and_does_not_inherit_this_process_peak():
    ballast = np.ones(64 * 2**20 // 8)  # raise this process's peak RSS well above a small child's
    touch = "b = bytearray(96 * 2**20); b[::4096] = b'x' * len(b[::4096])"
    big = measure_peak_rss([sys.executable, "-c", touch])
    small = measure_peak_rss([sys.executable, "-c", "pass"])
    assert big["exit_code"] == small["exit_code"] == 0
    assert big["peak_rss_bytes"] >= 96 * 2**20 > small["peak_rss_bytes"]
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert small["peak_rss_bytes"] < own_peak - ballast.nbytes // 2
    assert small["launcher_peak_rss_bytes"] < 64 * 2**20, "the launcher imports the standard library only"
    failing = measure_peak_rss([sys.executable, "-c", "import sys; print('bad'); sys.exit(3)"])
    assert failing["exit_code"] == 3 and failing["output_tail"] == ["bad"]


def test_outputs_on_disk_count_each_runners_sample_files(tmp_path):
    results = _saved_run(tmp_path, {}, samples=3)
    disk = outputs_on_disk(results)
    files = sorted((tmp_path / "outputs" / "onnxrt" / "samples").iterdir())
    assert len(files) == 3
    onnxrt = disk["runners"]["onnxrt"]
    assert onnxrt["sample_files"] == 3 and onnxrt["total_bytes"] == sum(f.stat().st_size for f in files)
    assert onnxrt["bytes_per_sample"] == pytest.approx(onnxrt["total_bytes"] / 3)
    assert disk["total_bytes"] == onnxrt["total_bytes"] + disk["runners"]["torch"]["total_bytes"]


def test_run_stage_overhead_is_measured_only_when_the_stage_ran(tmp_path):
    results = _saved_run(tmp_path, {})
    record, details = results.stage("run"), results.details(RunDetails)
    timed = {n: dataclasses.replace(r, inference_s=0.4, setup_s=0.1) for n, r in details.runners.items()}
    ran = results.with_stage(dataclasses.replace(record, duration_s=1.0, details=RunDetails(timed)))
    overhead = run_stage_overhead(ran)
    assert overhead["wall_over_inference"] == pytest.approx(1.0 / 0.8)
    assert overhead["wall_less_setup_over_inference"] == pytest.approx(0.8 / 0.8)
    cached = results.with_stage(dataclasses.replace(record, status="cached", details=RunDetails(timed)))
    assert run_stage_overhead(cached)["wall_over_inference"] is None


def test_a_memory_run_is_reused_only_when_its_run_stage_ran(tmp_path, monkeypatch):
    commands = []

    def convert(command, results_path, cache_dir):
        commands.append(command)
        return 1.0, 0, load_results(results_path.parent)

    monkeypatch.setattr(bench_memory, "run_harness", convert)
    settings = BenchSettings(out_dir=tmp_path, recipe="tiny-detector", memory_params={"image_size": 96})
    run_dir = memory_run_dir(settings, 2)
    _saved_run(run_dir, memory_params(settings, 2))
    bench_memory.ensure_memory_run(settings, 2)
    assert commands == []
    results = load_results(run_dir)
    save_results(results.with_stage(dataclasses.replace(results.stage("run"), status="cached")), run_dir)
    bench_memory.ensure_memory_run(settings, 2)
    (command,) = commands
    assert command[1:4] == ["-m", "trt_harness.harness.cli", "convert"] and command[-1] == "--no-cache"
    assert "samples=2" in command and "image_size=96" in command and str(run_dir.resolve()) in command


def test_memory_benchmark_measures_the_real_compare_command_on_saved_runs(tmp_path, monkeypatch):
    """Quick mode of the whole benchmark on tiny real run folders: real `harness compare` and
    `harness golden` processes; only `harness convert` of the recipe is replaced."""
    settings = BenchSettings(
        out_dir=tmp_path, recipe="tiny-detector", memory_samples=(2, 6), memory_params={"image_size": 96}
    )
    for count in settings.memory_samples:
        run_dir = memory_run_dir(settings, count)
        _saved_run(run_dir, memory_params(settings, count), samples=count)
        _with_runner(run_dir, "torch", inference_s=0.5)
        _with_runner(run_dir, "onnxrt", inference_s=0.5)
    monkeypatch.setattr(bench_memory, "run_harness", lambda *args: pytest.fail("the runs are reused"))
    result = bench_memory.memory_benchmark(settings)

    few, many = result.data["runs"]["2"], result.data["runs"]["6"]
    for run in (few, many):
        assert run["compare"]["exit_code"] == 0, run["compare"]["output_tail"]
        assert run["compare"]["command"][1:4] == ["-m", "trt_harness.harness.cli", "compare"]
        assert run["compare"]["peak_rss_bytes"] > run["compare"]["launcher_peak_rss_bytes"]
    assert many["outputs_on_disk"]["runners"]["torch"]["sample_files"] == 6
    assert result.data["peak_rss_ratio"] == pytest.approx(
        many["compare"]["peak_rss_bytes"] / few["compare"]["peak_rss_bytes"]
    )
    json_bytes = few["polygraphy_json_bytes"]
    assert set(json_bytes) == {"torch", "onnxrt"}
    assert json_bytes["torch"] > few["outputs_on_disk"]["runners"]["torch"]["total_bytes"]
    assert not (tmp_path / "memory-golden").exists()
    rss, overhead = result.targets
    assert rss.value == result.data["peak_rss_ratio"] and rss.limit == 1.3
    assert overhead.value == pytest.approx(1.0 / 1.0)  # write_run records the run stage at 1 s
    disk = result.tables[1]
    assert [row[0] for row in disk.rows] == ["torch", "onnxrt"] and disk.rows[0][1] == "2"


def test_memory_targets_miss_when_memory_grows_or_the_run_stage_was_cached():
    def run(peak: int, status: str = "ok") -> dict:
        return {
            "compare": {"peak_rss_bytes": peak, "wall_s": 1.0, "exit_code": 0},
            "outputs_on_disk": {"total_bytes": 10, "runners": {}},
            "run_stage": {
                "status": status,
                "wall_s": 2.0,
                "inference_s": 1.0,
                "setup_s": 0.5,
                "wall_over_inference": 2.0 if status == "ok" else None,
                "wall_less_setup_over_inference": 1.5 if status == "ok" else None,
            },
        }

    settings = BenchSettings(memory_samples=(10, 200))
    data = {"recipe": "yolov5", "runs": {"10": run(100), "200": run(200, "cached")}, "peak_rss_ratio": 2.0}
    rss, overhead = memory_result(settings, data).targets
    assert not rss.passed and not overhead.passed and overhead.value is None
    assert "cached" in overhead.detail


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
    assert quick.memory_params["image_size"] < full.memory_params["image_size"] == 320
    assert full.memory_samples == (10, 200)
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
def test_suite_runs_the_benchmarks_end_to_end_on_mnist(tmp_path):
    """Memory needs a recipe with a `samples` parameter (yolov5); its quick test is above."""
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
    )
    names = ["pipeline", "latency", "comparison"]
    report = bench_suite.run_suite(settings, names=names, log=lambda _: None)
    assert report.errors == {}
    results = {r.name: r for r in report.results}
    assert list(results) == names

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

    assert len(report.targets) == 5  # 3 pipeline, 1 each for the others
    json_path, md_path = write_report(report, tmp_path)
    assert json.loads(json_path.read_text())["benchmarks"].keys() == results.keys()
    assert md_path.read_text().count("\n## ") == 4  # the targets, then one section per benchmark
