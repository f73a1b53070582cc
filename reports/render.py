"""Write the human and machine reports of one run from its saved results (no torch, no TensorRT)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from harness.artifacts import write_text_atomic

TEMPLATES = Path(__file__).parent / "templates"


@functools.cache
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every name in a report comes from a model: always escape
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = format_number
    env.filters["bytes"] = format_bytes
    return env


def format_number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if value != value:
            return "NaN"
        magnitude = abs(value)
        return f"{value:.3g}" if 1e-3 <= magnitude < 1e4 else f"{value:.2e}"
    return str(value)


def format_bytes(value: int | None) -> str:
    if value is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def render_html(results: dict[str, Any]) -> str:
    from reports.view import ReportView

    return _environment().get_template("report.html.j2").render(view=ReportView(results))


def write_reports(results: dict[str, Any], out_dir: Path) -> None:
    write_text_atomic(out_dir / "report.html", render_html(results))
