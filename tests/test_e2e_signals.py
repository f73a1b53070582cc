"""Ctrl-C and SIGTERM at any stage: the documented exit code, one line naming the stage, nothing earlier lost.

Each case starts a real `harness convert mnist` and sends the signal when the stage's progress line
appears (cached stages included: the cache is shared, so later cases reach their stage sooner).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from trt_harness.models.core.errors import ExitCode
from trt_harness.models.results.document import load_results

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k != "CI"}  # plain progress lines, one per stage
    return {**environ, "HARNESS_CACHE_DIR": str(tmp_path_factory.mktemp("cache")), "PYTHONUNBUFFERED": "1"}


def harness(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=600, env=env
    )


def _convert_and_signal(out, env, stage: str, signum: int) -> tuple[int, str]:
    args = [sys.executable, "-m", "harness", "convert", "mnist", "--out", str(out)]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith(f"[{stage}] ") and line.rstrip().endswith("…"):
            proc.send_signal(signum)
            break
    _, rest = proc.communicate(timeout=300)
    return proc.returncode, "".join(lines) + rest


@pytest.mark.parametrize(
    ("stage", "signum", "code"),
    [
        ("export", signal.SIGINT, ExitCode.INTERRUPTED),
        ("build", signal.SIGTERM, ExitCode.TERMINATED),
        ("run", signal.SIGINT, ExitCode.INTERRUPTED),
        ("compare", signal.SIGINT, ExitCode.INTERRUPTED),
    ],
    ids=["sigint-export", "sigterm-build", "sigint-run", "sigint-compare"],
)
def test_a_signal_in_a_stage_exits_with_its_code_and_names_the_stage(tmp_path, env, stage, signum, code):
    out = tmp_path / "run"
    returncode, stderr = _convert_and_signal(out, env, stage, signum)
    name = signal.Signals(signum).name
    last = stderr.strip().splitlines()[-1]
    assert returncode == code, stderr
    assert last.startswith(f"harness: interrupted by {name}") and f"in stage '{stage}'" in last, stderr
    results = load_results(out)
    statuses = {s.name: s.status for s in results.stages}
    assert statuses[stage] == "interrupted"
    assert results.verdict.exit_code == code and results.verdict.status == code.name
    for record in results.stages:
        for artifact in record.artifacts.values():
            artifact.verified(out)  # everything the finished stages wrote is intact
    assert not list(out.rglob("*.partial")), "no half-written file is left"
    assert (out / "report.html").is_file()

    # the same command again goes on from the cache and passes
    again = harness("convert", "mnist", "--out", str(out), env=env)
    assert again.returncode == ExitCode.PASSED, again.stderr


@pytest.mark.parametrize("stage", ["export", "surgery", "build", "run", "compare"])
def test_a_run_killed_in_a_stage_leaves_a_folder_that_says_so_and_the_next_run_passes(tmp_path, env, stage):
    out = tmp_path / "run"
    returncode, _ = _convert_and_signal(out, env, stage, signal.SIGKILL)
    assert returncode == -signal.SIGKILL
    assert load_results(out).verdict.status == "UNFINISHED"  # never an earlier run's results
    compare = harness("compare", str(out), env=env)
    assert compare.returncode == ExitCode.USAGE_ERROR, compare.stderr
    assert "has not finished" in compare.stderr.strip().splitlines()[-1]
    again = harness("convert", "mnist", "--out", str(out), env=env)
    assert again.returncode == ExitCode.PASSED, again.stderr
    assert not list(out.rglob("*.partial"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, env):
    out = tmp_path_factory.mktemp("finished")
    proc = harness("convert", "mnist", "--out", str(out), env=env)
    assert proc.returncode == ExitCode.PASSED, proc.stderr
    return out


@pytest.mark.parametrize(
    ("target", "damage"),
    [
        ("outputs/torch/samples/0000000000.npz", "flip"),
        ("outputs/onnxrt/samples/0000000001.npz", "truncate"),
        ("model.final.onnx", "flip"),
        ("samples/samples/0000000000.npz", "flip"),
        ("results.json", "truncate"),
    ],
)
def test_harness_compare_refuses_a_run_folder_whose_files_were_damaged(
    tmp_path, finished, env, target, damage
):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    path = out / target
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    proc = harness("compare", str(out), env=env)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == ExitCode.USAGE_ERROR, proc.stderr
    assert last.startswith("harness: error:") and (target.rsplit("/", 1)[-1] in last), last


def test_two_concurrent_runs_on_one_cache_both_pass_and_leave_valid_entries(tmp_path_factory):
    from trt_harness.harness.cache import StageCache

    cache = tmp_path_factory.mktemp("shared-cache")
    environ = {k: v for k, v in os.environ.items() if k != "CI"}
    env = {**environ, "HARNESS_CACHE_DIR": str(cache), "CI": "true"}
    outs = [tmp_path_factory.mktemp(f"concurrent{i}") for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "harness", "convert", "mnist", "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for out in outs
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == ExitCode.PASSED, err
    for out in outs:
        results = load_results(out)
        for record in results.stages:
            for artifact in record.artifacts.values():
                artifact.verified(out)
    warnings: list[str] = []
    store = StageCache(cache, warn=warnings.append)
    rows = store.entries()
    assert rows and all(store.lookup(r["stage"], r["key"]) is not None for r in rows) and warnings == []
    assert not list(cache.rglob("*.partial"))
