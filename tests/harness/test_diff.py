"""`harness diff A B` and `harness convert --baseline DIR` on real tiny runs of a recipe with a planted
error (tests/harness/diff_recipe.py): no change against itself, the perturbed output named as a
regression (exit 1), environment changes shown, the baseline gate and its re-judging, bad input exit 2.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from trt_harness.harness.cli import main
from trt_harness.harness.diff import (
    Baseline,
    baseline_of_recipe,
    diff_runs,
    gated_verdict,
    judge_against,
)
from trt_harness.harness.pipeline import RunConfig, run_pipeline
from trt_harness.models.core.errors import ExitCode, UsageError
from trt_harness.models.recipes import RECIPES
from trt_harness.models.results.diff import RunDiff, diff_from_json
from trt_harness.models.results.document import UNFINISHED, Gpu, Results, Verdict, load_results, save_results
from trt_harness.models.results.stages import CompareDetails, RunDetails
from trt_harness.reports.diff import render_diff_html

from tests.harness.diff_recipe import CLEAN, NAME, PLANTED, diff_noise
from tests.reports.page import parse

BACKENDS = ("torch", "onnxrt")


@dataclass(frozen=True)
class Runs:
    base: Path  # noise 0
    drift: Path  # noise 0.5 x atol on `planted`: within tolerance, a drift only a baseline sees
    broken: Path  # noise 2 x atol: `planted` fails its tolerance


@pytest.fixture(scope="module")
def registered() -> Iterator[None]:
    RECIPES.register(NAME, diff_noise)
    yield
    RECIPES.unregister(NAME)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("diff-runs")
    found = {}
    for name, noise in (("base", 0.0), ("drift", 0.5), ("broken", 2.0)):
        results = run_pipeline(RunConfig(diff_noise(noise), root / name, backends=BACKENDS))
        assert results.verdict.passed == (noise < 1), results.verdict
        found[name] = root / name
    return Runs(**found)


def convert(out: Path, *args: str, noise: float = 0.5) -> int:
    argv = ["convert", NAME, "-p", f"noise={noise}", "--out", str(out), "--no-cache", "--backends", *BACKENDS]
    return main([*argv, *args])


def with_comparison(results: Results, output: str, **changes: object) -> Results:
    """`results` with the statistics of `output`'s comparisons replaced (the compare stage's record)."""
    record = results.stage("compare")
    details = record.details
    assert isinstance(details, CompareDetails)
    comparisons = tuple(
        dataclasses.replace(c, **changes) if c.output == output else c for c in details.comparisons
    )
    details = dataclasses.replace(details, comparisons=comparisons)
    return results.with_stage(dataclasses.replace(record, details=details))


def statuses(diff: RunDiff) -> dict[str, str]:
    return {c.output: c.status for c in diff.comparisons}


# --- harness diff ------------------------------------------------------------------------------------


def test_a_run_diffed_with_itself_reports_no_change(runs, capsys, tmp_path):
    out_json = tmp_path / "self.json"
    assert main(["diff", str(runs.base), str(runs.base / "results.json"), "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "UNCHANGED: 2 comparison(s): 2 unchanged" in text
    assert "REGRESSED" not in text and "environment changes (A -> B)\n  none" in text

    diff = diff_from_json(json.loads(out_json.read_text()), str(out_json))
    assert diff.unchanged and diff.passed and not diff.regressions
    assert statuses(diff) == {PLANTED: "unchanged", CLEAN: "unchanged"}
    assert all(not s.changed for c in diff.comparisons for s in c.stats)
    assert not diff.environment and not diff.settings
    assert diff == diff_runs(
        load_results(runs.base),
        load_results(runs.base),
        sources=(str(runs.base), str(runs.base / "results.json")),
    )


def test_the_perturbed_output_is_a_regression_named_with_exit_1(runs, capsys, tmp_path):
    html, out_json = tmp_path / "diff.html", tmp_path / "diff.json"
    argv = ["diff", str(runs.base), str(runs.drift), "--html", str(html), "--json", str(out_json)]
    assert main(argv) == ExitCode.ACCURACY_FAILED
    text = capsys.readouterr().out
    assert "REGRESSED: 2 comparison(s): 1 regressed, 1 unchanged" in text
    regressions = [line for line in text.splitlines() if line.startswith("  - ")]
    assert len(regressions) == 1 and regressions[0].startswith(f"  - {PLANTED} (Torch vs ORT): p99 abs error")
    rows = {
        line.split()[0]: line for line in text.splitlines() if line.startswith(("  planted ", "  clean "))
    }
    assert rows[PLANTED].endswith("REGRESSED") and rows[CLEAN].endswith("unchanged")
    assert "recipe parameters  noise=0.0  noise=0.5" in text  # the setting that explains it

    diff = diff_from_json(json.loads(out_json.read_text()), str(out_json))
    assert [c.output for c in diff.regressed] == [PLANTED]
    planted = next(c for c in diff.comparisons if c.output == PLANTED)
    p99, worst = planted.stat("quantile_abs_err"), planted.stat("max_abs_err")
    assert p99.regressed and worst.regressed and p99.ratio > 100
    assert planted.passed_before and planted.passed_after  # within tolerance: only the baseline sees it
    assert 0.4e-4 < p99.after < 0.6e-4  # 0.5 x atol, as planted
    page = html.read_text()
    assert PLANTED in page and "REGRESSED" in page

    # the other way round it got better: no regression
    assert main(["diff", str(runs.drift), str(runs.base)]) == ExitCode.PASSED
    assert f"{PLANTED}  Torch vs ORT  pass -> pass" in capsys.readouterr().out
    assert statuses(diff_runs(load_results(runs.drift), load_results(runs.base)))[PLANTED] == "improved"


def test_the_factor_and_the_floor_are_options(runs, capsys):
    base, drift = str(runs.base), str(runs.drift)
    assert main(["diff", base, drift, "--factor", "1e6"]) == ExitCode.PASSED
    assert main(["diff", base, drift, "--floor", "1e-3"]) == ExitCode.PASSED  # 5e-5 is under the floor
    assert main(["diff", base, drift, "--factor", "1.5", "--floor", "0"]) == ExitCode.ACCURACY_FAILED
    capsys.readouterr()


def test_growth_of_noise_below_the_floor_is_not_a_regression(runs):
    base = load_results(runs.base)
    a = with_comparison(base, CLEAN, quantile_abs_err=1e-9, max_abs_err=1e-9)
    b = with_comparison(base, CLEAN, quantile_abs_err=3e-9, max_abs_err=3e-9)
    assert diff_runs(a, b).passed
    assert statuses(diff_runs(a, b))[CLEAN] == "within factor"
    noisy = diff_runs(a, b, floor=0.0)
    assert [c.output for c in noisy.regressed] == [CLEAN]
    assert "x3" in noisy.regressions[0] and "floor 0" in noisy.regressions[0]
    # growth from an exact 0 counts once it passes the floor
    zero = with_comparison(base, CLEAN, quantile_abs_err=0.0, max_abs_err=0.0)
    grown = with_comparison(base, CLEAN, quantile_abs_err=2e-6, max_abs_err=2e-6)
    assert "(from 0)" in diff_runs(zero, grown).regressions[0]


def test_new_and_fixed_failures(runs, capsys):
    assert main(["diff", str(runs.base), str(runs.broken)]) == ExitCode.ACCURACY_FAILED
    text = capsys.readouterr().out
    assert f"  - {PLANTED} (Torch vs ORT): passed in A, fails in B:" in text
    assert "pass -> FAIL" in text and "NEW FAILURE" in text
    diff = diff_runs(load_results(runs.base), load_results(runs.broken))
    assert statuses(diff) == {PLANTED: "new failure", CLEAN: "unchanged"}
    assert [c.output for c in diff.new_failures] == [PLANTED] and not diff.run_regressions

    assert main(["diff", str(runs.broken), str(runs.base)]) == ExitCode.PASSED
    assert "FAIL -> pass" in capsys.readouterr().out
    fixed = diff_runs(load_results(runs.broken), load_results(runs.base))
    assert statuses(fixed)[PLANTED] == "fixed" and [c.output for c in fixed.fixed] == [PLANTED]


def test_an_environment_change_is_shown(runs, capsys, tmp_path):
    base = load_results(runs.base)
    env = base.environment
    packages = {**env.packages, "onnxruntime": "1.99.0", "tensorrt": "10.13.0.35"}
    packages.pop("onnxscript", None)
    edited_env = dataclasses.replace(
        env, python="3.12.9", gpus=(Gpu("NVIDIA H200", "9.0"),), packages=packages
    )
    run = base.stage("run")
    runners = dict(run.details.runners)
    runners["onnxrt"] = dataclasses.replace(
        runners["onnxrt"], device={**runners["onnxrt"].device, "onnxruntime": "1.99.0"}
    )
    run = dataclasses.replace(run, details=RunDetails(runners))
    edited = dataclasses.replace(base.with_stage(run), environment=edited_env)
    (tmp_path / "edited").mkdir()
    save_results(edited, tmp_path / "edited")

    assert main(["diff", str(runs.base), str(tmp_path / "edited")]) == ExitCode.PASSED  # same numbers
    text = capsys.readouterr().out
    section = text.split("environment changes (A -> B)\n")[1].split("\n\n")[0]
    lines = [" ".join(line.split()) for line in section.splitlines()]
    assert f"python {env.python} 3.12.9" in lines
    assert "GPUs none NVIDIA H200 (sm 9.0)" in lines
    assert f"package onnxruntime {env.packages['onnxruntime']} 1.99.0" in lines
    assert "package tensorrt absent 10.13.0.35" in lines
    if "onnxscript" in env.packages:
        assert f"package onnxscript {env.packages['onnxscript']} absent" in lines
    assert f"ORT onnxruntime {env.packages['onnxruntime']} 1.99.0" in lines  # the runner's own record
    diff = diff_runs(base, edited)
    changed = {c.what for c in diff.environment}
    assert {"python", "GPUs", "package onnxruntime", "package tensorrt", "ORT onnxruntime"} <= changed
    assert diff.passed and not diff.unchanged
    environment = parse(render_diff_html(diff)).by_id("environment")
    assert "package onnxruntime" in environment.text and "1.99.0" in environment.text


def test_a_verdict_gone_from_pass_to_fail_is_a_regression_even_with_nothing_compared(runs):
    base = load_results(runs.base)
    failed = Verdict(int(ExitCode.STAGE_FAILED), "STAGE_FAILED", "stage 'export' failed: boom")
    stages = tuple(s for s in base.stages if s.name not in ("run", "compare"))
    broken = dataclasses.replace(base, stages=stages, verdict=failed)
    diff = diff_runs(base, broken)
    assert statuses(diff) == {PLANTED: "removed", CLEAN: "removed"}
    assert diff.regressions == (
        "the run's verdict went from PASS to STAGE_FAILED (exit 4): stage 'export' failed: boom",
    )
    assert diff_runs(broken, base).passed  # the other way round nothing was compared before


def test_stage_and_runner_times_are_listed(runs, capsys):
    base, drift = load_results(runs.base), load_results(runs.drift)
    diff = diff_runs(base, drift)
    assert [t.name for t in diff.stages] == [s.name for s in drift.stages]
    scan = next(t for t in diff.stages if t.name == "scan")
    assert (scan.before_s, scan.after_s) == (base.stage("scan").duration_s, drift.stage("scan").duration_s)
    assert {t.name for t in diff.runners} == set(BACKENDS) and all(t.after_s for t in diff.runners)
    main(["diff", str(runs.base), str(runs.drift)])
    text = capsys.readouterr().out
    assert "stage times" in text and "median latency" in text and "\n  scan " in text


@pytest.mark.parametrize("case", ["missing", "no results", "not json", "not results", "unfinished"])
def test_bad_input_is_exit_2_with_one_line_naming_the_file(runs, tmp_path, capsys, case):
    bad = tmp_path / "bad"
    if case == "no results":
        bad.mkdir()
    elif case == "not json":
        bad = tmp_path / "results.json"
        bad.write_text("{ not json")
    elif case == "not results":
        bad = tmp_path / "other.json"
        bad.write_text(json.dumps({"schema": "something/else"}))
    elif case == "unfinished":
        bad.mkdir()
        results = load_results(runs.base)
        save_results(dataclasses.replace(results, stages=(), verdict=UNFINISHED), bad)
    assert main(["diff", str(runs.base), str(bad)]) == ExitCode.USAGE_ERROR
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0], captured.err
    assert not captured.out


def test_bad_options_are_exit_2(runs, tmp_path, capsys):
    base = str(runs.base)
    assert main(["diff", base, base, "--factor", "0.5"]) == ExitCode.USAGE_ERROR
    assert "--factor 0.5" in capsys.readouterr().err
    assert main(["diff", base, base, "--floor", "-1"]) == ExitCode.USAGE_ERROR
    assert "--floor -1" in capsys.readouterr().err
    (tmp_path / "a file").write_text("")
    unwritable = tmp_path / "a file" / "diff.html"
    assert main(["diff", base, base, "--html", str(unwritable)]) == ExitCode.USAGE_ERROR
    assert str(unwritable) in capsys.readouterr().err


# --- the baseline gate ---------------------------------------------------------------------------------


def test_convert_with_a_baseline_fails_on_the_regressed_output(runs, registered, tmp_path, capsys):
    out = tmp_path / "gated"
    assert convert(out, "--baseline", str(runs.base)) == ExitCode.ACCURACY_FAILED
    printed = capsys.readouterr().out
    assert f"FAIL: 1 regression(s) vs baseline {runs.base} beyond x2: {PLANTED} (Torch vs ORT)" in printed

    results = load_results(out)
    assert results.verdict.exit_code == ExitCode.ACCURACY_FAILED
    assert all(results.details(CompareDetails).comparisons)  # within tolerance: only the gate fails
    diff = results.baseline
    assert isinstance(diff, RunDiff) and diff.a.source == str(runs.base) and diff.b.source == "this run"
    assert [c.output for c in diff.regressed] == [PLANTED] and diff.factor == 2.0
    assert diff.a.run_id == load_results(runs.base).run_id
    report = (out / "report.html").read_text()
    assert 'id="baseline"' in report and 'href="#baseline"' in report

    # `harness compare` re-judges against the recorded baseline, with the recorded factor
    assert main(["compare", str(out)]) == ExitCode.ACCURACY_FAILED
    assert load_results(out).baseline.regressed[0].output == PLANTED
    assert main(["compare", str(out), "--baseline-factor", "1e6"]) == ExitCode.PASSED
    rejudged = load_results(out)
    assert rejudged.baseline.factor == 1e6 and "no regression vs baseline" in rejudged.verdict.summary
    capsys.readouterr()


def test_convert_with_the_factor_overridden_or_a_clean_baseline_passes(runs, registered, tmp_path, capsys):
    assert convert(tmp_path / "loose", "--baseline", str(runs.base), "--baseline-factor", "1e6") == 0
    assert convert(tmp_path / "same", "--baseline", str(runs.base), noise=0.0) == 0
    printed = capsys.readouterr().out
    assert f"no regression vs baseline {runs.base} (factor 2)" in printed
    same = load_results(tmp_path / "same").baseline
    assert same is not None and same.passed
    assert {c.status for c in same.comparisons} == {"unchanged"}


def test_re_judging_needs_the_recorded_baseline_or_a_new_one(runs, registered, tmp_path, capsys):
    moved = tmp_path / "base"
    shutil.copytree(runs.base, moved)
    out = tmp_path / "gated"
    assert convert(out, "--baseline", str(moved)) == ExitCode.ACCURACY_FAILED
    shutil.rmtree(moved)
    assert main(["compare", str(out)]) == ExitCode.USAGE_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(moved) in err[0] and "--baseline DIR" in err[0]
    shutil.copytree(runs.drift, moved)  # another run where the baseline was
    assert main(["compare", str(out)]) == ExitCode.USAGE_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--baseline {moved} now holds another run" in err[0]
    assert main(["compare", str(out), "--baseline", str(runs.drift)]) == ExitCode.PASSED  # vs itself
    assert load_results(out).baseline.a.source == str(runs.drift)
    capsys.readouterr()


def test_a_bad_baseline_is_exit_2_before_any_stage_runs(runs, registered, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    base = load_results(runs.base)
    save_results(dataclasses.replace(base, recipe=dataclasses.replace(base.recipe, name="mnist")), other)
    cases = [
        (["--baseline", str(tmp_path / "nope")], str(tmp_path / "nope")),
        (["--baseline", str(other)], "is a run of recipe 'mnist', not 'diff_noise'"),
        (["--baseline", str(runs.base), "--baseline-factor", "0.5"], "--baseline-factor 0.5"),
        (["--baseline", str(runs.base), "--baseline-floor", "nan"], "--baseline-floor nan"),
    ]
    for args, named in cases:
        out = tmp_path / "never"
        assert convert(out, *args) == ExitCode.USAGE_ERROR, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and named in err[0], err
        assert not out.exists(), "no stage runs on a bad baseline"


def test_the_recipe_sets_the_default_factor_and_floor(runs):
    loose = dataclasses.replace(diff_noise(0.5), baseline_factor=1e6, baseline_floor=1e-3)
    gate = baseline_of_recipe(loose, runs.base, None, None)
    assert (gate.factor, gate.floor) == (1e6, 1e-3)
    gate = baseline_of_recipe(loose, runs.base, 3.0, 0.0)
    assert (gate.factor, gate.floor) == (3.0, 0.0)
    assert baseline_of_recipe(loose, None, 3.0, 0.0) is None
    drift = load_results(runs.drift)
    assert judge_against(drift, baseline_of_recipe(loose, runs.base, None, None)).verdict.passed
    with pytest.raises(UsageError, match="--baseline-factor"):
        baseline_of_recipe(loose, runs.base, 0.9, None)


def test_the_gate_keeps_a_worse_verdict_and_adds_the_regressions(runs):
    base, drift = load_results(runs.base), load_results(runs.drift)
    diff = diff_runs(base, drift, sources=("base", "this run"))
    failed = Verdict(int(ExitCode.STAGE_FAILED), "STAGE_FAILED", "stage 'build' failed: no")
    gated = gated_verdict(failed, diff)
    assert (
        gated.exit_code == ExitCode.STAGE_FAILED and "also 1 regression(s) vs baseline base" in gated.summary
    )
    passed = gated_verdict(drift.verdict, diff)
    assert passed.exit_code == ExitCode.ACCURACY_FAILED and passed.status == "ACCURACY_FAILED"


def test_a_gated_run_reads_back_as_the_same_values(runs, tmp_path):
    drift = load_results(runs.drift)
    gated = judge_against(drift, Baseline(load_results(runs.base), str(runs.base)))
    (tmp_path / "run").mkdir()
    save_results(gated, tmp_path / "run")
    assert load_results(tmp_path / "run") == gated
    assert load_results(runs.drift).baseline is None  # runs without a baseline record none
