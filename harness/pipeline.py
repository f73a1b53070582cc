"""recipe -> export -> surgery -> build -> run -> compare -> report, in that fixed order.

Stages hand each other files (artifacts with hashes), never live objects, and each writes one ledger
entry. The first failure stops the run, but the report is always written.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.artifacts import Artifact, atomic_path, write_text_atomic
from harness.cache import StageCache, file_hash, source_hash, stable_hash
from harness.errors import ExitCode, HarnessError
from harness.ledger import StageFailed, StageRecord, StageSkipped
from harness.tolerances import ToleranceOverrides
from models.recipe import Feed, Recipe

RESULTS_SCHEMA = "trt-harness/results"
RESULTS_SCHEMA_VERSION = 1


@dataclass
class RunConfig:
    recipe: Recipe
    out_dir: Path
    weights: Path | None = None
    overrides: ToleranceOverrides = field(default_factory=ToleranceOverrides)
    backends: tuple[str, ...] | None = None  # None: every registered backend
    cache_dir: Path | None = None  # None: no cache


class PipelineRun:
    """State of one run: the ledger and the artifacts produced so far."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.recipe = config.recipe
        self.out_dir = config.out_dir
        self.ledger: list[StageRecord] = []
        self.artifacts: dict[str, Artifact] = {}
        self._feeds: list[Feed] | None = None

    @property
    def feeds(self) -> list[Feed]:
        if self._feeds is None:
            self._feeds = self.recipe.sample_inputs()
        return self._feeds

    def record(self, name: str) -> StageRecord | None:
        return next((r for r in self.ledger if r.name == name), None)

    def details(self, name: str) -> dict[str, Any]:
        record = self.record(name)
        return record.details if record else {}


StageFn = Callable[[PipelineRun, StageRecord], None]
KeyFn = Callable[[PipelineRun], dict[str, Any]]


@dataclass(frozen=True)
class Stage:
    name: str
    run: StageFn
    title: str
    # everything that determines the stage's output; None: the stage is never cached
    cache_key: KeyFn | None = None


# --- stages -------------------------------------------------------------------------------------


def export_stage(run: PipelineRun, record: StageRecord) -> None:
    from conversions.export import ExportFailed, onnx_from_torch
    from conversions.onnx_passes import op_counts

    model = run.recipe.build_model(run.config.weights)
    onnx_path = run.out_dir / "model.onnx"
    try:
        result = onnx_from_torch(model, run.recipe, run.feeds[0], onnx_path)
    except ExportFailed as e:
        raise StageFailed(str(e)) from e
    import onnx

    record.artifacts["onnx"] = Artifact.from_file(onnx_path)
    record.details.update(result.to_json())
    record.details["op_counts"] = op_counts(onnx.load(str(onnx_path), load_external_data=False))


def surgery_stage(run: PipelineRun, record: StageRecord) -> None:
    from conversions.onnx_passes import run_passes

    if not run.recipe.surgery_passes:
        raise StageSkipped("the recipe lists no surgery passes")
    source = run.artifacts["onnx"].verified()
    final = run.out_dir / "model.final.onnx"
    reports = run_passes(
        source,
        final,
        run.recipe.surgery_passes,
        static_dims=run.recipe.export.static_dims,
        check_feeds=run.feeds[:2],
    )
    record.artifacts["onnx_final"] = Artifact.from_file(final)
    record.details["passes"] = [r.to_json() for r in reports]
    if reports:
        record.details["op_counts_before"] = reports[0].op_counts_before
        record.details["op_counts_after"] = reports[-1].op_counts_after
    record.details["max_abs_diff"] = max((r.max_abs_diff or 0.0 for r in reports), default=0.0)


def final_onnx(run: PipelineRun) -> Artifact:
    return run.artifacts.get("onnx_final") or run.artifacts["onnx"]


def build_stage(run: PipelineRun, record: StageRecord) -> None:
    from conversions.tensorrt_build import TensorRTBuildFailed, engine_from_onnx
    from conversions.tensorrt_flavor import select_flavor

    flavor = select_flavor()
    if flavor is None:
        raise StageSkipped("no TensorRT installed: `pip install .[rtx]` builds on any machine")
    record.details["flavor"] = flavor.to_json()
    try:
        result = engine_from_onnx(final_onnx(run).verified(), run.out_dir, run.recipe.build, run.recipe.shape_ranges)
    except TensorRTBuildFailed as e:
        raise StageFailed(str(e), {"phase": e.phase, "messages": e.messages}) from e
    record.artifacts["engine"] = Artifact.from_file(result.engine_path)
    record.details.update(result.to_json())


