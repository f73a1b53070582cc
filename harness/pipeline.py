"""recipe -> scan -> export -> surgery -> precision -> build -> run -> compare -> report, in that order.

Stages hand each other files (artifacts with hashes), never live objects, and each writes one ledger
entry. The first failure stops the run, but the report is always written.
"""

from __future__ import annotations

import json
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.artifacts import Artifact, atomic_path, write_text_atomic
from harness.cache import StageCache, file_hash, source_hash, stable_hash
from harness.errors import ExitCode, HarnessError
from harness.ledger import StageFailed, StageRecord, StageSkipped
from harness.tolerances import ToleranceOverrides
from models.recipe import PRECISIONS, Feed, Recipe

RESULTS_SCHEMA = "trt-harness/results"
RESULTS_SCHEMA_VERSION = 1
SAMPLES = "samples"  # the recipe's own sample set; others are named after profile shapes


@dataclass
class RunConfig:
    recipe: Recipe
    out_dir: Path
    weights: Path | None = None
    overrides: ToleranceOverrides = field(default_factory=ToleranceOverrides)
    backends: tuple[str, ...] | None = None  # None: every registered backend
    cache_dir: Path | None = None  # None: no cache
    precisions: tuple[str, ...] | None = None  # None: the recipe's
    fp16_auto_block_list: bool = True  # keep tensors that overflow/underflow FP16 in FP32


class PipelineRun:
    """State of one run: the ledger and the artifacts produced so far."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.recipe = config.recipe
        self.out_dir = config.out_dir
        self.ledger: list[StageRecord] = []
        self.artifacts: dict[str, Artifact] = {}
        self._feeds: list[Feed] | None = None
        self._model: Any = None
        self._sample_sets: dict[str, list[Feed]] | None = None

    @property
    def model(self) -> Any:
        """The recipe's Torch model, built once per run (scan and export share it)."""
        if self._model is None:
            self._model = self.recipe.build_model(self.config.weights)
        return self._model

    @property
    def feeds(self) -> list[Feed]:
        if self._feeds is None:
            self._feeds = self.recipe.sample_inputs()
        return self._feeds

    @property
    def precisions(self) -> tuple[str, ...]:
        wanted = set(self.config.precisions or self.recipe.precisions)
        return tuple(p for p in PRECISIONS if p in wanted)

    @property
    def sample_sets(self) -> dict[str, list[Feed]]:
        """The recipe's samples, plus one batch at each distinct min/opt/max shape of the profile."""
        if self._sample_sets is None:
            from harness.inputs import profile_feeds

            self._sample_sets = {SAMPLES: self.feeds}
            if self.recipe.compare_profile_shapes:
                self._sample_sets.update(profile_feeds(self.recipe, self.feeds))
        return self._sample_sets

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


def scan_stage(run: PipelineRun, record: StageRecord) -> None:
    """List ops the exporter or TensorRT would reject; informs, never fails the run by itself."""
    from harness.scanning import findings_to_json, scan_recipe

    findings = findings_to_json(run.recipe, scan_recipe(run.recipe, run.model))
    record.details["findings"] = findings
    unfixed = [f["op"] for f in findings if not f["fixed_by_recipe"]]
    if unfixed:
        record.reason = f"not replaced by the recipe: {', '.join(sorted(set(unfixed)))}"


def export_stage(run: PipelineRun, record: StageRecord) -> None:
    from conversions.export import ExportFailed, onnx_from_torch
    from conversions.onnx_passes import op_counts

    onnx_path = run.out_dir / "model.onnx"
    try:
        result = onnx_from_torch(run.model, run.recipe, run.feeds[0], onnx_path)
    except ExportFailed as e:
        raise StageFailed(str(e)) from e
    import onnx

    record.artifacts["onnx"] = Artifact.from_file(onnx_path)
    record.details.update(result.to_json())
    record.details["op_counts"] = op_counts(onnx.load(str(onnx_path), load_external_data=False))


def surgery_stage(run: PipelineRun, record: StageRecord) -> None:
    import onnxruntime

    from conversions.onnx_passes import run_passes

    # onnx-graphsurgeon's constant folding opens ORT sessions of its own; their optimizer warnings are noise
    onnxruntime.set_default_logger_severity(3)
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


def onnx_for(run: PipelineRun, precision: str) -> Artifact:
    """The ONNX model a precision runs from: its variant if one was made, else the final FP32 model."""
    return run.artifacts.get(f"onnx_{precision}") or final_onnx(run)


def precision_stage(run: PipelineRun, record: StageRecord) -> None:
    """FP16 and INT8 variants of the final model: strongly typed TensorRT reads precision from them,
    and ONNX Runtime runs exactly what TensorRT would consume."""
    from conversions.precision import fp16_onnx, fp16_range_check, int8_qdq_onnx

    reduced = [p for p in run.precisions if p in ("fp16", "int8")]
    if not reduced:
        raise StageSkipped("no reduced precision requested (FP32/TF32 run from the final model)")
    source = final_onnx(run).verified()
    variants = {}
    for precision in reduced:
        target = run.out_dir / f"{source.stem}.{precision}.onnx"
        if precision == "fp16":
            ranges = fp16_range_check(source, run.feeds)
            record.details["fp16_range"] = ranges.to_json()
            block_list = ranges.block_list if run.config.fp16_auto_block_list else ()
            result = fp16_onnx(source, target, block_list=block_list)
        else:
            result = int8_qdq_onnx(source, target, calibration_feeds=run.feeds)
        record.artifacts[f"onnx_{precision}"] = Artifact.from_file(target)
        variants[precision] = result.to_json()
    record.details["variants"] = variants


