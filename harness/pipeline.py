"""recipe -> samples -> scan -> export -> surgery -> precision -> build -> run -> compare -> report.

The driver runs the stages of `harness.stages` in order. Each receives the ledger entries of the
stages before it (files with hashes, typed details) and returns what it wrote; each writes one ledger
entry. The first failure stops the run (except a stage that keeps going: a failed TensorRT build
leaves the other backends to run and compare), but results.json and the report are always written.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import time
import traceback
from pathlib import Path
from typing import Any, Protocol

from trt_harness.conversions.tensorrt_flavor import select_flavor
from trt_harness.harness.cache import CacheEntry, StageCache, stable_hash
from trt_harness.harness.code_keys import code_hash, keep_parses_in, save_parses
from trt_harness.harness.diff import baseline_of_recipe, baseline_of_run, judge_against
from trt_harness.harness.environment import environment, with_recipe_packages
from trt_harness.harness.stages import build, compare, export, precision, run, samples, scan, surgery
from trt_harness.harness.stages.base import RunConfig, Stage, StageFailed, StageInput, StageSkipped
from trt_harness.harness.stages.localize import localize_run
from trt_harness.harness.verdict import verdict_for
from trt_harness.models.core.artifacts import PARTIAL_SUFFIX
from trt_harness.models.core.errors import ExitCode, HarnessError, Interrupted, UsageError
from trt_harness.models.recipe import Recipe
from trt_harness.models.results.document import UNFINISHED, Results, Verdict, load_results, save_results
from trt_harness.models.results.recipe import RecipeRecord, ToleranceOverrides
from trt_harness.models.results.stages import RunDetails, StageRecord
from trt_harness.reports.render import write_reports

__all__ = ["STAGES", "RunConfig", "localize_and_report", "rejudge", "run_pipeline"]

# the order stages run in: each reads only what the stages before it wrote
STAGES: tuple[Stage, ...] = (
    samples.STAGE,
    scan.STAGE,
    export.STAGE,
    surgery.STAGE,
    precision.STAGE,
    build.STAGE,
    run.STAGE,
    compare.STAGE,
)


class Progress(Protocol):
    def start(self, stage: Stage) -> None: ...
    def finish(self, stage: Stage, record: StageRecord) -> None: ...


def recipe_modules(recipe: Recipe) -> list[str]:
    """The modules whose code the recipe runs: where its model and its samples come from."""
    modules = []
    for fn in (recipe.build_model, recipe.sample_inputs):
        while isinstance(fn, functools.partial):
            fn = fn.func
        module = getattr(fn, "__module__", None)
        if module:
            modules.append(module)
    if recipe.origin is not None and recipe.origin.module:
        modules.append(recipe.origin.module)  # the factory's own module (a file or module outside)
    return list(dict.fromkeys(modules))


def stage_key(stage: Stage, inp: StageInput) -> str | None:
    """The stage's cache key: what it reads (its own `key`) and the code it runs, derived from imports."""
    if stage.key is None:
        return None
    modules = [stage.run.__module__]
    if stage.runs_recipe_code:
        modules += recipe_modules(inp.recipe)
    return stable_hash({"stage": stage.name, **stage.key(inp), "code": code_hash(*modules)})


def _run_stage(stage: Stage, inp: StageInput, cache: StageCache | None) -> StageRecord:
    """One stage, from the cache when its key is there; expected failures become ledger entries."""
    try:
        key = stage_key(stage, inp) if cache is not None else None
        entry = cache.lookup(stage.name, key) if cache is not None and key else None
        if entry is not None:
            assert cache is not None
            artifacts = cache.restore(entry, inp.run_dir)
            return StageRecord(
                stage.name, "cached", 0.0, f"cache entry {entry.key[:12]}", artifacts, entry.details
            )
        out = stage.run(inp)
        if cache is not None and key:
            cache.store(CacheEntry(stage.name, key, out.artifacts, out.details, out.reason), inp.run_dir)
        return StageRecord(stage.name, "ok", 0.0, out.reason, dict(out.artifacts), out.details)
    except StageSkipped as e:
        return StageRecord(stage.name, "skipped", reason=str(e))
    except StageFailed as e:
        return StageRecord(stage.name, "failed", reason=str(e), details=e.details)
    except HarnessError as e:
        if e.exit_code == ExitCode.USAGE_ERROR:
            raise
        return StageRecord(stage.name, "failed", reason=str(e))
    except OSError as e:
        if e.errno not in _DISK_ERRNOS:
            return _unexpected(stage, e)
        where = f" writing {e.filename}" if e.filename else ""
        return StageRecord(
            stage.name,
            "failed",
            reason=f"{e.strerror}{where}: free space or permissions in the run folder "
            f"{inp.run_dir} (or choose another --out), then run again",
        )
    except Exception as e:
        return _unexpected(stage, e)


_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _unexpected(stage: Stage, e: Exception) -> StageRecord:
    """A library failing in a way no stage anticipated: still a failed stage with a written report,
    the traceback kept in the ledger for the bug report."""
    return StageRecord(
        stage.name,
        "failed",
        reason=f"unexpected {type(e).__name__} in stage '{stage.name}': {e}",
        traceback=traceback.format_exc(limit=20),
    )


