"""Write the human and machine reports of one run from its saved results (no torch, no TensorRT).

`report.html` is one self-contained file (inline CSS and SVG, no script, no external resource);
`junit.xml` gives CI one test case per output and backend pair.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2
from trt_harness.models.core.artifacts import write_text_atomic
from trt_harness.models.results.document import Results
from trt_harness.reports import formatting
from trt_harness.reports.junit import junit_xml
from trt_harness.reports.page import ReportView

TEMPLATES = Path(__file__).parent / "templates"


@functools.cache
def environment() -> jinja2.Environment:
    """The Jinja environment of every report template (autoescaped: every name comes from a model)."""
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


def render_html(results: Results, run_dir: Path | None = None) -> str:
    """The HTML report of `results`; images the run saved (detections) are drawn from `run_dir`."""
    return environment().get_template("report.html.j2").render(view=ReportView(results, run_dir))


def write_reports(results: Results, out_dir: Path) -> None:
    """Write report.html and junit.xml of `results` into `out_dir`."""
    write_text_atomic(out_dir / "report.html", render_html(results, out_dir))
    write_text_atomic(out_dir / "junit.xml", junit_xml(results))
