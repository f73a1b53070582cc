"""Benchmark 3: comparison throughput of ours (`harness.comparison.compare_runs`) vs Polygraphy's
`Comparator.compare_accuracy` with `SimpleCompareFunc` (what `CompareFunc.simple` builds), on the same
saved outputs, backend pair and per-output tolerances, in MB (10^6 bytes) of both sides' arrays
compared per second.

The arrays are decoded once, before timing; the two are timed in interleaved repeats. Polygraphy's
logging is silenced while it is timed, but it still computes the statistics it would log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from trt_harness.harness.bench.base import (
    BenchResult,
    BenchSettings,
    Table,
    Target,
    fmt_ratio,
    fmt_seconds,
    median,
    ratio,
    register_benchmark,
)
from trt_harness.harness.bench.convert import ensure_run, saved_outputs_pair
from trt_harness.harness.comparison import compare_runs
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.core.serde import to_json
from trt_harness.models.recipe import Tolerance
from trt_harness.models.recipes import get_recipe

TITLE = "Comparison throughput: ours vs Polygraphy"
SPEEDUP_LIMIT = 3.0  # ours at least 3x Polygraphy's MB/s
MB = 1e6

OURS_STATISTICS = (
    "abs error: max, min, mean, std, median and tolerance quantile (histogram estimates, within 12.5%)",
    "rel error: max, mean, median and tolerance quantile (histogram estimates)",
    "RMSE, cosine similarity",
    "elements beyond atol + rtol*|ref| (exact count)",
    "NaN/Inf counts per side and non-finite mismatches",
    "the 10 worst elements with their indices and values",
    "abs and rel error histograms (8 bins per power of two)",
    "argmax agreement where the recipe names a class axis",
    "streaming: memory constant in the number of samples",
)
POLYGRAPHY_STATISTICS = (
    "abs and rel diff: min, max, mean, exact median (quantile when checked)",
    "per-element mismatch mask (elemwise check)",
    "for the log, computed even when silenced: mean, std, variance, median, min/argmin, max/argmax, "
    "mean magnitude, p90/p95/p99 of abs diff, rel diff and both outputs",
)

Samples = list[dict[str, dict[str, np.ndarray]]]


def load_samples(folders: Mapping[str, Iterable[Mapping[str, np.ndarray]]], count: int) -> Samples:
    """`count` samples {runner: outputs} from each runner's saved outputs (one file per sample), decoded;
    the saved samples repeat in turn (shared, not copied)."""
    runners = list(folders)
    per_runner = [list(folders[name]) for name in runners]
    lengths = {name: len(outputs) for name, outputs in zip(runners, per_runner, strict=True)}
    if len(set(lengths.values())) != 1 or not per_runner[0]:
        raise HarnessError(f"the runners saved different numbers of samples or none: {lengths}")
    saved = [
        {name: dict(outputs) for name, outputs in zip(runners, sample, strict=True)}
        for sample in zip(*per_runner, strict=True)
    ]
    return [saved[i % len(saved)] for i in range(count)]


def sample_bytes(samples: Samples, pair: tuple[str, str]) -> int:
    return sum(array.nbytes for sample in samples for backend in pair for array in sample[backend].values())


def run_ours(
    samples: Samples,
    pair: tuple[str, str],
    tolerance_for: Callable[[str], Tolerance],
    class_axes: Mapping[str, int],
) -> bool:
    return compare_runs(
        iter(samples), pairs=[pair], tolerance_for=tolerance_for, class_axes=class_axes
    ).passed


def polygraphy_inputs(
    samples: Samples, pair: tuple[str, str], tolerance_for: Callable[[str], Tolerance]
) -> tuple[Any, Any]:
    """Polygraphy's RunResults of the pair, and its simple compare function with our per-output tolerances."""
    # polygraphy: heavy, and imported only after the TensorRT flavor is chosen (harness.cli does)
    from polygraphy.comparator import SimpleCompareFunc
    from polygraphy.comparator.struct import IterationResult, RunResults

    results = RunResults()
    for backend in pair:
        results.append((backend, [IterationResult(dict(s[backend]), runner_name=backend) for s in samples]))
    tolerances = {name: tolerance_for(name) for name in samples[0][pair[0]]}
    compare_func = SimpleCompareFunc(  # what CompareFunc.simple (deprecated in 0.53) builds
        atol={name: t.atol for name, t in tolerances.items()},
        rtol={name: t.rtol for name, t in tolerances.items()},
        check_error_stat={name: t.check for name, t in tolerances.items()},
        error_quantile={name: t.quantile for name, t in tolerances.items()},
    )
    return results, compare_func


