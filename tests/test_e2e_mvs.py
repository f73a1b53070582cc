"""The multi-view-stereo recipe: a research model that only exports and builds with the replacement library."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from trt_harness.models.core.errors import ExitCode
from trt_harness.models.recipes.mvs import REPLACEMENTS
from trt_harness.models.results.document import load_results
from trt_harness.models.results.stages import StageRecord

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    return {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path_factory.mktemp("cache")), "CI": "true"}


def harness(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=900, env=env
    )


def stages(run_dir: Path) -> dict[str, StageRecord]:
    return {s.name: s for s in load_results(run_dir).stages}


def op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


def test_with_the_recipe_replacements_mvs_exports_builds_and_every_output_passes(tmp_path, env):
    proc = harness("convert", "mvs", "--out", str(tmp_path), env=env)
    assert proc.returncode == ExitCode.PASSED, proc.stdout + proc.stderr
    ledger = stages(tmp_path)
    assert ledger["build"].status == "ok" and ledger["build"].details.primary.network_layers > 0
    compared = {c.output for c in ledger["compare"].details.comparisons if c.cand_backend == "onnxrt"}
    assert compared == set(ledger["export"].details.outputs) and len(compared) == 9
    assert not op_types(tmp_path / "model.final.onnx") & {"GridSample", "Einsum", "Pad", "If", "Inverse"}
    calls = ledger["export"].details.replacement_calls
    rewritten = {c.replacement for c in calls if c.action == "replaced"}
    assert {"inverse", "grid_sample", "einsum", "einops", "pad", "squeeze_static"} <= rewritten
    # this model computes its interpolate sizes from tensor shapes, which already follow the input:
    # the replacement keeps those calls and says why, rather than rewriting them
    kept = [c for c in calls if c.replacement == "interpolate_size"]
    assert kept and all(c.action == "kept original" and c.detail for c in kept)


def test_as_its_authors_wrote_it_mvs_fails_to_export_on_the_matrix_inverse(tmp_path, env):
    proc = harness("convert", "mvs", "-p", "replacements=", "--out", str(tmp_path), env=env)
    assert proc.returncode == ExitCode.STAGE_FAILED, proc.stdout + proc.stderr
    export = stages(tmp_path)["export"]
    assert export.status == "failed" and "aten::linalg_inv" in export.reason
    assert (tmp_path / "report.html").is_file(), "the report is written even when a stage fails"


def test_without_squeeze_replacement_the_stray_ifs_are_inlined_by_the_surgery_pass(tmp_path, env):
    without_squeeze = ",".join(r for r in REPLACEMENTS if r != "squeeze_static")
    proc = harness("convert", "mvs", "-p", f"replacements={without_squeeze}", "--out", str(tmp_path), env=env)
    assert proc.returncode == ExitCode.PASSED, proc.stdout + proc.stderr
    ledger = stages(tmp_path)
    assert ledger["export"].details.op_counts.get("If", 0) > 0, "the TorchScript exporter emits stray Ifs"
    # constant folding inlines the Ifs whose condition it decides, remove_stray_if any it leaves
    passes = ledger["surgery"].details.passes
    inlining = next(p for p in passes if "If" in p.op_counts_before and "If" not in p.op_counts_after)
    assert inlining.name in ("fold_constants", "remove_stray_if") and inlining.modified
    assert "If" not in op_types(tmp_path / "model.final.onnx")
    assert ledger["build"].status == "ok"


def test_legacy_exporter_yolov5_with_squeezed_batch_builds_after_the_if_pass(tmp_path, env):
    args = ("-p", "image_size=128", "-p", "exporter=torchscript", "-p", "squeeze_batch=1")
    proc = harness("convert", "yolov5", *args, "--out", str(tmp_path), env=env)
    assert proc.returncode == ExitCode.PASSED, proc.stdout + proc.stderr
    ledger = stages(tmp_path)
    assert ledger["export"].details.op_counts.get("If") == 1
    stray_if = next(p for p in ledger["surgery"].details.passes if p.name == "remove_stray_if")
    assert stray_if.modified and "inlined If" in stray_if.changes[0]
    assert ledger["build"].status == "ok"


def test_scan_lists_every_problem_op_of_mvs_with_its_fix(env):
    proc = harness("scan", "mvs", env=env)
    assert proc.returncode == ExitCode.PASSED, proc.stderr
    for op, fix in [
        ("torch.linalg.inv", "inverse"),
        ("grid_sample", "grid_sample"),
        ("torch.einsum", "einsum"),
        ("einops", "einops"),
        ("torch.nn.functional.pad", "pad"),
        ("squeeze", "squeeze_static"),
        ("interpolate(size=...)", "interpolate_size"),
    ]:
        assert any(op in line and f"replacement '{fix}'" in line for line in proc.stdout.splitlines()), (
            op,
            proc.stdout,
        )
