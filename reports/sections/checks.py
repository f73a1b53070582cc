"""The recipe's own acceptance checks (models.checks), one row per check, output and runner pair: its
value against its threshold, pass or fail and why, and where it came out worst; and every comparison
whose reference had no signal (all zero, within atol of zero, a trivial argmax), accepted or not."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from trt_harness.models.results.comparisons import CheckOutcome, OutputComparison
from trt_harness.models.results.stages import CompareDetails
from trt_harness.reports import formatting as fmt
from trt_harness.reports.sections.common import RunView


@dataclass(frozen=True)
class CheckPlace:
    index: str  # "[1, 0, 2]" (sample, …)
    value: str
    detail: str


@dataclass(frozen=True)
class CheckRow:
    output: str
    name: str
    kind: str
    criterion: str  # what the recipe asked for, in words
    pair: str  # "Torch vs ORT", with the sample set where it is not the recipe's samples
    value: str
    threshold: str  # "≥ 0.999", or "" when the user's function decides alone
    state: str  # "pass" or "fail"
    counted: str  # "1 of 12 rows fail"
    reason: str
    no_signal: str
    accepted: bool  # the check accepts a reference with no signal
    worst: tuple[CheckPlace, ...]


@dataclass(frozen=True)
class NoSignalNote:
    output: str
    pair: str
    text: str
    accepted: bool  # Tolerance(accept_no_signal=True): a pass, said so


class ChecksSection:
    def __init__(self, run: RunView) -> None:
        self.run = run
        self.compare = run.details(CompareDetails)
        self.declared = run.results.recipe.checks

    def _pair(self, c: OutputComparison) -> str:
        return " ".join(
            filter(
                None,
                (self.run.pair_label(c.ref_backend, c.cand_backend), self.run.sample_set_label(c.sample_set)),
            )
        )

    def _row(self, c: OutputComparison, o: CheckOutcome) -> CheckRow:
        check = next((d for d in self.declared.get(c.output, ()) if d.name == o.name), None)
        relation = {">=": "≥", "<=": "≤"}.get(o.relation, o.relation)
        threshold = f"{relation} {fmt.compact(o.threshold)}" if o.threshold is not None and relation else ""
        counted = f"{o.failing:,} of {o.total:,} {o.unit} fail" if o.total else f"no {o.unit} judged"
        return CheckRow(
            output=c.output,
            name=o.name,
            kind=o.kind,
            criterion=check.criterion if check is not None else "",
            pair=self._pair(c),
            value=fmt.closeness(o.value),
            threshold=threshold,
            state="pass" if o.passed else "fail",
            counted=counted,
            reason=o.reason,
            no_signal=o.no_signal,
            accepted=bool(check is not None and check.accept_no_signal),
            worst=tuple(
                CheckPlace("[" + ", ".join(map(str, w.index)) + "]", fmt.closeness(w.value), w.detail)
                for w in o.worst
            ),
        )

    @functools.cached_property
    def rows(self) -> tuple[CheckRow, ...]:
        """Ordered as the recipe declares its outputs' checks, then by pair as compared."""
        if self.compare is None:
            return ()
        order = {
            (output, check.name): i
            for i, (output, check) in enumerate((o, c) for o, cs in self.declared.items() for c in cs)
        }
        rows = [
            (order.get((c.output, o.name), len(order)), i, self._row(c, o))
            for i, c in enumerate(self.compare.comparisons)
            for o in c.checks
        ]
        return tuple(row for _, _, row in sorted(rows, key=lambda r: (r[0], r[1])))

    @property
    def not_judged(self) -> tuple[str, ...]:
        """Declared checks that no comparison judged (the compare stage did not run, or the output
        was missing), as "'name' on output"."""
        judged = {(row.output, row.name) for row in self.rows}
        return tuple(
            f"'{check.name}' on {output}"
            for output, checks in self.declared.items()
            for check in checks
            if (output, check.name) not in judged
        )

    @functools.cached_property
    def no_signal(self) -> tuple[NoSignalNote, ...]:
        if self.compare is None:
            return ()
        return tuple(
            NoSignalNote(c.output, self._pair(c), c.no_signal, c.tolerance.accept_no_signal)
            for c in self.compare.comparisons
            if c.no_signal
        )

    @property
    def shown(self) -> bool:
        return bool(self.declared or self.no_signal)

    @property
    def state(self) -> str:
        failed = any(r.state == "fail" for r in self.rows) or any(not n.accepted for n in self.no_signal)
        return "fail" if failed else "pass"
