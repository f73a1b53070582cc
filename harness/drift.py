"""Drift between runs of one model under other versions (`harness index DIR --drift`; `nox -s
version-matrix` writes such a folder): `harness diff` of the first run against each later one.

Runs are the finished `*/results.json` under DIR, grouped by recipe, parameters and weights; within a
group the earliest run (by its creation time; the version matrix runs its versions oldest first) is
the reference. Unreadable or unfinished runs are left to the index's run table, which names them.
"""

from __future__ import annotations

import json
from pathlib import Path

from trt_harness.harness.diff import diff_runs
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.core.serde import to_json
from trt_harness.models.results.diff import RunDiff
from trt_harness.models.results.document import UNFINISHED, Results, load_results


def _model(results: Results) -> str:
    recipe = results.recipe
    return json.dumps(to_json({"r": recipe.name, "p": recipe.params, "w": recipe.weights}), sort_keys=True)


def finished_runs(artifacts: Path) -> list[tuple[str, Results]]:
    runs = []
    for path in sorted(Path(artifacts).glob("*/results.json")):
        try:
            results = load_results(path)
        except HarnessError:
            continue
        if results.verdict.status != UNFINISHED.status:
            runs.append((path.parent.name, results))
    return runs


def drift_diffs(runs: list[tuple[str, Results]]) -> tuple[RunDiff, ...]:
    """For each model with two runs or more: its earliest run diffed against each of the others."""
    groups: dict[str, list[tuple[str, Results]]] = {}
    for name, results in runs:
        groups.setdefault(_model(results), []).append((name, results))
    diffs = []
    for members in groups.values():
        members.sort(key=lambda m: m[1].created_unix)
        (ref_name, reference), *others = members
        diffs += [diff_runs(reference, results, sources=(ref_name, name)) for name, results in others]
    return tuple(diffs)
