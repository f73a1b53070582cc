"""The index page's drift table: runs of one model under other versions (the version matrix,
`nox -s version-matrix`), each against the first run, from `harness diff`'s `RunDiff`s alone.

One table per reference run; one row per other run, saying what differs in its environment and, per
tensor comparison, its p99 and max abs error with the factor against the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trt_harness.models.results.diff import RunDiff
from trt_harness.reports.sections.baseline import STATE, DiffView, change_text, value_text

GATED = ("quantile_abs_err", "max_abs_err")


@dataclass(frozen=True)
class DriftCell:
    value: str  # the run's value
    change: str  # against the reference: "=", "×1.3"
    state: str  # "regressed", "worse", "better" or ""


@dataclass(frozen=True)
class DriftRow:
    run: str
    environment: tuple[str, ...]  # "package onnxruntime 1.22.1 → 1.23.2"
    settings: tuple[str, ...]
    cells: tuple[tuple[DriftCell, ...], ...]  # per column, the GATED statistics in order
    status: str  # "unchanged", "within factor", "regressed", ...
    state: str  # badge class
    identical: bool  # not one statistic of any comparison differs


@dataclass(frozen=True)
class DriftTable:
    recipe: str
    reference: str
    reference_values: tuple[tuple[str, ...], ...]  # per column, the reference's GATED values
    columns: tuple[str, ...]  # "logits: Torch vs ORT"
    labels: tuple[str, ...]  # of the GATED statistics, e.g. ("p99 abs error", "max abs error")
    rows: tuple[DriftRow, ...]


_ORDER = (
    "regressed",
    "new failure",
    "still failing",
    "removed",
    "added",
    "within factor",
    "improved",
    "fixed",
)


def _status(diff: RunDiff) -> str:
    found = {c.status for c in (*diff.comparisons, *diff.detections)}
    if diff.run_regressions:
        return "regressed"
    return next((s for s in _ORDER if s in found), "unchanged")


def drift_tables(diffs: Sequence[RunDiff]) -> tuple[DriftTable, ...]:
    """Tables of `diffs`, each from a reference run (side A) to another run (side B), grouped by A."""
    groups: dict[str, list[RunDiff]] = {}
    for diff in diffs:
        groups.setdefault(diff.a.source, []).append(diff)
    tables = []
    for reference, members in groups.items():
        keys: list[tuple[str, str, str, str, str]] = []
        titles: dict[tuple[str, str, str, str, str], str] = {}
        for diff in members:
            view = DiffView(diff)
            for c in diff.comparisons:
                key = (c.output, c.ref_backend, c.cand_backend, c.sample_set, c.precision)
                if key not in titles:
                    keys.append(key)
                    titles[key] = (
                        f"{c.output}: {view.title(c.ref_backend, c.cand_backend, c.sample_set, c.precision)}"
                    )
        labels: tuple[str, ...] = ()
        reference_values: dict[tuple[str, ...], tuple[str, ...]] = {}
        rows = []
        for diff in members:
            by_key = {
                (c.output, c.ref_backend, c.cand_backend, c.sample_set, c.precision): c
                for c in diff.comparisons
            }
            cells = []
            for key in keys:
                change = by_key.get(key)
                stats = [change.stat(s) if change else None for s in GATED]
                if not labels and all(stats):
                    labels = tuple(s.label for s in stats if s)
                if key not in reference_values and all(stats):
                    reference_values[key] = tuple(value_text(s.kind, s.before) for s in stats if s)
                cells.append(
                    tuple(
                        DriftCell(
                            value_text(s.kind, s.after), change_text(s), "regressed" if s.regressed else ""
                        )
                        if s is not None
                        else DriftCell("–", "not compared", "")
                        for s in stats
                    )
                )
            status = _status(diff)
            rows.append(
                DriftRow(
                    run=diff.b.source,
                    environment=tuple(
                        f"{v.what} {v.before or 'absent'} → {v.after or 'absent'}" for v in diff.environment
                    ),
                    settings=tuple(
                        f"{v.what} {v.before or 'absent'} → {v.after or 'absent'}" for v in diff.settings
                    ),
                    cells=tuple(cells),
                    status=status,
                    state=STATE.get(status, "pass"),
                    identical=all(not s.changed for c in diff.comparisons for s in c.stats),
                )
            )
        tables.append(
            DriftTable(
                recipe=members[0].a.recipe,
                reference=reference,
                reference_values=tuple(reference_values.get(k, ("–",) * len(GATED)) for k in keys),
                columns=tuple(titles[k] for k in keys),
                labels=labels or ("p99 abs error", "max abs error"),
                rows=tuple(rows),
            )
        )
    return tuple(tables)
