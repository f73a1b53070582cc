"""Write a run diff (`harness diff A B`) as a plain-text table, a self-contained HTML page and JSON.

All three are made from the typed `RunDiff` alone (no torch, no harness module). The text is plain
ASCII with fixed columns, the same for the same diff, so CI logs can be read and compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from trt_harness.models.core.artifacts import write_text_atomic
from trt_harness.models.results.diff import RunDiff, diff_to_text
from trt_harness.reports.render import environment
from trt_harness.reports.sections.baseline import ChangeView, DiffView

# the few non-ASCII characters the shared formatting uses, as plain text writes them
_ASCII = str.maketrans({"×": "x", "−": "-", "–": "-", "→": "->", "∞": "inf", "≈": "~", "·": "*", "µ": "u"})


def render_diff_html(diff: RunDiff) -> str:
    return environment().get_template("diff.html.j2").render(v=DiffView(diff))


def write_diff_html(diff: RunDiff, path: Path) -> Path:
    write_text_atomic(path, render_diff_html(diff))
    return path


def write_diff_json(diff: RunDiff, path: Path) -> Path:
    write_text_atomic(path, diff_to_text(diff))
    return path


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(row[i])) for row in (headers, *rows)) for i in range(len(headers))]
    return [
        (indent + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))).rstrip()
        for row in (headers, *rows)
    ]


def _moved(before: str, after: str, change: str) -> str:
    """One cell for a statistic in both runs: "1.5e-7 -> 5.0e-5 (x339)", or "1.5e-7 (=)"."""
    return f"{before} (=)" if change == "=" else f"{before} -> {after} ({change})"


def _change_rows(changes: Sequence[ChangeView]) -> tuple[list[str], list[list[str]]]:
    gated_labels = [r.label for r in changes[0].gated_rows] if changes else []
    headers = ["output", "pair", "verdict", *gated_labels, "status"]
    rows = []
    for c in changes:
        gated = c.gated_rows
        cells = [_moved(r.before, r.after, r.change) for r in gated]
        cells += ["-"] * (len(gated_labels) - len(cells))
        status = c.status.upper() if c.state == "fail" else c.status
        rows.append([c.output, c.title, f"{c.verdict_before} -> {c.verdict_after}", *cells, status])
    return headers, rows


def diff_text(diff: RunDiff) -> str:
    """The terminal table of `diff`: the verdict, each comparison's gated statistics, what changed."""
    view = DiffView(diff)
    lines = [
        f"harness diff: {diff.a.recipe}" + (f" -> {diff.b.recipe}" if diff.b.recipe != diff.a.recipe else "")
    ]
    lines += _table(
        ["", "run", "verdict", "created", "summary"],
        [
            [
                label,
                side.source,
                f"{'PASS' if side.passed else 'FAIL'} (exit {side.exit_code})",
                created,
                side.summary,
            ]
            for label, side, created in view.sides
        ],
    )
    lines.append(f"{view.word}: {view.counts}")
    lines += [f"  - {r}" for r in diff.regressions]
    lines.append(f"  (counted as {view.gate_text})")

    comparisons = view.comparisons
    lines += ["", f"comparisons ({view.before} -> {view.after})"]
    if comparisons:
        lines += _table(*_change_rows(comparisons))
    else:
        lines.append("  none: neither run compared any output")
    detections = view.detections
    if detections:
        lines += ["", "detections"]
        headers = ["output", "pair", "verdict", "images disagreeing", "mean matched fraction", "status"]
        rows = []
        for d in detections:
            failing, matched = d.row("images disagreeing"), d.row("mean matched")
            rows.append(
                [
                    d.output,
                    d.title + ("" if "informational" not in " ".join(d.notes) else " (informational)"),
                    f"{d.verdict_before} -> {d.verdict_after}",
                    _moved(failing.before, failing.after, failing.change) if failing else "-",
                    _moved(matched.before, matched.after, matched.change) if matched else "-",
                    d.status.upper() if d.state == "fail" else d.status,
                ]
            )
        lines += _table(headers, rows)

    shown = [(c.output, c) for c in comparisons] + [(f"detections of {d.output}", d) for d in detections]
    for subject, c in shown:
        if c.state != "fail" or c.status == "still failing":
            continue
        lines += ["", f"{subject}, {c.title}: every statistic (* gated)"]
        lines += _table(
            ["statistic", view.before, view.after, "change"],
            [[r.label + (" *" if r.gated else ""), r.before, r.after, r.change] for r in c.rows],
        )
        lines += [f"  {note}" for note in c.notes]

    lines += ["", f"environment changes ({view.before} -> {view.after})"]
    lines += (
        _table(["", view.before, view.after], [[r.what, r.before, r.after] for r in view.environment])
        if view.environment
        else ["  none"]
    )
    lines += ["", f"setting changes ({view.before} -> {view.after})"]
    lines += (
        _table(["", view.before, view.after], [[r.what, r.before, r.after] for r in view.settings])
        if view.settings
        else ["  none"]
    )
    lines += ["", "stage times"]
    lines += _table(
        ["stage", view.before, view.after, "change"],
        [
            [t.name, _timed(t.before, t.status_before), _timed(t.after, t.status_after), t.change]
            for t in view.stages
        ],
    )
    if view.runners:
        lines += ["", "median latency"]
        lines += _table(
            ["runner", view.before, view.after, "change"],
            [
                [t.name, _timed(t.before, t.status_before), _timed(t.after, t.status_after), t.change]
                for t in view.runners
            ],
        )
    return "\n".join(lines).translate(_ASCII) + "\n"


def _timed(value: str, status: str) -> str:
    return value if status in ("ok", "executed", "") else f"{value} ({status})"
