"""Write the human and machine reports of one run from its saved results (no torch, no TensorRT).

`report.html` is one self-contained file (inline CSS and SVG, no script, no external resource);
`junit.xml` gives CI one test case per output and backend pair.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from harness.artifacts import write_text_atomic
from reports import formatting

TEMPLATES = Path(__file__).parent / "templates"


@functools.cache
def environment() -> Any:
    """The Jinja environment of every report template (autoescaped: every name comes from a model)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = formatting.number
    env.filters["sci"] = formatting.sci
    env.filters["size"] = formatting.size
    env.filters["duration"] = formatting.duration
    return env


def render_html(results: dict[str, Any], run_dir: Path | None = None) -> str:
    """The HTML report of `results`; images the run saved (detections) are drawn from `run_dir`."""
    from reports.view import ReportView

    return environment().get_template("report.html.j2").render(view=ReportView(results, run_dir))


def write_reports(results: dict[str, Any], out_dir: Path) -> None:
    """Write report.html and junit.xml of `results` into `out_dir`."""
    from reports.junit import write_junit

    write_text_atomic(out_dir / "report.html", render_html(results, out_dir))
    write_junit(results, out_dir / "junit.xml")
