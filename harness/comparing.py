"""The compare stage's work, shared by the pipeline and `harness compare` (which runs no model)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from harness.tolerances import ToleranceOverrides
from models.core.errors import UsageError
from models.recipe import Tolerance


def tolerance_resolver(
    recipe_json: Mapping[str, Any], overrides: ToleranceOverrides, precision: str = "fp32"
) -> Callable[[str], Tolerance]:
    """Per-output tolerance: command-line override, else the recipe's tolerance for a reduced precision,
    else its per-output value, else its default."""
    default = Tolerance(**recipe_json["default_tolerance"])
    per_output = {name: Tolerance(**tol) for name, tol in recipe_json.get("tolerances", {}).items()}
    per_precision = recipe_json.get("precision_tolerances", {})

    def tolerance_for(output: str) -> Tolerance:
        if precision in per_precision:
            return overrides.apply(output, Tolerance(**per_precision[precision]))
        return overrides.apply(output, per_output.get(output, default))

    return tolerance_for


def iterate_saved_outputs(paths: Mapping[str, Path]) -> Iterator[dict[str, dict[str, Any]]]:
    """Yield, sample by sample, {backend: {output: array}} from saved Polygraphy RunResults files."""
    from polygraphy.comparator.struct import RunResults
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.WARNING  # one "[I] Loading ..." line per file is noise here
    streams = {name: RunResults.load_streaming(str(path)) for name, path in paths.items()}
    while True:
        sample: dict[str, dict[str, Any]] = {}
        for name, stream in streams.items():
            step = next(stream, None)
            if step is None:
                return
            ((_, iterations),) = step.items()
            sample[name] = {
                output: array.load() if hasattr(array, "load") else array
                for output, array in iterations[0].items()
            }
        yield sample


def compare_saved_outputs(
    recipe_json: Mapping[str, Any],
    outputs: Mapping[str, Path],
    pairs: list[tuple[str, str]],
    tolerance_for: Callable[[str], Tolerance],
    *,
    with_crossmatch: bool = False,
) -> dict[str, Any]:
    """Compare the given (reference, candidate) runner pairs by output name, streaming over samples;
    optionally cross-match outputs to catch mislabelling, and accumulate error heatmaps."""
    from harness.comparison import compare_runs
    from harness.crossmatch import cross_match
    from harness.heatmap import ErrorHeatmap

    first_samples: list[dict[str, dict[str, Any]]] = []
    heatmaps = {
        (output, ref, cand): ErrorHeatmap(tuple(axes))
        for output, axes in recipe_json.get("spatial_axes", {}).items()
        for ref, cand in pairs
    }

    def samples() -> Iterator[dict[str, dict[str, Any]]]:
        for sample in iterate_saved_outputs(outputs):
            if not first_samples:
                first_samples.append(sample)
            for (output, ref, cand), heatmap in heatmaps.items():
                if output in sample[ref] and output in sample[cand]:
                    heatmap.update(sample[ref][output], sample[cand][output])
            yield sample

    report = compare_runs(
        samples(), pairs=pairs, tolerance_for=tolerance_for, class_axes=recipe_json.get("class_axes", {})
    )
    result: dict[str, Any] = report.to_json()
    if with_crossmatch:
        result["crossmatch"] = [
            cross_match(
                first_samples[0][ref], first_samples[0][cand], ref_backend=ref, cand_backend=cand
            ).to_json()
            for ref, cand in pairs
        ]
    result["heatmaps"] = {}
    for (output, ref, cand), heatmap in heatmaps.items():
        if heatmap.samples:
            result["heatmaps"].setdefault(output, {})[f"{ref}-{cand}"] = heatmap.to_json()
    return result


def comparison_groups(run_details: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Which runner pairs to compare on which sample set, at which precision.

    FP32: every pair of FP32 runners, on every sample set they ran. A reduced precision P: the FP32
    Torch reference against each P runner, and the P runners against each other, on the samples.
    """
    from harness.comparison import default_pairs
    from harness.pipeline import SAMPLES

    runners = {name: info for name, info in run_details.get("backends", {}).items() if info.get("executed")}
    groups = []
    sample_sets = run_details.get("sample_sets", {SAMPLES: {}})
    for sample_set in sample_sets:
        fp32 = [
            n
            for n, i in runners.items()
            if i["precision"] == "fp32" and sample_set in i.get("sample_sets", [SAMPLES])
        ]
        if len(fp32) >= 2:
            groups.append({"sample_set": sample_set, "precision": "fp32", "pairs": default_pairs(fp32)})
    precisions = sorted({i["precision"] for i in runners.values()} - {"fp32"})
    for precision in precisions:
        variant = [n for n, i in runners.items() if i["precision"] == precision]
        pairs = [("torch", v) for v in variant if "torch" in runners]
        pairs += [(a, b) for i, a in enumerate(variant) for b in variant[i + 1 :]]
        if pairs:
            groups.append({"sample_set": SAMPLES, "precision": precision, "pairs": pairs})
    return groups