def run_polygraphy(run_results: Any, compare_func: Any) -> bool:
    from polygraphy.comparator import Comparator  # as in polygraphy_inputs

    return bool(Comparator.compare_accuracy(run_results, compare_func=compare_func))


def measure_throughput(
    samples: Samples,
    pair: tuple[str, str],
    tolerance_for: Callable[[str], Tolerance],
    class_axes: Mapping[str, int],
    *,
    repeats: int,
) -> dict[str, Any]:
    """Seconds per pass over all samples for each implementation, medians and MB/s."""
    from polygraphy.logger import G_LOGGER  # as in polygraphy_inputs

    run_results, compare_func = polygraphy_inputs(samples, pair, tolerance_for)
    seconds: dict[str, list[float]] = {"ours": [], "polygraphy": []}
    verdicts: dict[str, bool] = {}
    previous_severity = G_LOGGER.module_severity
    G_LOGGER.module_severity = G_LOGGER.CRITICAL
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            verdicts["ours"] = run_ours(samples, pair, tolerance_for, class_axes)
            seconds["ours"].append(time.perf_counter() - start)
            start = time.perf_counter()
            verdicts["polygraphy"] = run_polygraphy(run_results, compare_func)
            seconds["polygraphy"].append(time.perf_counter() - start)
    finally:
        G_LOGGER.module_severity = previous_severity
    total_bytes = sample_bytes(samples, pair)
    medians = {name: median(xs) for name, xs in seconds.items()}
    throughput = {name: total_bytes / MB / s for name, s in medians.items()}
    return {
        "pair": list(pair),
        "samples": len(samples),
        "bytes_per_pass": total_bytes,
        "repeats": repeats,
        "tolerances": {name: to_json(tolerance_for(name)) for name in samples[0][pair[0]]},
        "seconds": seconds,
        "median_s": medians,
        "mb_per_s": throughput,
        "speedup": ratio(throughput["ours"], throughput["polygraphy"]),
        "passed": verdicts,
        "statistics": {"ours": list(OURS_STATISTICS), "polygraphy": list(POLYGRAPHY_STATISTICS)},
    }


@register_benchmark("comparison", TITLE, rank=2)
def comparison_benchmark(settings: BenchSettings) -> BenchResult:
    run_dir = ensure_run(settings)
    recipe = get_recipe(settings.recipe, **settings.params)
    folders = saved_outputs_pair(run_dir)
    pair = (*folders,)
    samples = load_samples(folders, settings.compare_samples)
    data = measure_throughput(
        samples, pair, recipe.tolerance_for, recipe.class_axes, repeats=settings.compare_repeats
    )
    data["distinct_samples"] = len({id(s) for s in samples})
    shapes = {name: list(a.shape) for name, a in samples[0][pair[0]].items()}
    table = Table(
        caption=(
            f"{pair[0]} vs {pair[1]}, {data['samples']} samples "
            f"({data['distinct_samples']} saved ones repeated), "
            f"outputs {shapes}, {data['bytes_per_pass'] / MB:.1f} MB per pass (both sides); "
            f"median of {data['repeats']} interleaved passes"
        ),
        header=("implementation", "median per pass", "MB/s", "verdict", "computes"),
        rows=tuple(
            (
                name,
                fmt_seconds(data["median_s"][name]),
                f"{data['mb_per_s'][name]:.0f}",
                "pass" if data["passed"][name] else "fail",
                "; ".join(data["statistics"][name]),
            )
            for name in ("ours", "polygraphy")
        ),
    )
    notes = (f"speed-up (ours / Polygraphy MB/s): {fmt_ratio(data['speedup'])}",)
    if data["passed"]["ours"] != data["passed"]["polygraphy"]:
        notes += (
            "the verdicts differ: Polygraphy divides by |candidate| for the relative error and ORs the "
            "abs and rel checks per element; ours uses atol + rtol*|reference|",
        )
    target = Target("comparison", "ours / Polygraphy MB/s", data["speedup"], SPEEDUP_LIMIT, ">=")
    return BenchResult("comparison", TITLE, data, (target,), (table,), notes)
