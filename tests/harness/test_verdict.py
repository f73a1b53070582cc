"""The CI gate from typed ledger entries alone: exit code, status and summary (no model is run)."""

from __future__ import annotations

from trt_harness.harness.verdict import verdict_for
from trt_harness.models.core.errors import ExitCode
from trt_harness.models.results.document import Verdict
from trt_harness.models.results.stages import StageRecord

from tests.harness import results_builders as build

EXPORT = StageRecord("export", "ok")


def judged(*comparisons, crossmatch=(), missing=(), with_run=False) -> Verdict:
    compare = build.compare_stage(comparisons, crossmatch=crossmatch, missing=missing)
    stages = (EXPORT, *((build.run_stage(),) if with_run else ()), compare)
    return verdict_for(stages)


def test_all_within_tolerance_passes():
    verdict = judged(build.comparison("a", True), build.comparison("b", True))
    assert verdict.passed and bool(verdict)
    assert verdict.exit_code == ExitCode.PASSED and verdict.status == "PASSED"
    assert verdict.summary == "all 2 comparisons within tolerance"


def test_one_output_out_of_tolerance_fails_with_its_name():
    verdict = judged(build.comparison("a", True), build.comparison("boxes", False))
    assert verdict.exit_code == ExitCode.ACCURACY_FAILED and verdict.status == "ACCURACY_FAILED"
    assert not verdict.passed and not verdict
    assert "boxes (torch vs onnxrt on the samples)" in verdict.summary
    assert "a (" not in verdict.summary


def test_the_summary_uses_the_runners_display_names_and_the_sample_set():
    failing = [
        build.comparison("boxes", False),
        build.comparison("boxes", False, sample_set="batch8"),
    ]
    verdict = judged(*failing, with_run=True)
    assert (
        "2 comparison(s) out of tolerance: boxes (Torch vs ORT on the samples), boxes (Torch vs ORT at batch8)"
        in (verdict.summary)
    )


def test_many_failures_are_counted_after_the_first_five():
    verdict = judged(*(build.comparison(f"out{i}", False) for i in range(8)))
    assert verdict.summary.startswith("8 comparison(s) out of tolerance: out0 ")
    assert "out4" in verdict.summary and "out5" not in verdict.summary
    assert verdict.summary.endswith(" and 3 more")


def test_ordering_mismatch_has_its_own_code_and_wins_over_accuracy():
    mismatch = "ordering mismatch: ORT 'depth' matches Torch 'depth_min'"
    verdict = judged(build.comparison("depth", False), crossmatch=[build.crossmatch(mismatch)])
    assert verdict.exit_code == ExitCode.ORDERING_MISMATCH and verdict.status == "ORDERING_MISMATCH"
    assert verdict.summary == mismatch


def test_failed_stage_wins_and_names_the_stage():
    stages = (
        EXPORT,
        StageRecord("build", "failed", reason="TensorRT for RTX engine build failed: X"),
        StageRecord("compare", "skipped", reason="not run: stage 'build' failed"),
    )
    verdict = verdict_for(stages)
    assert verdict.exit_code == ExitCode.STAGE_FAILED and verdict.status == "STAGE_FAILED"
    assert verdict.summary == "stage 'build' failed: TensorRT for RTX engine build failed: X"


def test_nothing_compared_is_not_a_pass():
    skipped = (StageRecord("compare", "skipped", reason="fewer than two backends executed (torch)"),)
    verdict = verdict_for(skipped)
    assert not verdict.passed and verdict.exit_code == ExitCode.ACCURACY_FAILED
    assert "fewer than two backends" in verdict.summary
    assert verdict_for((EXPORT,)).summary == "nothing was compared: no outputs were compared"
    assert not judged().passed, "a compare stage with no comparisons passes nothing"


def test_missing_output_fails():
    verdict = judged(build.comparison("a", True), missing=[build.missing("depth")])
    assert verdict.exit_code == ExitCode.ACCURACY_FAILED
    assert "depth (torch vs onnxrt on the samples)" in verdict.summary
