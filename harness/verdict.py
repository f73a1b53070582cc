"""The CI gate: one exit code and one summary line from a run's ledger (no model is run)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from trt_harness.harness.detections import gate_failures
from trt_harness.models.core.errors import ExitCode
from trt_harness.models.results.comparisons import SAMPLES
from trt_harness.models.results.document import Verdict
from trt_harness.models.results.stages import CompareDetails, ExportDetails, RunDetails, StageRecord


def _verdict(code: ExitCode, summary: str) -> Verdict:
    return Verdict(int(code), code.name, summary)


def verdict_for(stages: Sequence[StageRecord]) -> Verdict:
    """Stage failure beats an ordering mismatch, which beats an accuracy failure; nothing compared fails.

    Accuracy needs both gates: every tensor comparison within tolerance, and the detections of every
    pair at a gated precision agreeing on every image (reduced precisions are informational by default).
    """
    by_name = {s.name: s for s in stages}
    failed = [s for s in stages if s.status == "failed"]
    if failed:
        summary = f"stage '{failed[0].name}' failed: {failed[0].reason}"
        compared = by_name.get("compare")
        if compared is not None and compared.done:
            # the run went on past a failure that stops no other backend (a TensorRT build): say how they did
            others = verdict_for([s for s in stages if s.status != "failed"])
            summary += f"; the backends that ran: {others.status} ({others.summary})"
        return _verdict(ExitCode.STAGE_FAILED, summary)
    compare = by_name.get("compare")
    details = compare.details if compare is not None and isinstance(compare.details, CompareDetails) else None
    mismatches = _declared_output_mismatches(by_name) + (details.mismatches if details is not None else ())
    if mismatches:
        return _verdict(ExitCode.ORDERING_MISMATCH, "; ".join(dict.fromkeys(mismatches)))
    if compare is None or not compare.done or details is None or not details.comparisons:
        reason = (compare.reason if compare is not None else None) or "no outputs were compared"
        return _verdict(ExitCode.ACCURACY_FAILED, f"nothing was compared: {reason}")
    run = by_name.get("run")
    runners = run.details.runners if run is not None and isinstance(run.details, RunDetails) else {}

    def display(name: str) -> str:
        return runners[name].display_name if name in runners else name

    failing = [
        f"{c.output} ({display(c.ref_backend)} vs {display(c.cand_backend)}{_at(c.sample_set)})"
        for c in details.comparisons
        if not c
    ]
    failing += [
        f"{m.output} ({display(m.ref_backend)} vs {display(m.cand_backend)}{_at(m.sample_set)})"
        for m in details.missing
    ]
    disagreeing = gate_failures(details.detections, display)
    problems = []
    if failing:
        more = f" and {len(failing) - 5} more" if len(failing) > 5 else ""
        problems.append(f"{len(failing)} comparison(s) out of tolerance: {', '.join(failing[:5])}{more}")
    if disagreeing:
        more = f" and {len(disagreeing) - 3} more" if len(disagreeing) > 3 else ""
        problems.append("detections disagree: " + "; ".join(disagreeing[:3]) + more)
    if problems:
        return _verdict(ExitCode.ACCURACY_FAILED, "; ".join(problems))
    summary = f"all {len(details.comparisons)} comparisons within tolerance"
    detections = details.detections
    gated = [p for p in detections.pairs if p.gated] if detections else []
    if detections is not None and gated:
        summary += f"; detections agree on {detections.images} image(s) for {len(gated)} gated pair(s)"
    return _verdict(ExitCode.PASSED, summary)


def _declared_output_mismatches(by_name: Mapping[str, StageRecord]) -> tuple[str, ...]:
    """Outputs of the export or a runner that carry the shape or dtype declared for another output."""
    export, run = by_name.get("export"), by_name.get("run")
    found: tuple[str, ...] = ()
    if export is not None and isinstance(export.details, ExportDetails):
        found += export.details.ordering_mismatches
    if run is not None and isinstance(run.details, RunDetails):
        found += tuple(m for r in run.details.runners.values() for m in r.ordering_mismatches)
    return found


def _at(sample_set: str) -> str:
    # every failure names its sample set, the recipe's own samples too: a run judges each set apart
    return " on the samples" if sample_set == SAMPLES else f" at {sample_set}"
