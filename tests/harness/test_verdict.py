from __future__ import annotations

from models.core.errors import ExitCode
from harness.verdict import verdict_for


def results(stages=None, comparisons=(), crossmatch=(), missing=()):
    compare = {
        "name": "compare",
        "status": "ok",
        "reason": None,
        "details": {
            "comparisons": list(comparisons),
            "crossmatch": list(crossmatch),
            "missing": list(missing),
        },
    }
    return {"stages": stages or [{"name": "export", "status": "ok", "reason": None}, compare]}


def comparison(output, passed):
    return {"output": output, "passed": passed, "ref_backend": "torch", "cand_backend": "onnxrt"}


def test_all_within_tolerance_passes():
    verdict = verdict_for(results(comparisons=[comparison("a", True), comparison("b", True)]))
    assert verdict["passed"] and verdict["exit_code"] == ExitCode.PASSED


def test_one_output_out_of_tolerance_fails_with_its_name():
    verdict = verdict_for(results(comparisons=[comparison("a", True), comparison("boxes", False)]))
    assert verdict["exit_code"] == ExitCode.ACCURACY_FAILED
    assert "boxes (torch vs onnxrt)" in verdict["summary"]


def test_ordering_mismatch_has_its_own_code_and_wins_over_accuracy():
    mismatch = "ordering mismatch: ORT 'depth' matches Torch 'depth_min'"
    verdict = verdict_for(
        results(comparisons=[comparison("depth", False)], crossmatch=[{"mismatches": [mismatch]}])
    )
    assert verdict["exit_code"] == ExitCode.ORDERING_MISMATCH
    assert verdict["summary"] == mismatch


def test_failed_stage_wins_and_names_the_stage():
    stages = [
        {"name": "export", "status": "ok", "reason": None},
        {"name": "build", "status": "failed", "reason": "TensorRT for RTX engine build failed: X"},
        {"name": "compare", "status": "skipped", "reason": "not run", "details": {}},
    ]
    verdict = verdict_for(results(stages=stages))
    assert verdict["exit_code"] == ExitCode.STAGE_FAILED
    assert "stage 'build' failed" in verdict["summary"]


def test_nothing_compared_is_not_a_pass():
    stages = [
        {"name": "compare", "status": "skipped", "reason": "fewer than two backends executed", "details": {}}
    ]
    verdict = verdict_for(results(stages=stages))
    assert not verdict["passed"]
    assert "fewer than two backends" in verdict["summary"]


def test_missing_output_fails():
    missing = {"output": "depth", "ref_backend": "torch", "cand_backend": "onnxrt"}
    verdict = verdict_for(results(comparisons=[comparison("a", True)], missing=[missing]))
    assert verdict["exit_code"] == ExitCode.ACCURACY_FAILED