def run_pipeline(config: RunConfig, progress: Progress | None = None) -> Results:
    """Run every stage in order, write results.json and the report, and return the results."""
    select_flavor()  # before anything imports polygraphy.backend.trt
    from polygraphy.logger import G_LOGGER  # imported after the flavor is chosen (see select_flavor)

    G_LOGGER.module_severity = G_LOGGER.WARNING  # our ledger and report say what happened
    # a bad --baseline is a usage error before anything runs
    baseline = baseline_of_recipe(
        config.recipe, config.baseline, config.baseline_factor, config.baseline_floor
    )
    prepare_run_folder(config.out_dir)
    record = RecipeRecord.of(config.recipe, config.weights)
    env = environment()
    # until the run ends, the folder's results.json says it is unfinished: a run killed midway never
    # leaves an earlier run's results beside this run's files
    save_results(Results(record, env, (), UNFINISHED, config.overrides), config.out_dir)
    cache = StageCache(config.cache_dir) if config.cache_dir is not None else None
    if config.cache_dir is not None:
        keep_parses_in(config.cache_dir / PARSES_FILE)
    ledger: dict[str, StageRecord] = {}
    stopped: str | None = None  # why the remaining stages do not run
    interrupted: Interrupted | None = None
    for stage in STAGES:
        if stopped is not None:
            ledger[stage.name] = StageRecord(stage.name, "skipped", reason=f"not run: {stopped}")
            continue
        start = time.perf_counter()
        try:
            if progress is not None:
                progress.start(stage)
            inp = StageInput(
                config.out_dir, record, config.overrides, config.precisions_in_order, dict(ledger), config
            )
            entry = _run_stage(stage, inp, cache)
        except (KeyboardInterrupt, Interrupted) as e:
            interrupted = e if isinstance(e, Interrupted) else Interrupted("SIGINT", ExitCode.INTERRUPTED)
            interrupted.stage = stage.name
            entry = StageRecord(stage.name, "interrupted", reason=f"interrupted by {interrupted.signal_name}")
        entry = dataclasses.replace(entry, duration_s=time.perf_counter() - start)
        ledger[stage.name] = entry
        if entry.status == "failed" and not stage.keep_going:
            stopped = f"stage '{stage.name}' failed"
        elif entry.status == "interrupted":
            stopped = f"the run was interrupted in stage '{stage.name}'"
        if progress is not None:
            progress.finish(stage, entry)
    save_parses()
    stages = tuple(ledger.values())
    verdict = verdict_for(stages)
    if interrupted is not None:
        verdict = Verdict(
            int(interrupted.exit_code),
            interrupted.exit_code.name,
            f"interrupted by {interrupted.signal_name} in stage '{interrupted.stage}'",
        )
    # after the stages built the model: the libraries the recipe imported lazily are loaded now
    env = with_recipe_packages(env, config.recipe)
    results = Results(record, env, stages, verdict, config.overrides)
    if baseline is not None and interrupted is None:
        results = judge_against(results, baseline)
    write_results(results, config.out_dir)
    if interrupted is not None:
        raise interrupted
    return results


PARSES_FILE = ".code-key-parses.json"  # what each source file imports, to derive code keys fast


def prepare_run_folder(out_dir: Path) -> None:
    """Create the run folder, or a usage error naming it; remove what killed runs left half-written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test{PARTIAL_SUFFIX}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UsageError(
            f"--out {out_dir}: cannot write there ({e.strerror or e}); choose another folder"
        ) from None
    for leftover in out_dir.rglob(f".*{PARTIAL_SUFFIX}"):
        if leftover.is_file():  # only our temporary files (see models.core.artifacts.atomic_path)
            leftover.unlink(missing_ok=True)


def write_results(results: Results, out_dir: Path) -> None:
    save_results(results, out_dir)
    write_reports(results, out_dir)


def rejudge(
    run_dir: Path,
    overrides: ToleranceOverrides,
    baseline: Path | None = None,
    baseline_factor: float | None = None,
    baseline_floor: float | None = None,
) -> Results:
    """Re-run the comparison, verdict and reports of a finished run from its saved outputs (no model);
    gated on `baseline`, else on the baseline the run was gated on, if any."""
    results = load_results(run_dir)
    unknown = overrides.unknown_outputs(results.recipe.output_names)
    if unknown:
        raise UsageError(
            f"tolerance given for unknown output(s) {unknown}; outputs: {list(results.recipe.output_names)}"
        )
    if results.verdict.status == UNFINISHED.status:
        raise UsageError(f"{run_dir}: {UNFINISHED.summary}")
    gate = baseline_of_run(results, baseline, baseline_factor, baseline_floor)
    earlier = {s.name: s for s in results.stages if s.name != compare.STAGE.name}
    for record in earlier.values():
        for artifact in record.artifacts.values():
            try:
                artifact.verified(run_dir)
            except HarnessError as e:
                raise UsageError(
                    f"{run_dir} holds files that its results.json did not record ({e}); "
                    "run `harness convert` again"
                ) from None
    if results.details(RunDetails) is None:
        raise UsageError(f"{run_dir}: the run did not get as far as running the backends; nothing to compare")
    inp = StageInput(run_dir, results.recipe, overrides, results.recipe.precisions, earlier)
    start = time.perf_counter()
    try:
        out = compare.STAGE.run(inp)
    except StageSkipped as e:
        raise UsageError(f"{run_dir}: {e}") from e
    record = StageRecord(
        "compare", "ok", time.perf_counter() - start, out.reason, dict(out.artifacts), out.details
    )
    stages = results.with_stage(record).stages
    rejudged = dataclasses.replace(
        results, stages=stages, overrides=overrides, verdict=verdict_for(stages), baseline=None
    )
    if gate is not None:
        rejudged = judge_against(rejudged, gate)
    write_results(rejudged, run_dir)
    return rejudged


def localize_and_report(run_dir: Path, recipe: Recipe | None = None, **options: Any) -> Results:
    """`harness localize`: the layer-wise comparison of a finished run, written into its results.json
    and report (the verdict stays as it was)."""
    results = localize_run(run_dir, recipe, **options)
    write_results(results, run_dir)
    return results
