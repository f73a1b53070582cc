"""The index page over every run in an artifacts folder (one row per recipe run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.artifacts import write_text_atomic


def collect_runs(artifacts: Path) -> list[dict[str, Any]]:
    runs = []
    for results_path in sorted(artifacts.glob("*/results.json")):
        try:
            results = json.loads(results_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            runs.append({"dir": results_path.parent.name, "error": f"unreadable results.json: {e}"})
            continue
        runs.append({"dir": results_path.parent.name, "results": results})
    return runs


def write_index(artifacts: Path) -> Path:
    from reports.render import _environment

    html = _environment().get_template("index.html.j2").render(runs=collect_runs(artifacts))
    path = artifacts / "index.html"
    write_text_atomic(path, html)
    return path
