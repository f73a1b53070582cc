"""The compare stage's work, shared by the pipeline and `harness compare` (which runs no model)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.tolerances import ToleranceOverrides
from models.recipe import Tolerance


def tolerance_resolver(recipe_json: Mapping[str, Any], overrides: ToleranceOverrides) -> Callable[[str], Tolerance]:
    """Per-output tolerance: command-line override, else the recipe's per-output value, else its default."""
    default = Tolerance(**recipe_json["default_tolerance"])
    per_output = {name: Tolerance(**tol) for name, tol in recipe_json.get("tolerances", {}).items()}

    def tolerance_for(output: str) -> Tolerance:
        return overrides.apply(output, per_output.get(output, default))

    return tolerance_for


def iterate_saved_outputs(paths: Mapping[str, Path]) -> Iterator[dict[str, dict[str, Any]]]:
    """Yield, sample by sample, {backend: {output: array}} from saved Polygraphy RunResults files."""
    from polygraphy.comparator.struct import RunResults

    streams = {name: RunResults.load_streaming(str(path)) for name, path in paths.items()}
    while True:
        sample: dict[str, dict[str, Any]] = {}
        for name, stream in streams.items():
            step = next(stream, None)
            if step is None:
                return
            ((_, iterations),) = step.items()
            sample[name] = {output: array.load() if hasattr(array, "load") else array for output, array in iterations[0].items()}
        yield sample


def compare_saved_outputs(
    recipe_json: Mapping[str, Any], outputs: Mapping[str, Path], overrides: ToleranceOverrides
) -> dict[str, Any]:
    """Compare every executed backend pair by output name, and cross-match outputs to catch mislabelling."""
    from harness.comparison import compare_runs, default_pairs
    from harness.crossmatch import cross_match

    tolerance_for = tolerance_resolver(recipe_json, overrides)
    pairs = default_pairs(outputs)
    first_samples: list[dict[str, dict[str, Any]]] = []

    def samples() -> Iterator[dict[str, dict[str, Any]]]:
        for sample in iterate_saved_outputs(outputs):
            if not first_samples:
                first_samples.append(sample)
            yield sample

    report = compare_runs(
        samples(), pairs=pairs, tolerance_for=tolerance_for, class_axes=recipe_json.get("class_axes", {})
    )
    crossmatches = [
        cross_match(first_samples[0][ref], first_samples[0][cand], ref_backend=ref, cand_backend=cand).to_json()
        for ref, cand in pairs
    ]
    return {
        **report.to_json(),
        "crossmatch": crossmatches,
        "tolerances": {c.output: c.tolerance.to_json() for c in report.comparisons},
    }


def recompare_run(run_dir: Path, overrides: ToleranceOverrides) -> dict[str, Any]:
    """Re-run comparison, verdict and reports of a finished run from its saved outputs."""
    from harness.pipeline import write_results
    from harness.verdict import verdict_for

    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise UsageError(f"{results_path} not found: run `harness convert <recipe>` first, or pass a run directory")
    try:
        results = json.loads(results_path.read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"{results_path} is not valid JSON ({e}); re-run `harness convert`") from e
    unknown = overrides.unknown_outputs(results["recipe"]["output_names"])
    if unknown:
        raise UsageError(f"tolerance given for unknown output(s) {unknown}; outputs: {results['recipe']['output_names']}")
    stages = {s["name"]: s for s in results["stages"]}
    run_stage = stages.get("run", {})
    executed = {
        name: run_dir / run_stage["artifacts"][f"outputs_{name}"]["path"]
        for name, info in run_stage.get("details", {}).get("backends", {}).items()
        if info["executed"]
    }
    compare = stages.get("compare")
    if compare is None or len(executed) < 2:
        raise UsageError(f"{run_dir}: the run has fewer than two executed backends' outputs to compare")
    from harness.artifacts import Artifact

    for name, path in executed.items():
        recorded = run_stage["artifacts"][f"outputs_{name}"]
        Artifact(path, recorded["sha256"], recorded["size_bytes"]).verified()
    compare["details"] = compare_saved_outputs(results["recipe"], executed, overrides)
    compare["status"], compare["reason"] = "ok", None
    results["overrides"] = overrides.to_json()
    results["verdict"] = verdict_for(results)
    write_results(results, run_dir)
    return results
