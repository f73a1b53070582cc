"""The CI gate: one exit code and one summary line from saved results (no model is run)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.detections import gate_failures
from harness.errors import ExitCode


def verdict_for(results: dict[str, Any]) -> dict[str, Any]:
    """Stage failure beats an ordering mismatch, which beats an accuracy failure; nothing compared fails.

    Accuracy needs both gates: every tensor comparison within tolerance, and the detections of every
    pair at a gated precision agreeing on every image (reduced precisions are informational by default).
    """
    stages = {s["name"]: s for s in results["stages"]}
    failed = [s for s in results["stages"] if s["status"] == "failed"]
    if failed:
        stage = failed[0]
        return _verdict(ExitCode.STAGE_FAILED, f"stage '{stage['name']}' failed: {stage['reason']}")
    compare = stages.get("compare", {})
    details = compare.get("details", {})
    mismatches = [m for cm in details.get("crossmatch", []) for m in cm.get("mismatches", [])]
    if mismatches:
        return _verdict(ExitCode.ORDERING_MISMATCH, "; ".join(mismatches))
    comparisons = details.get("comparisons", [])
    missing = details.get("missing", [])
    if compare.get("status") not in ("ok", "cached") or not comparisons:
        reason = compare.get("reason") or "no outputs were compared"
        return _verdict(ExitCode.ACCURACY_FAILED, f"nothing was compared: {reason}")
    failing = [c for c in comparisons if not c["passed"]] + missing
    detections = details.get("detections")
    disagreeing = gate_failures(detections, _display_names(stages))
    problems = []
    if failing:
        shown = ", ".join(f"{c['output']} ({c['ref_backend']} vs {c['cand_backend']})" for c in failing[:5])
        more = f" and {len(failing) - 5} more" if len(failing) > 5 else ""
        problems.append(f"{len(failing)} comparison(s) out of tolerance: {shown}{more}")
    if disagreeing:
        more = f" and {len(disagreeing) - 3} more" if len(disagreeing) > 3 else ""
        problems.append("detections disagree: " + "; ".join(disagreeing[:3]) + more)
    if problems:
        return _verdict(ExitCode.ACCURACY_FAILED, "; ".join(problems))
    summary = f"all {len(comparisons)} comparisons within tolerance"
    gated = [p for p in (detections or {}).get("pairs", []) if p["gated"]]
    if gated:
        summary += f"; detections agree on {detections['images']} image(s) for {len(gated)} gated pair(s)"
    return _verdict(ExitCode.PASSED, summary)


def _display_names(stages: dict[str, Any]) -> Callable[[str], str]:
    backends = (stages.get("run", {}).get("details") or {}).get("backends", {})
    return lambda runner: str((backends.get(runner) or {}).get("display_name") or runner)


def _verdict(code: ExitCode, summary: str) -> dict[str, Any]:
    return {
        "passed": code == ExitCode.PASSED,
        "exit_code": int(code),
        "status": code.name,
        "summary": summary,
    }