def run_stage(run: PipelineRun, record: StageRecord) -> None:
    from polygraphy.comparator.struct import IterationResult, RunResults
    from polygraphy.json import save_json

    from harness.backends import BackendContext, backend_names, get_backend

    build = run.record("build")
    ctx = BackendContext(
        recipe=run.recipe,
        weights=run.config.weights,
        onnx_path=final_onnx(run).verified(),
        engine_path=run.artifacts["engine"].verified() if "engine" in run.artifacts else None,
        engine_targets=tuple(build.details.get("targets", ())) if build else (),
    )
    inputs_path = run.out_dir / "inputs.json"
    save_json(run.feeds, str(inputs_path))
    record.artifacts["inputs"] = Artifact.from_file(inputs_path)
    backends: dict[str, Any] = {}
    for name in run.config.backends or backend_names():
        cls = get_backend(name)
        reason = cls.unavailable_reason(ctx)
        if reason is not None:
            backends[name] = {"display_name": cls.display_name, "executed": False, "reason": reason}
            continue
        iterations = []
        with cls(ctx) as backend:
            for feed in run.feeds:
                iterations.append(IterationResult(backend.infer(feed), runner_name=name))
            io = backend.io_order()
            latencies = backend.inference_seconds
        outputs_path = run.out_dir / f"{name}_outputs.json"
        results = RunResults()
        results.append((name, iterations))
        with atomic_path(outputs_path) as tmp:
            results.save(str(tmp))
        record.artifacts[f"outputs_{name}"] = Artifact.from_file(outputs_path)
        backends[name] = {
            "display_name": cls.display_name,
            "executed": True,
            "samples": len(iterations),
            "io_order": io.to_json(),
            "median_latency_s": statistics.median(latencies),
        }
    record.details["backends"] = backends
    record.details["samples"] = len(run.feeds)


def compare_stage(run: PipelineRun, record: StageRecord) -> None:
    from harness.comparing import compare_saved_outputs

    executed = {
        name: run.artifacts[f"outputs_{name}"].verified()
        for name, info in run.details("run").get("backends", {}).items()
        if info["executed"]
    }
    if len(executed) < 2:
        raise StageSkipped(f"fewer than two backends executed ({', '.join(executed) or 'none'})")
    recipe_json = recipe_to_json(run.recipe, run.config.weights)
    record.details.update(compare_saved_outputs(recipe_json, executed, run.config.overrides))


# --- cache keys: everything each stage's output depends on ------------------------------------------


def _versions(*distributions: str) -> dict[str, str | None]:
    from harness.environment import package_versions

    installed = package_versions()
    return {d: installed.get(d) for d in distributions}


def _recipe_fingerprint(run: PipelineRun) -> dict[str, Any]:
    recipe = run.recipe
    return {
        **recipe_to_json(recipe, None),
        "shape_ranges": recipe.shape_ranges,
        "export": recipe.export,
        "surgery_passes": recipe.surgery_passes,
        "build": recipe.build,
    }


def _weights_hash(run: PipelineRun) -> str | None:
    return file_hash(run.config.weights)


def export_key(run: PipelineRun) -> dict[str, Any]:
    return {
        "recipe": _recipe_fingerprint(run),
        "weights": _weights_hash(run),
        "trace_input": run.feeds[0],
        "code": source_hash("conversions/export.py", "conversions/replacements", "models"),
        "versions": _versions("torch", "onnx", "onnxscript"),
    }


def surgery_key(run: PipelineRun) -> dict[str, Any]:
    recipe = run.recipe
    return {
        "onnx": run.artifacts["onnx"].sha256,
        "passes": recipe.surgery_passes,
        "static_dims": recipe.export.static_dims,
        "check_feeds": run.feeds[:2],
        "code": source_hash("conversions/onnx_passes"),
        "versions": _versions("onnx", "onnx-graphsurgeon", "onnxruntime"),
    }


def build_key(run: PipelineRun) -> dict[str, Any]:
    from conversions.tensorrt_flavor import select_flavor
    from harness.gpu import cuda_devices

    flavor = select_flavor()
    return {
        "onnx": final_onnx(run).sha256,
        "build": run.recipe.build,
        "shape_ranges": run.recipe.shape_ranges,
        "flavor": flavor.to_json() if flavor else None,
        # full TensorRT builds for the GPU present; TensorRT for RTX for the recipe's list
        "gpus": [] if flavor is None or flavor.is_rtx else [d.name for d in cuda_devices()],
        "code": source_hash("conversions/tensorrt_build.py", "conversions/tensorrt_flavor.py"),
    }


