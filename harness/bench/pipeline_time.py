"""Benchmark 1: wall time of `harness convert`, cold (empty cache), warm (nothing changed) and after
changing only a tolerance, with every stage's duration and status from the run's ledger."""

from __future__ import annotations

import shlex
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence

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
from trt_harness.harness.bench.convert import ConvertRun, convert_command, run_convert
from trt_harness.harness.cache import StageCache
from trt_harness.harness.pipeline import STAGES

WARM_LIMIT = 0.10  # a warm run takes at most 10% of a cold run's wall time
COMPARE_STAGE = "compare"
PHASES = ("cold", "warm", "tolerance_change")
TITLE = "`harness convert`: cold, warm, tolerance change"


def time_convert_runs(settings: BenchSettings) -> dict[str, list[ConvertRun]]:
    """Cold runs (cache and run folder emptied before each), then warm runs, then tolerance-change runs."""
    cold = []
    for _ in range(settings.cold_runs):
        shutil.rmtree(settings.cache_dir, ignore_errors=True)
        shutil.rmtree(settings.run_dir, ignore_errors=True)
        cold.append(run_convert(settings))
    warm = [run_convert(settings) for _ in range(settings.warm_runs)]
    changed = []
    for _ in range(settings.warm_runs):
        # each repeat is the first run with the new tolerance, as a user changing it would see
        StageCache(settings.cache_dir).clean([COMPARE_STAGE])
        changed.append(run_convert(settings, "--atol", settings.tolerance_change))
    return {"cold": cold, "warm": warm, "tolerance_change": changed}


def expected_statuses(cold: ConvertRun, rerun: Sequence[str] = ()) -> dict[str, str]:
    """What a later run must show: stages that ran cold come from the cache unless listed in `rerun`
    or never cached (no key, e.g. samples); skipped stages are never cached, so they stay skipped."""
    uncached = {stage.name for stage in STAGES if stage.key is None}
    return {
        s.name: ("ok" if s.name in rerun or s.name in uncached else "cached")
        if s.status == "ok"
        else s.status
        for s in cold.stages
    }


def unexpected_statuses(runs: Sequence[ConvertRun], expected: Mapping[str, str]) -> list[str]:
    return [
        f"run {i + 1}: {s.name} {s.status}, expected {expected.get(s.name, 'no such stage')}"
        for i, run in enumerate(runs)
        for s in run.stages
        if s.status != expected.get(s.name)
    ]


def _median_stage(runs: Sequence[ConvertRun], stage: str) -> float | None:
    durations = [s.duration_s for run in runs for s in run.stages if s.name == stage]
    return median(durations) if durations else None


def _statuses(runs: Sequence[ConvertRun], stage: str) -> str:
    counts = Counter(s.status for run in runs for s in run.stages if s.name == stage)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{status}×{n}" for status, n in counts.most_common())


def _runs(count: int) -> str:
    return "1 run" if count == 1 else f"median of {count} runs"


@register_benchmark("pipeline", TITLE, rank=0)
def pipeline_benchmark(settings: BenchSettings) -> BenchResult:
    runs = time_convert_runs(settings)
    cold_reference = runs["cold"][0]
    stage_names = [s.name for s in cold_reference.stages]
    wall = {phase: median([r.wall_s for r in runs[phase]]) if runs[phase] else None for phase in PHASES}
    ratios = {
        "warm_over_cold": ratio(wall["warm"], wall["cold"]),
        "tolerance_change_over_cold": ratio(wall["tolerance_change"], wall["cold"]),
    }
    unexpected = {
        "warm": unexpected_statuses(runs["warm"], expected_statuses(cold_reference)),
        "tolerance_change": unexpected_statuses(
            runs["tolerance_change"], expected_statuses(cold_reference, rerun=(COMPARE_STAGE,))
        ),
    }
    counts = {phase: len(runs[phase]) for phase in PHASES}
    data = {
        "command": shlex.join(convert_command(settings)),
        "tolerance_change_args": ["--atol", settings.tolerance_change],
        "cache_dir": str(settings.cache_dir),
        "runs_per_phase": counts,
        "runs": {phase: [r.to_json() for r in runs[phase]] for phase in PHASES},
        "median_wall_s": wall,
        "median_stage_s": {
            phase: {n: _median_stage(runs[phase], n) for n in stage_names} for phase in PHASES
        },
        "ratios": ratios,
        "unexpected_statuses": unexpected,
    }
    rows = [
        (name, *(f"{fmt_seconds(_median_stage(runs[p], name))} ({_statuses(runs[p], name)})" for p in PHASES))
        for name in stage_names
    ]
    rows.append(
        (
            "outside stages (start-up, imports, report)",
            *(fmt_seconds(median([r.outside_stages_s for r in runs[p]])) for p in PHASES),
        )
    )
    rows.append(("**process wall time**", *(f"**{fmt_seconds(wall[p])}**" for p in PHASES)))
    rows.append(
        (
            "ratio to cold",
            "1",
            fmt_ratio(ratios["warm_over_cold"]),
            fmt_ratio(ratios["tolerance_change_over_cold"]),
        )
    )
    table = Table(
        caption=(
            f"`{data['command']}` in a fresh process each time; cold (cache emptied before each): "
            f"{_runs(counts['cold'])}; warm: {_runs(counts['warm'])}; tolerance change "
            f"(`--atol {settings.tolerance_change}`, its compare entry removed before each): "
            f"{_runs(counts['tolerance_change'])}. Durations are medians; statuses from every run"
        ),
        header=("stage", "cold", "warm", "tolerance change"),
        rows=tuple(rows),
    )
    targets = (
        Target("pipeline", "warm wall / cold wall", ratios["warm_over_cold"], WARM_LIMIT, "<="),
        Target(
            "pipeline",
            "warm: stages not served from the cache",
            len(unexpected["warm"]),
            0,
            "<=",
            "; ".join(unexpected["warm"]),
        ),
        Target(
            "pipeline",
            f"tolerance change: stages other than {COMPARE_STAGE} re-run (or {COMPARE_STAGE} not)",
            len(unexpected["tolerance_change"]),
            0,
            "<=",
            "; ".join(unexpected["tolerance_change"]),
        ),
    )
    notes = ()
    if unexpected["warm"] or unexpected["tolerance_change"]:
        notes = (
            "a stage re-ran although its inputs did not change for this benchmark: its cache key did, e.g. "
            "because source files it hashes (models/, conversions/, harness/) were edited meanwhile, or the "
            "cache has a bug; see unexpected_statuses in bench.json",
        )
    return BenchResult("pipeline", TITLE, data, targets, (table,), notes)
