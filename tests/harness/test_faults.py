"""Faults and hostile input: no bad cache, environment or model may delete data, pass a broken model or crash.

Each test asserts the exit code or outcome, the one-line message, and that nothing earlier was lost.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from trt_harness.harness.cache import TAG_FILE, StageCache
from trt_harness.harness.cli import main
from trt_harness.harness.pipeline import RunConfig, run_pipeline
from trt_harness.models.core.errors import ExitCode

from tests.harness.test_pipeline import recipe as depth_recipe

RECIPE = depth_recipe(("depth", "depth_min"))


def _run(tmp_path: Path, out: str = "run", **changes):
    config = RunConfig(RECIPE, tmp_path / out, backends=("torch", "onnxrt"), cache_dir=tmp_path / "cache")
    return run_pipeline(dataclasses.replace(config, **changes))


def _statuses(results) -> dict[str, str]:
    return {s.name: s.status for s in results.stages}


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


# -- HARNESS_CACHE_DIR and `harness cache clean` ----------------------------------------------------


def test_an_empty_cache_dir_variable_is_a_usage_error_and_deletes_nothing(tmp_path, monkeypatch, capsys):
    checkout = tmp_path / "checkout"
    (checkout / ".git").mkdir(parents=True)
    (checkout / "harness").mkdir()
    (checkout / "harness" / "cli.py").write_text("code")
    before = _tree(checkout)
    monkeypatch.chdir(checkout)
    monkeypatch.setenv("HARNESS_CACHE_DIR", "")
    assert main(["cache", "clean"]) == ExitCode.USAGE_ERROR
    assert main(["convert", "mnist", "--out", str(tmp_path / "out")]) == ExitCode.USAGE_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("HARNESS_CACHE_DIR is set but empty" in line for line in err)
    assert _tree(checkout) == before and not (tmp_path / "out").exists()


def test_clean_refuses_a_folder_that_is_not_a_cache(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "important"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "notes.txt").write_text("keep me")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(folder))
    assert main(["cache", "clean"]) == ExitCode.USAGE_ERROR
    assert main(["cache", "clean", "--stage", "a"]) == ExitCode.USAGE_ERROR
    err = capsys.readouterr().err
    assert f"{folder} is not a trt-harness cache" in err and "--stage a: no such stage" in err
    assert (folder / "a" / "notes.txt").read_text() == "keep me"


def test_clean_removes_the_entries_and_nothing_else(tmp_path, monkeypatch, capsys):
    _run(tmp_path)
    cache = tmp_path / "cache"
    assert (cache / TAG_FILE).is_file()
    foreign = cache / "export" / "my-notes"
    foreign.mkdir()
    (foreign / "x.txt").write_text("not ours")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(cache))
    entries = len(StageCache(cache).entries())
    assert entries >= 5
    assert main(["cache", "clean", "--stage", "compare"]) == ExitCode.PASSED
    assert len(StageCache(cache).entries()) == entries - 1
    assert main(["cache", "clean"]) == ExitCode.PASSED
    assert f"removed {entries - 1} cache entries" in capsys.readouterr().out
    assert StageCache(cache).entries() == [] and (foreign / "x.txt").is_file()


# -- damaged and edited cache entries ---------------------------------------------------------------


def _entry_file(tmp_path: Path, stage: str) -> Path:
    (entry,) = (tmp_path / "cache" / stage).glob(f"*/{'entry.json'}")
    return entry


@pytest.mark.parametrize(
    "damage",
    ["flip-verdict", "flip-exponent", "rename-key", "truncate", "escape-path", "not-json"],
)
def test_a_damaged_or_edited_entry_is_dropped_and_its_stage_runs_again(tmp_path, damage, capsys):
    first = _run(tmp_path)
    assert first.verdict.passed
    stage = "run" if damage == "escape-path" else "compare"
    path = _entry_file(tmp_path, stage)
    text = path.read_text()
    if damage == "flip-verdict":
        changed = text.replace('"passed": true', '"passed": false', 1)
    elif damage == "flip-exponent":
        changed = text.replace("e-0", "e+0", 1)
    elif damage == "rename-key":
        changed = text.replace('"groups"', '"groupz"', 1)
    elif damage == "truncate":
        changed = text[: len(text) // 2]
    elif damage == "not-json":
        changed = "\x00\x01"
    else:
        sealed = json.loads(text)
        for artifact in sealed["entry"]["artifacts"].values():
            artifact["path"] = "../../outside"
        changed = json.dumps(sealed)
    assert changed != text
    path.write_text(changed)
    capsys.readouterr()

    again = _run(tmp_path, "again")
    assert _statuses(again)[stage] == "ok", "not taken from the damaged entry"
    assert again.verdict == first.verdict or again.verdict.exit_code == first.verdict.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dropped, the stage runs again" in err[0]
    assert not (tmp_path / "outside").exists()
    # the entry is stored anew and trusted on the next run
    assert _statuses(_run(tmp_path, "third"))[stage] == "cached"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_cache_is_a_warning_not_a_failure(tmp_path, capsys):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache").chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        results = _run(tmp_path)
    finally:
        (tmp_path / "cache").chmod(stat.S_IRWXU)
    assert results.verdict.passed
    assert "this run goes on without it" in capsys.readouterr().err


def test_a_full_cache_is_a_warning_not_a_failure(tmp_path, monkeypatch, capsys):
    import trt_harness.harness.cache as cache_module

    def no_space(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_module, "_copy", no_space)
    results = _run(tmp_path)
    assert results.verdict.passed and all(s.status != "failed" for s in results.stages)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and "No space left on device" in err[0] and "goes on without it" in err[0]
    assert not [p for p in (tmp_path / "cache").rglob("*.partial")]


# -- the gate ---------------------------------------------------------------------------------------


def nan_model():
    import torch

    class Nan(torch.nn.Module):
        def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
            depth = image.mean(dim=1, keepdim=True) * float("nan")
            return {"depth": depth, "depth_min": depth + 1.0}

    return Nan().eval()


def test_a_model_whose_outputs_are_all_nan_fails_the_gate(tmp_path):
    broken = dataclasses.replace(RECIPE, name="nan", build_model=lambda weights: nan_model())
    results = run_pipeline(RunConfig(broken, tmp_path, backends=("torch", "onnxrt")))
    assert results.verdict.exit_code == ExitCode.ACCURACY_FAILED, results.verdict
    assert "nothing was compared" in (tmp_path / "report.html").read_text()
    compared = results.stage("compare").details.comparisons
    assert compared and not any(c.passed for c in compared) and all(c.finite_elements == 0 for c in compared)


# -- input problems are exit 2 with one line naming the culprit, before any stage runs -----------


@pytest.mark.parametrize(
    ("param", "named"),
    [
        ("digits=abc", "parameter 'digits' must be int"),
        ("batch=2.5", "parameter 'batch' must be int"),
        ("batch=0", "every dimension must be an integer >= 1"),
        ("nosuch=1", "has no parameter 'nosuch'"),
        ("novalue", "must look like key=value"),
    ],
)
def test_a_bad_recipe_parameter_is_a_usage_error_naming_it(tmp_path, capsys, param, named):
    out = tmp_path / "out"
    assert main(["convert", "mnist", "-p", param, "--out", str(out), "--no-cache"]) == ExitCode.USAGE_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0]
    assert not out.exists(), "rejected before any stage ran"


def test_out_naming_a_file_is_a_usage_error_and_the_file_is_kept(tmp_path, capsys):
    target = tmp_path / "report.txt"
    target.write_text("mine")
    assert main(["convert", "mnist", "--out", str(target), "--no-cache"]) == ExitCode.USAGE_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--out {target}" in err[0]
    assert target.read_text() == "mine"


def test_an_unknown_backend_is_rejected_before_any_stage_runs(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", "mnist", "--backends", "nosuch", "--out", str(out)]) == ExitCode.USAGE_ERROR
    assert "unknown backend(s) ['nosuch']" in capsys.readouterr().err and not out.exists()


def test_a_module_with_a_syntax_error_is_named_with_its_line(tmp_path, monkeypatch):
    from trt_harness.models.core.errors import UsageError
    from trt_harness.models.core.registry import Registry

    package = tmp_path / "user_recipes"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "good.py").write_text("X = 1\n")
    (package / "bad.py").write_text("X = 1\ndef broken(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UsageError, match=r"bad\.py:2: invalid syntax; fix the module user_recipes\.bad"):
        Registry("recipe", package="user_recipes").names()


# -- structured input, generated: only the documented outcome, never another exception ----------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from trt_harness.models.core.errors import UsageError  # noqa: E402
from trt_harness.models.results.document import load_results, results_to_text, save_results  # noqa: E402
from trt_harness.models.results.recipe import ToleranceOverrides  # noqa: E402

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=20), max_size=3), st.lists(st.text(max_size=20), max_size=3))
def test_any_tolerance_text_parses_or_is_a_usage_error(atol, rtol):
    try:
        overrides = ToleranceOverrides.parse(atol, rtol)
    except UsageError as e:
        assert "\n" not in str(e)
        return
    values = [
        overrides.atol,
        overrides.rtol,
        *overrides.per_output_atol.values(),
        *overrides.per_output_rtol.values(),
    ]
    assert all(v is None or (v >= 0 and v == v) for v in values)


def _paths(value, prefix=()):
    """Every (path, value) in a JSON value, for mutating one place of it."""
    yield prefix, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _replace(document, path, new):
    if not path:
        return new
    head, *rest = path
    copy = dict(document) if isinstance(document, dict) else list(document)
    copy[head] = _replace(document[head], rest, new)
    return copy


@pytest.fixture(scope="module")
def saved_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("saved")
    results = run_pipeline(RunConfig(RECIPE, out, backends=("torch", "onnxrt")))
    return json.loads(results_to_text(results))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), replacement=JSON)
def test_results_json_with_any_one_value_replaced_loads_or_is_a_usage_error(
    tmp_path, saved_results, data, replacement
):
    places = list(_paths(saved_results))
    path, _ = places[data.draw(st.integers(0, len(places) - 1))]
    (tmp_path / "results.json").write_text(json.dumps(_replace(saved_results, path, replacement)))
    try:
        results = load_results(tmp_path)
    except UsageError as e:
        assert str(tmp_path / "results.json") in str(e) and "\n" not in str(e)
        return
    save_results(results, tmp_path / "again")  # what loads is a well-typed document that writes again


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cached")
    run_pipeline(RunConfig(RECIPE, root / "run", backends=("torch", "onnxrt"), cache_dir=root / "cache"))
    (entry,) = (root / "cache" / "compare").glob("*/entry.json")
    shutil.copytree(entry.parent, root / "pristine")
    return root, entry, entry.read_text()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), replacement=JSON)
def test_a_cache_entry_with_any_one_value_replaced_is_trusted_only_if_unchanged(
    cached_run, data, replacement
):
    root, entry, original = cached_run
    sealed = json.loads(original)
    places = list(_paths(sealed))
    path, _ = places[data.draw(st.integers(0, len(places) - 1))]
    changed = _replace(sealed, path, replacement)
    entry.write_text(json.dumps(changed))
    warnings: list[str] = []
    cache = StageCache(root / "cache", warn=warnings.append)
    try:
        found = cache.lookup("compare", entry.parent.name)
        # the same text is the same entry; 1 for 1.0 or true for 1 is an edit (Python's == says equal)
        if json.dumps(changed) == json.dumps(sealed):
            assert found is not None and warnings == []
        else:
            assert found is None and len(warnings) == 1
    finally:  # put the whole entry back (the lookup dropped a damaged one) for the next example
        shutil.rmtree(entry.parent, ignore_errors=True)
        shutil.copytree(root / "pristine", entry.parent)


def test_a_cached_file_changed_in_place_is_caught_although_its_size_is_the_same(tmp_path, capsys):
    _run(tmp_path)
    _run(tmp_path, "warm")  # the lookup records when each file last matched its hash
    (outputs,) = (tmp_path / "cache" / "run").glob("*/outputs/torch/samples/0000000000.npz")
    data = bytearray(outputs.read_bytes())
    data[len(data) // 2] ^= 0x01
    outputs.write_bytes(bytes(data))
    capsys.readouterr()
    again = _run(tmp_path, "again")
    assert _statuses(again)["run"] == "ok"
    assert "has a missing or changed file outputs/torch/samples/0000000000.npz" in capsys.readouterr().err


def test_a_full_run_folder_fails_the_stage_with_the_file_and_the_remedy(tmp_path, monkeypatch):
    import trt_harness.harness.stages.run as run_stage

    def no_space(path, tensors):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(run_stage, "write_sample", no_space)
    results = run_pipeline(RunConfig(RECIPE, tmp_path / "run", backends=("torch", "onnxrt")))
    run = results.stage("run")
    assert run.status == "failed" and run.traceback is None
    assert run.reason.startswith("No space left on device writing ") and "choose another --out" in run.reason
    assert results.verdict.exit_code == ExitCode.STAGE_FAILED
    assert (tmp_path / "run" / "report.html").is_file()