def run_key(run: PipelineRun) -> dict[str, Any]:
    from harness.gpu import cuda_devices

    return {
        "recipe": _recipe_fingerprint(run),
        "onnx": final_onnx(run).sha256,
        "engine": run.artifacts["engine"].sha256 if "engine" in run.artifacts else None,
        "weights": _weights_hash(run),
        "feeds": run.feeds,
        "backends": run.config.backends,
        "gpus": [d.name for d in cuda_devices()],
        "code": source_hash("models", "harness/backends", "harness/gpu.py"),
        "versions": _versions("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorrt-rtx", "polygraphy"),
    }


def compare_key(run: PipelineRun) -> dict[str, Any]:
    return {
        "outputs": {k: a.sha256 for k, a in run.artifacts.items() if k.startswith("outputs_")},
        "recipe": recipe_to_json(run.recipe, None),
        "overrides": run.config.overrides.to_json(),
        "code": source_hash("harness/comparison.py", "harness/crossmatch.py", "harness/comparing.py"),
    }


STAGES: tuple[Stage, ...] = (
    Stage("export", export_stage, "Torch -> ONNX", export_key),
    Stage("surgery", surgery_stage, "ONNX graph surgery", surgery_key),
    Stage("build", build_stage, "TensorRT build", build_key),
    Stage("run", run_stage, "Run backends", run_key),
    Stage("compare", compare_stage, "Compare outputs", compare_key),
)


# --- driver -------------------------------------------------------------------------------------


def run_pipeline(config: RunConfig, progress: Any | None = None) -> dict[str, Any]:
    """Run every stage in order, write results.json and the report, and return the results."""
    from conversions.tensorrt_flavor import select_flavor

    select_flavor()  # before anything imports polygraphy.backend.trt
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.WARNING  # our ledger and report say what happened
    config.out_dir.mkdir(parents=True, exist_ok=True)
    run = PipelineRun(config)
    cache = StageCache(config.cache_dir) if config.cache_dir is not None else None
    failed: str | None = None
    for stage in STAGES:
        record = StageRecord(stage.name, "skipped")
        run.ledger.append(record)
        if failed is not None:
            record.reason = f"not run: stage '{failed}' failed"
            continue
        if progress is not None:
            progress.start(stage)
        start = time.perf_counter()
        try:
            key = stable_hash(stage.cache_key(run)) if cache is not None and stage.cache_key else None
            entry = cache.lookup(stage.name, key) if key else None
            if entry is not None:
                record.artifacts = cache.restore(entry, run.out_dir)
                record.details = entry.record["details"]
                record.status, record.reason = "cached", f"cache entry {key[:12]}"
            else:
                stage.run(run, record)
                record.status = "ok"
                if key:
                    cache.store(stage.name, key, record.artifacts, record.details)
        except StageSkipped as e:
            record.reason = str(e)
        except StageFailed as e:
            record.status, record.reason = "failed", str(e)
            record.details.update(e.details)
            failed = stage.name
        except HarnessError as e:
            if e.exit_code == ExitCode.USAGE_ERROR:
                raise
            record.status, record.reason = "failed", str(e)
            failed = stage.name
        finally:
            record.duration_s = time.perf_counter() - start
            run.artifacts.update(record.artifacts)
            if progress is not None:
                progress.finish(stage, record)
    results = assemble_results(run)
    write_results(results, config.out_dir)
    return results


def recipe_to_json(recipe: Recipe, weights: Path | None) -> dict[str, Any]:
    return {
        "name": recipe.name,
        "description": recipe.description,
        "params": dict(recipe.params),
        "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in recipe.inputs],
        "output_names": list(recipe.output_names),
        "default_tolerance": recipe.default_tolerance.to_json(),
        "tolerances": {k: v.to_json() for k, v in recipe.tolerances.items()},
        "class_axes": dict(recipe.class_axes),
        "weights": str(weights) if weights else None,
    }


def assemble_results(run: PipelineRun) -> dict[str, Any]:
    from harness.environment import environment
    from harness.verdict import verdict_for

    results: dict[str, Any] = {
        "schema": RESULTS_SCHEMA,
        "schema_version": RESULTS_SCHEMA_VERSION,
        "created_unix": time.time(),
        "recipe": recipe_to_json(run.recipe, run.config.weights),
        "overrides": run.config.overrides.to_json(),
        "environment": environment(),
        "stages": [r.to_json(run.out_dir) for r in run.ledger],
    }
    results["verdict"] = verdict_for(results)
    return results


def write_results(results: dict[str, Any], out_dir: Path) -> None:
    from reports.render import write_reports

    write_text_atomic(out_dir / "results.json", json.dumps(results, indent=1, default=_json_default))
    write_reports(results, out_dir)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")
