"""The CI gate: one exit code and one summary line from a run's ledger (no model is run)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from trt_harness.harness.detections import detections_compared, gate_failures
from trt_harness.models.core.errors import ExitCode
from trt_harness.models.results.comparisons import SAMPLES, MissingOutput, OutputComparison
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
    if (
        compare is None
        or not compare.done
        or details is None
        or not (details.comparisons or detections_compared(details.detections))
    ):
        reason = (compare.reason if compare is not None else None) or "no outputs were compared"
        return _verdict(ExitCode.ACCURACY_FAILED, f"nothing was compared: {reason}")
    run = by_name.get("run")
    runners = run.details.runners if run is not None and isinstance(run.details, RunDetails) else {}

    def display(name: str) -> str:
        return runners[name].display_name if name in runners else name

    def where(c: OutputComparison | MissingOutput) -> str:
        return f"{c.output} ({display(c.ref_backend)} vs {display(c.cand_backend)}{_at(c.sample_set)})"

    # a failing comparison is named under each of its causes: statistics, no signal, the recipe's checks
    failing = [where(c) for c in details.comparisons if not c and not c.within_tolerance]
    failing += [where(m) for m in details.missing]
    no_signal = [f"{where(c)}: {c.no_signal}" for c in details.comparisons if c.no_signal_fails]
    checks = [f"'{o.name}' on {where(c)}: {o.reason}" for c in details.comparisons for o in c.failed_checks]
    disagreeing = gate_failures(details.detections, display)
    problems = []
    if failing:
        more = f" and {len(failing) - 5} more" if len(failing) > 5 else ""
        problems.append(f"{len(failing)} comparison(s) out of tolerance: {', '.join(failing[:5])}{more}")
    if no_signal:
        more = f" and {len(no_signal) - 3} more" if len(no_signal) > 3 else ""
        problems.append(
            "no signal: " + "; ".join(no_signal[:3]) + more + " (a recipe that expects it sets "
            "Tolerance(accept_no_signal=True))"
        )
    if checks:
        more = f" and {len(checks) - 3} more" if len(checks) > 3 else ""
        problems.append(f"{len(checks)} check(s) failed: " + "; ".join(checks[:3]) + more)
    if disagreeing:
        more = f" and {len(disagreeing) - 3} more" if len(disagreeing) > 3 else ""
        problems.append("detections disagree: " + "; ".join(disagreeing[:3]) + more)
    if problems:
        return _verdict(ExitCode.ACCURACY_FAILED, "; ".join(problems))
    summary = f"all {len(details.comparisons)} comparisons within tolerance"
    judged_checks = sum(len(c.checks) for c in details.comparisons)
    if judged_checks:
        summary += f"; all {judged_checks} recipe check(s) pass"
    # a pass that checked nothing the recipe said it expects: still said, so nobody mistakes it
    accepted = [where(c) for c in details.comparisons if c.no_signal]
    accepted += [
        f"check '{o.name}' on {where(c)}" for c in details.comparisons for o in c.checks if o.no_signal
    ]
    if accepted:
        more = f" and {len(accepted) - 3} more" if len(accepted) > 3 else ""
        summary += "; no signal, accepted by the recipe: " + ", ".join(accepted[:3]) + more
    detections = details.detections
    gated = [p for p in detections.pairs if p.gated] if detections else []
    if detections is not None and gated:
        agree = f"detections agree on {detections.images} image(s) for {len(gated)} gated pair(s)"
        summary = f"{summary}; {agree}" if details.comparisons else agree
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
