"""Typed ledger entries for tests that judge results without running anything (verdict, gates).

Every value is a real `models.results` type, so a test reads and builds exactly what the pipeline
writes; the defaults describe a passing Torch-vs-ORT run on the recipe's samples.
"""

from __future__ import annotations

from collections.abc import Sequence

from trt_harness.harness.backends.base import display_name
from trt_harness.models.detection import DetectionMatch, Detections, DetectionTolerance
from trt_harness.models.recipe import DetectionSpec, Tolerance
from trt_harness.models.results.comparisons import SAMPLES, CrossMatch, MissingOutput, OutputComparison
from trt_harness.models.results.detections import DetectionPair, DetectionsReport, ImageAgreement
from trt_harness.models.results.stages import CompareDetails, RunDetails, RunnerRecord, StageRecord

REFERENCE = "torch"
TOLERANCE = DetectionTolerance(0.95, 0.95, 0.01)
CANDIDATE = "onnxrt"


def runner_record(name: str, *, executed: bool = True, samples: int = 1) -> RunnerRecord:
    """The run stage's record of runner `name` ('onnxrt', 'onnxrt-fp16', ...)."""
    backend, _, precision = name.partition("-")
    return RunnerRecord(
        backend=backend,
        precision=precision or "fp32",
        display_name=display_name(name),
        reference=backend == REFERENCE,
        state="executed" if executed else "not executed",
        reason=None if executed else "not available here",
        outputs=f"outputs_{name}" if executed else None,
        sample_sets=(SAMPLES,) if executed else (),
        samples=samples if executed else 0,
    )


def run_stage(runners: Sequence[str] = (REFERENCE, CANDIDATE)) -> StageRecord:
    return StageRecord("run", "ok", 1.0, details=RunDetails({name: runner_record(name) for name in runners}))


def comparison(
    output: str,
    passed: bool,
    ref: str = REFERENCE,
    cand: str = CANDIDATE,
    *,
    sample_set: str = SAMPLES,
    precision: str = "fp32",
) -> OutputComparison:
    """One output's comparison; its statistics are those of identical outputs, only `passed` varies."""
    return OutputComparison(
        output=output,
        ref_backend=ref,
        cand_backend=cand,
        tolerance=Tolerance(),
        passed=passed,
        reason="" if passed else "max |err| 1 > atol 1e-05",
        samples=1,
        elements=4,
        finite_elements=4,
        out_of_tolerance=0 if passed else 4,
        nonfinite_mismatches=0,
        ref_nan=0,
        ref_inf=0,
        cand_nan=0,
        cand_inf=0,
        max_abs_err=0.0 if passed else 1.0,
        min_abs_err=0.0,
        mean_abs_err=0.0,
        std_abs_err=0.0,
        median_abs_err=0.0,
        quantile_abs_err=0.0,
        max_rel_err=0.0,
        mean_rel_err=0.0,
        median_rel_err=0.0,
        quantile_rel_err=0.0,
        rmse=0.0,
        cosine_similarity=1.0,
        within_atol=None,
        within_rtol=None,
        argmax_agreement=None,
        argmax_positions=0,
        worst=(),
        abs_err_histogram=(),
        rel_err_histogram=(),
        sample_set=sample_set,
        precision=precision,
    )


def missing(
    output: str, missing_from: str = CANDIDATE, ref: str = REFERENCE, cand: str = CANDIDATE
) -> MissingOutput:
    return MissingOutput(
        output, ref, cand, missing_from, 1, 1, f"output '{output}' is missing from {missing_from}"
    )


def crossmatch(*mismatches: str, ref: str = REFERENCE, cand: str = CANDIDATE) -> CrossMatch:
    """A cross-match that judged `mismatches` (sentences) an ordering mismatch; none: all in order."""
    return CrossMatch(
        ref_backend=ref,
        cand_backend=cand,
        ref_outputs=(),
        cand_outputs=(),
        scores=(),
        best_match={},
        mismatched=(),
        mismatches=tuple(mismatches),
        unmatched=(),
        samples=1,
    )


def compare_stage(
    comparisons: Sequence[OutputComparison] = (),
    *,
    missing: Sequence[MissingOutput] = (),
    crossmatch: Sequence[CrossMatch] = (),
    detections: DetectionsReport | None = None,
) -> StageRecord:
    details = CompareDetails(
        groups=(),
        comparisons=tuple(comparisons),
        missing=tuple(missing),
        crossmatch=tuple(crossmatch),
        detections=detections,
    )
    return StageRecord("compare", "ok", 0.5, details=details)


# --- detections ---------------------------------------------------------------------------------------


def detection_match(
    matched: float,
    mean_iou: float | None = 0.99,
    score: float | None = 0.001,
    tolerance: DetectionTolerance = TOLERANCE,
) -> DetectionMatch:
    """The match of one image with the given matched fraction, mean IoU and max |score delta|."""
    boxes = 10
    matches = round(matched * boxes)
    return DetectionMatch(
        tolerance=tolerance,
        num_ref=boxes,
        num_cand=boxes,
        pairs=tuple((i, i) for i in range(matches)),
        matched_fraction=matched,
        mean_iou=mean_iou if matches else None,
        max_score_delta=score if matches else None,
        mean_score_delta=score / 2 if matches and score is not None else None,
        only_ref=Detections.empty(),
        only_cand=Detections.empty(),
    )


def image(
    index: int, matched: float, mean_iou: float | None = 0.99, score: float | None = 0.001
) -> ImageAgreement:
    return ImageAgreement(index, detection_match(matched, mean_iou, score))


def detection_pair(
    images: Sequence[ImageAgreement], *, gated: bool = True, cand: str = CANDIDATE, ref: str = REFERENCE
) -> DetectionPair:
    precision = cand.partition("-")[2] or "fp32"
    return DetectionPair(ref, cand, precision, gated, tuple(images))


def detections(*pairs: DetectionPair, output: str = "output0") -> DetectionsReport:
    runners = dict.fromkeys(name for p in pairs for name in (p.ref_backend, p.cand_backend))
    images = len(pairs[0].images) if pairs else 0
    return DetectionsReport(
        output=output,
        spec=DetectionSpec(output=output, layout="yolov5"),
        images=images,
        images_file=None,
        runners={name: (Detections.empty(),) * images for name in runners},
        pairs=tuple(pairs),
    )
