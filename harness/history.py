"""`harness convert --history DIR`: the compact record of a finished run, appended to DIR/history.jsonl.

The record's `key` says which model the run was of (recipe, parameters, the weights file's hash), its
`environment_fingerprint` under which versions; the index page draws each output's error over the
records of one key and marks where the fingerprint changed (`reports.trend`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from trt_harness.models.core.artifacts import sha256_file
from trt_harness.models.core.errors import UsageError
from trt_harness.models.core.serde import to_json
from trt_harness.models.results.document import Environment, Results
from trt_harness.models.results.history import (
    HISTORY_FILE,
    HistoryPoint,
    HistoryRecord,
    append_record,
    read_history,
)
from trt_harness.models.results.stages import CompareDetails, RunDetails


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(to_json(value), sort_keys=True).encode()).hexdigest()


def model_key(recipe: str, params: Any, weights_sha256: str | None) -> str:
    return _hash({"recipe": recipe, "params": params, "weights": weights_sha256})


def environment_fingerprint(environment: Environment) -> str:
    return _hash(environment)


def history_file(directory: Path) -> Path:
    return Path(directory) / HISTORY_FILE


def check_history(directory: Path) -> Path:
    """The history file of `--history DIR`, read once up front: a bad one is a usage error before any
    stage runs (naming the file and line), not after the run."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--history {directory}: not a folder; give the folder that holds {HISTORY_FILE}")
    path = history_file(directory)
    read_history(path)
    return path


def record_of(results: Results, weights: Path | None = None, run_dir: Path | None = None) -> HistoryRecord:
    """The history record of a run; `weights` is the file the run was given (None: the recipe's own)."""
    weights_sha256 = sha256_file(weights) if weights is not None else None
    run = results.details(RunDetails)
    names = {n: r.display_name for n, r in run.runners.items()} if run else {}
    compare = results.details(CompareDetails)
    points = tuple(
        HistoryPoint(
            output=c.output,
            ref_backend=c.ref_backend,
            cand_backend=c.cand_backend,
            sample_set=c.sample_set,
            precision=c.precision,
            passed=c.passed,
            max_abs_err=c.max_abs_err,
            quantile_abs_err=c.quantile_abs_err,
            quantile=c.tolerance.quantile,
            mean_abs_err=c.mean_abs_err,
            cosine_similarity=c.cosine_similarity,
            atol=c.tolerance.atol,
            rtol=c.tolerance.rtol,
            ref_display=names.get(c.ref_backend, c.ref_backend),
            cand_display=names.get(c.cand_backend, c.cand_backend),
        )
        for c in (compare.comparisons if compare else ())
    )
    params = dict(results.recipe.params)
    return HistoryRecord(
        key=model_key(results.recipe.name, params, weights_sha256),
        recipe=results.recipe.name,
        params=params,
        weights_sha256=weights_sha256,
        environment_fingerprint=environment_fingerprint(results.environment),
        environment=results.environment,
        run_id=results.run_id,
        created_unix=results.created_unix,
        exit_code=results.verdict.exit_code,
        status=results.verdict.status,
        points=points,
        run_dir=str(run_dir) if run_dir is not None else "",
    )


def append_run(
    directory: Path, results: Results, weights: Path | None = None, run_dir: Path | None = None
) -> Path:
    """Append the run's record to DIR/history.jsonl and return that file."""
    path = history_file(directory)
    append_record(path, record_of(results, weights, run_dir))
    return path