def compare_run_outputs(
    recipe_json: Mapping[str, Any],
    run_details: Mapping[str, Any],
    paths: Mapping[str, Path],
    overrides: ToleranceOverrides,
) -> dict[str, Any]:
    """Every comparison group of a run; comparisons are tagged with their sample set and precision."""
    from harness.pipeline import SAMPLES, artifact_key
    from models.core.errors import HarnessError

    groups = comparison_groups(run_details)
    if not groups:
        executed = [n for n, i in run_details.get("backends", {}).items() if i.get("executed")]
        from harness.ledger import StageSkipped

        raise StageSkipped(f"fewer than two backends executed ({', '.join(executed) or 'none'})")
    details: dict[str, Any] = {
        "comparisons": [],
        "missing": [],
        "crossmatch": [],
        "heatmaps": {},
        "groups": [],
    }
    for group in groups:
        sample_set, precision = group["sample_set"], group["precision"]
        runners = sorted({r for pair in group["pairs"] for r in pair})
        try:
            outputs = {r: paths[artifact_key(r, sample_set)] for r in runners}
        except KeyError as e:
            raise HarnessError(f"saved outputs {e} are missing from the run; re-run `harness convert`") from e
        primary = sample_set == SAMPLES and precision == "fp32"
        result = compare_saved_outputs(
            recipe_json,
            outputs,
            group["pairs"],
            tolerance_resolver(recipe_json, overrides, precision),
            with_crossmatch=primary,
        )
        tags = {"sample_set": sample_set, "precision": precision}
        details["comparisons"] += [{**c, **tags} for c in result["comparisons"]]
        details["missing"] += [{**m, **tags} for m in result["missing"]]
        details["groups"].append(
            {**tags, "pairs": [list(p) for p in group["pairs"]], "samples": result["samples"]}
        )
        if primary:
            details["crossmatch"] = result["crossmatch"]
            details["heatmaps"] = result["heatmaps"]
    details["passed"] = all(c["passed"] for c in details["comparisons"]) and not details["missing"]
    details["tolerances"] = {
        c["output"]: c["tolerance"] for c in details["comparisons"] if c["precision"] == "fp32"
    }
    from harness.detections import compare_run_detections

    details["detections"] = compare_run_detections(recipe_json, run_details, paths)
    return details


def recompare_run(run_dir: Path, overrides: ToleranceOverrides) -> dict[str, Any]:
    """Re-run comparison, verdict and reports of a finished run from its saved outputs."""
    from harness.pipeline import write_results
    from harness.verdict import verdict_for

    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise UsageError(
            f"{results_path} not found: run `harness convert <recipe>` first, or pass a run directory"
        )
    try:
        results = json.loads(results_path.read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"{results_path} is not valid JSON ({e}); re-run `harness convert`") from e
    unknown = overrides.unknown_outputs(results["recipe"]["output_names"])
    if unknown:
        raise UsageError(
            f"tolerance given for unknown output(s) {unknown}; outputs: {results['recipe']['output_names']}"
        )
    stages = {s["name"]: s for s in results["stages"]}
    run_stage, compare = stages.get("run", {}), stages.get("compare")
    if compare is None or run_stage.get("status") not in ("ok", "cached"):
        raise UsageError(f"{run_dir}: the run did not get as far as running the backends; nothing to compare")
    from models.core.artifacts import Artifact

    paths = {}
    for key, recorded in run_stage["artifacts"].items():
        if key.startswith("outputs_"):
            paths[key] = Artifact(
                run_dir / recorded["path"], recorded["sha256"], recorded["size_bytes"]
            ).verified()
    from harness.ledger import StageSkipped

    try:
        compare["details"] = compare_run_outputs(results["recipe"], run_stage["details"], paths, overrides)
    except StageSkipped as e:
        raise UsageError(f"{run_dir}: {e}") from e
    compare["status"], compare["reason"] = "ok", None
    results["overrides"] = overrides.to_json()
    results["verdict"] = verdict_for(results)
    write_results(results, run_dir)
    return results