def build_stage(run: PipelineRun, record: StageRecord) -> None:
    """One engine per precision. The first precision failing fails the stage; a later one refused by
    the builder (e.g. INT8 on a flavor without it) is recorded with TensorRT's message."""
    from conversions.tensorrt_build import TensorRTBuildFailed, engine_from_onnx
    from conversions.tensorrt_flavor import select_flavor

    flavor = select_flavor()
    if flavor is None:
        raise StageSkipped("no TensorRT installed: `pip install .[rtx]` builds on any machine")
    record.details["flavor"] = flavor.to_json()
    engines: dict[str, dict[str, Any]] = {}
    record.details["engines"] = engines
    for index, precision in enumerate(run.precisions):
        # builder-flag TensorRT builds every precision from the FP32 model
        source = onnx_for(run, precision) if flavor.strongly_typed else final_onnx(run)
        try:
            result = engine_from_onnx(
                source.verified(),
                run.out_dir,
                run.recipe.build,
                run.recipe.shape_ranges,
                precision,
                run.feeds,
            )
        except TensorRTBuildFailed as e:
            refusal = {"built": False, "phase": e.phase, "messages": e.messages}
            if index == 0:
                raise StageFailed(str(e), refusal) from e
            engines[precision] = {
                **refusal,
                "reason": f"{precision.upper()} not supported by {flavor.display_name} {flavor.version}: "
                + ("; ".join(e.messages[-3:]) or "no message"),
            }
            continue
        record.artifacts[f"engine_{precision}"] = Artifact.from_file(result.engine_path)
        engines[precision] = {"built": True, **result.to_json()}
        if index == 0:
            record.details.update(result.to_json())  # the primary engine's facts, at the top level


@dataclass(frozen=True)
class Runner:
    """One backend running one precision variant, e.g. 'onnxrt-fp16'."""

    backend: str
    precision: str

    @property
    def name(self) -> str:
        return self.backend if self.precision == "fp32" else f"{self.backend}-{self.precision}"


def runners_for(run: PipelineRun, backends: list[str]) -> list[Runner]:
    """Torch is the FP32 reference; ORT runs every variant model (TF32 changes nothing on ORT's CPU
    kernels, so it has no ORT column); TensorRT runs every engine."""
    runners = []
    for backend in backends:
        for precision in run.precisions:
            if backend == "torch" and precision != "fp32":
                continue
            if backend == "onnxrt" and precision == "tf32":
                continue
            runners.append(Runner(backend, precision))
    return runners


def outputs_file(runner: str, sample_set: str) -> str:
    return f"{runner}_outputs.json" if sample_set == SAMPLES else f"{runner}_{sample_set}_outputs.json"


def run_stage(run: PipelineRun, record: StageRecord) -> None:
    from polygraphy.comparator.struct import IterationResult, RunResults
    from polygraphy.json import save_json

    from harness.backends import BackendContext, backend_names, get_backend
    from harness.backends.base import display_name

    build = run.record("build")
    targets = tuple(build.details.get("targets", ())) if build else ()
    inputs_path = run.out_dir / "inputs.json"
    save_json(run.feeds, str(inputs_path))
    record.artifacts["inputs"] = Artifact.from_file(inputs_path)
    record.details["sample_sets"] = {
        name: {"samples": len(feeds), "shapes": {k: list(v.shape) for k, v in feeds[0].items()}}
        for name, feeds in run.sample_sets.items()
    }
    runners: dict[str, Any] = {}
    for runner in runners_for(run, list(run.config.backends or backend_names())):
        cls = get_backend(runner.backend)
        engine = run.artifacts.get(f"engine_{runner.precision}")
        ctx = BackendContext(
            recipe=run.recipe,
            weights=run.config.weights,
            onnx_path=onnx_for(run, runner.precision).verified(),
            engine_path=engine.verified() if engine else None,
            engine_targets=targets,
        )
        info: dict[str, Any] = {
            "display_name": display_name(runner.name),
            "backend": runner.backend,
            "precision": runner.precision,
        }
        runners[runner.name] = info
        reason = cls.unavailable_reason(ctx)
        if reason is not None:
            info.update(executed=False, reason=reason)
            continue
        # reduced precisions are compared on the recipe's samples; FP32 on every shape of the profile too
        sets = run.sample_sets if runner.precision == "fp32" else {SAMPLES: run.feeds}
        with cls(ctx) as backend:
            for sample_set, feeds in sets.items():
                iterations = [IterationResult(backend.infer(feed), runner_name=runner.name) for feed in feeds]
                results = RunResults()
                results.append((runner.name, iterations))
                path = run.out_dir / outputs_file(runner.name, sample_set)
                with atomic_path(path) as tmp:
                    results.save(str(tmp))
                record.artifacts[artifact_key(runner.name, sample_set)] = Artifact.from_file(path)
            io = backend.io_order()
            latencies = backend.inference_seconds
            info.update(backend.describe())
        info.update(
            executed=True,
            samples=len(run.feeds),
            sample_sets=list(sets),
            io_order=io.to_json(),
            median_latency_s=statistics.median(latencies),
        )
    record.details["backends"] = runners
    record.details["samples"] = len(run.feeds)


