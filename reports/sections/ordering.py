"""Output order: the positional I/O order each stage and runner saw, and the cross-match by value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trt_harness.models.results.stages import CompareDetails, ExportDetails
from trt_harness.reports import formatting as fmt
from trt_harness.reports.sections.common import RunView


@dataclass(frozen=True)
class IOColumn:
    title: str
    source: str
    inputs: tuple[str, ...] | None  # None: not available
    outputs: tuple[str, ...] | None
    reason: str | None = None


@dataclass(frozen=True)
class IORow:
    kind: str  # "input" or "output"
    position: int
    cells: tuple[str | None, ...]  # None: column not available; "" : no such position
    differs: tuple[bool, ...]


@dataclass(frozen=True)
class CrossMatchView:
    ref_label: str
    cand_label: str
    ref_outputs: tuple[str, ...]
    rows: tuple[tuple[str, tuple[dict[str, Any], ...]], ...]
    mismatches: tuple[str, ...]
    unmatched: tuple[str, ...]
    samples: int


class OrderingSection:
    def __init__(self, run: RunView) -> None:
        self.run = run

    def _export_column(self) -> IOColumn:
        export = self.run.details(ExportDetails)
        if export is not None:
            return IOColumn("ONNX", "graph (export)", export.inputs, export.outputs)
        stage = self.run.stage("export")
        return IOColumn("ONNX", "graph (export)", None, None, f"export {stage.status}: {stage.reason}")

    @property
    def io_columns(self) -> list[IOColumn]:
        columns = []
        for runner in self.run.runners.values():
            if runner.io_order is not None:
                columns.append(
                    IOColumn(
                        runner.display_name, runner.io_source, runner.io_order.inputs, runner.io_order.outputs
                    )
                )
            else:
                reason = f"{runner.state}: {runner.reason or 'no reason recorded'}"
                columns.append(IOColumn(runner.display_name, runner.io_source or "run", None, None, reason))
            if runner.reference and runner.precision == "fp32":
                columns.append(self._export_column())
        if not any(c.title == "ONNX" for c in columns):
            columns.insert(0, self._export_column())
        return columns

    @property
    def io_rows(self) -> list[IORow]:
        columns = self.io_columns
        rows = []
        for kind, attr in (("input", "inputs"), ("output", "outputs")):
            lists = [getattr(c, attr) for c in columns]
            length = max((len(names) for names in lists if names is not None), default=0)
            for position in range(length):
                cells = tuple(
                    None if names is None else (names[position] if position < len(names) else "")
                    for names in lists
                )
                # Which column is right is unknown: a position whose names disagree is marked in all of them.
                disagree = len({c for c in cells if c is not None}) > 1
                differs = tuple(c is not None and disagree for c in cells)
                rows.append(IORow(kind, position, cells, differs))
        return rows

    @property
    def crossmatches(self) -> list[CrossMatchView]:
        compare = self.run.details(CompareDetails)
        views = []
        for cm in compare.crossmatch if compare else ():
            mismatched = set(cm.mismatched)
            rows = []
            for cand, scores in zip(cm.cand_outputs, cm.scores, strict=True):
                best = cm.best_match.get(cand)
                cells = tuple(
                    {
                        "text": fmt.MISSING if score is None else fmt.number(score),
                        "title": "shapes not compatible" if score is None else f"score {score}",
                        "best": ref == best,
                        "same": ref == cand,
                        "mismatch": cand in mismatched and ref == best,
                        "expected": cand in mismatched and ref == cand,
                    }
                    for ref, score in zip(cm.ref_outputs, scores, strict=True)
                )
                rows.append((cand, cells))
            views.append(
                CrossMatchView(
                    self.run.display(cm.ref_backend),
                    self.run.display(cm.cand_backend),
                    cm.ref_outputs,
                    tuple(rows),
                    cm.mismatches,
                    cm.unmatched,
                    cm.samples,
                )
            )
        return views

    @property
    def mismatches(self) -> list[str]:
        return [m for cm in self.crossmatches for m in cm.mismatches]
