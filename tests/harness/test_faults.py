"""Faults and hostile input: no bad cache, environment or model may delete data, pass a broken model or crash.

Each test asserts the exit code or outcome, the one-line message, and that nothing earlier was lost.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest

from harness.cache import TAG_FILE, StageCache
from harness.cli import main
from harness.pipeline import RunConfig, run_pipeline
from models.core.errors import ExitCode
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
    import harness.cache as cache_module

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
    from models.core.errors import UsageError
    from models.core.registry import Registry

    package = tmp_path / "user_recipes"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "good.py").write_text("X = 1\n")
    (package / "bad.py").write_text("X = 1\ndef broken(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UsageError, match=r"bad\.py:2: invalid syntax; fix the module user_recipes\.bad"):
        Registry("recipe", package="user_recipes").names()