def artifact_key(runner: str, sample_set: str) -> str:
    return f"outputs_{runner}" if sample_set == SAMPLES else f"outputs_{runner}@{sample_set}"


def compare_stage(run: PipelineRun, record: StageRecord) -> None:
    from harness.comparing import compare_run_outputs

    run_details = run.details("run")
    paths = {
        key: artifact.verified() for key, artifact in run.artifacts.items() if key.startswith("outputs_")
    }
    recipe_json = recipe_to_json(run.recipe, run.config.weights)
    record.details.update(compare_run_outputs(recipe_json, run_details, paths, run.config.overrides))
    if images := (record.details.get("detections") or {}).get("images_file"):
        record.artifacts["detection_images"] = Artifact.from_file(run.out_dir / images)


# --- cache keys: everything each stage's output depends on ------------------------------------------


def _versions(*distributions: str) -> dict[str, str | None]:
    from harness.environment import package_versions

    installed = package_versions()
    return {d: installed.get(d) for d in distributions}


# what judges outputs (tolerances, detection criteria) is left out: changing it re-runs compare only
_JUDGING_FIELDS = (
    "default_tolerance",
    "tolerances",
    "precision_tolerances",
    "detection",
    "class_axes",
    "spatial_axes",
)


def _recipe_fingerprint(run: PipelineRun) -> dict[str, Any]:
    """The recipe as far as it determines models and outputs."""
    recipe = run.recipe
    described = {k: v for k, v in recipe_to_json(recipe, None).items() if k not in _JUDGING_FIELDS}
    return {
        **described,
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


def scan_key(run: PipelineRun) -> dict[str, Any]:
    return {
        **export_key(run),
        "code": source_hash("conversions/scan.py", "conversions/replacements", "models"),
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


def precision_key(run: PipelineRun) -> dict[str, Any]:
    return {
        "onnx": final_onnx(run).sha256,
        "precisions": run.precisions,
        "feeds": run.feeds,
        "fp16_auto_block_list": run.config.fp16_auto_block_list,
        "code": source_hash("conversions/precision"),
        "versions": _versions("onnx", "onnxruntime", "onnx-graphsurgeon"),
    }


def build_key(run: PipelineRun) -> dict[str, Any]:
    from conversions.tensorrt_flavor import select_flavor
    from harness.gpu import cuda_devices

    flavor = select_flavor()
    return {
        "onnx": {p: onnx_for(run, p).sha256 for p in run.precisions},
        "precisions": run.precisions,
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
        "onnx": {p: onnx_for(run, p).sha256 for p in run.precisions},
        "engines": {k: a.sha256 for k, a in run.artifacts.items() if k.startswith("engine_")},
        "precisions": run.precisions,
        "sample_sets": run.sample_sets,
        "weights": _weights_hash(run),
        "backends": run.config.backends,
        "gpus": [d.name for d in cuda_devices()],
        "code": source_hash("models", "harness/backends", "harness/gpu.py"),
        "versions": _versions(
            "torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorrt-rtx", "polygraphy"
        ),
    }


def compare_key(run: PipelineRun) -> dict[str, Any]:
    return {
        "outputs": {k: a.sha256 for k, a in run.artifacts.items() if k.startswith("outputs_")},
        "recipe": recipe_to_json(run.recipe, None),
        "overrides": run.config.overrides.to_json(),
        "code": source_hash(
            "harness/comparison.py",
            "harness/crossmatch.py",
            "harness/comparing.py",
            "harness/heatmap.py",
            "harness/detections.py",
            "models/detection.py",
        ),
    }


STAGES: tuple[Stage, ...] = (
    Stage("scan", scan_stage, "Scan for unsupported ops", scan_key),
    Stage("export", export_stage, "Torch -> ONNX", export_key),
    Stage("surgery", surgery_stage, "ONNX graph surgery", surgery_key),
    Stage("precision", precision_stage, "FP16/INT8 variants", precision_key),
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
        except Exception as e:
            # a library failing in a way no stage anticipated: still a failed stage with a written report,
            # the traceback kept in the ledger for the bug report
            record.status = "failed"
            record.reason = f"unexpected {type(e).__name__} in stage '{stage.name}': {e}"
            record.details["traceback"] = traceback.format_exc(limit=20)
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
        "precisions": list(recipe.precisions),
        "precision_tolerances": {k: v.to_json() for k, v in recipe.precision_tolerances.items()},
        "spatial_axes": {k: list(v) for k, v in recipe.spatial_axes.items()},
        "detection": recipe.detection.to_json() if recipe.detection else None,
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
