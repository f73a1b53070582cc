"""run: every backend at every precision it runs (one runner each) on the samples; outputs keyed by name,
written one file per sample as soon as each is inferred.

FP32 runners run every sample set (the recipe's samples and the profile rows); reduced precisions
run the recipe's samples. Every sample is its own feed, so samples of different shapes (sequence
lengths) run as they are. A backend that cannot execute here is recorded with the reason, as
"built, not executed" when what it would run from exists.
"""

from __future__ import annotations

import shutil
import statistics
from typing import Any

import numpy as np
from trt_harness.harness.backends.base import (
    Backend,
    BackendContext,
    backend_classes,
    runner_display_name,
    runner_name,
)
from trt_harness.harness.gpu import cuda_devices
from trt_harness.harness.sample_files import sample_file, write_sample
from trt_harness.harness.stages.base import (
    Stage,
    StageInput,
    StageOutput,
    recipe_fingerprint,
    torch_model,
    versions,
    weights_hash,
)
from trt_harness.models.core.artifacts import Artifact
from trt_harness.models.core.errors import HarnessError, UsageError
from trt_harness.models.recipe import Feed
from trt_harness.models.results.comparisons import SAMPLES
from trt_harness.models.results.stages import BuildDetails, RunDetails, RunnerRecord, SamplesDetails

OUTPUTS = "outputs"


def outputs_artifact_name(runner: str) -> str:
    return f"outputs_{runner}"


def selected_backends(wanted: tuple[str, ...] | None) -> list[type[Backend]]:
    """The registered backends to run, in rank order; `wanted` None means all of them."""
    classes = backend_classes()
    if wanted is None:
        return classes
    known = {cls.name: cls for cls in classes}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise UsageError(f"unknown backend(s) {unknown} in --backends; known backends: {', '.join(known)}")
    return [cls for cls in classes if cls.name in wanted]


def _context(inp: StageInput, cls: type[Backend], precision: str) -> BackendContext:
    config = inp.config
    assert config is not None
    build = inp.details(BuildDetails)
    engine = inp.optional_artifact(f"engine_{precision}")
    onnx = inp.optional_artifact("onnx") and inp.onnx_for(precision)
    return BackendContext(
        recipe=config.recipe,
        precision=precision,
        weights=config.weights,
        onnx_path=onnx.verified(inp.run_dir) if onnx and cls.needs == "onnx" else None,
        engine_path=engine.verified(inp.run_dir) if engine and cls.needs == "engine" else None,
        engine=build.engines.get(precision) if build else None,
        model_factory=lambda: torch_model(config.recipe, config.weights),
    )


def _build_refusal(inp: StageInput) -> str | None:
    """Why no engine exists when the build stage failed (the runs of the others go on); else None."""
    build = inp.earlier.get("build")
    if build is None or build.status != "failed":
        return None
    return f"the TensorRT build failed: {build.reason or 'no reason recorded'}"


def _infer(backend: Backend, feed: Feed, sample_set: str, made: bool) -> dict[str, np.ndarray]:
    """One inference (each sample its own feed, whatever its shape). A profile row made by the recipe's
    make_input that the model refuses is the recipe's fault (e.g. token ids outside the vocabulary:
    an embedding lookup fails), so it is named as such, not as a harness failure."""
    if not made:
        return backend.infer(feed)
    try:
        return backend.infer(feed)
    except HarnessError:
        raise
    except Exception as e:
        ranges = ", ".join(
            f"{name} {a.dtype} in [{a.min()}, {a.max()}]"
            for name, a in feed.items()
            if a.size and a.dtype.kind in "iub"
        )
        raise HarnessError(
            f"{backend.display_name} failed on profile row '{sample_set}', whose inputs the recipe's make_input "
            f"made ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else 'no message'}); "
            f"make_input must return values the model accepts, e.g. token ids inside the vocabulary"
            + (f" (it gave {ranges})" if ranges else "")
        ) from e


def run(inp: StageInput) -> StageOutput:
    samples = inp.details(SamplesDetails)
    assert samples is not None
    wanted = inp.config.backends if inp.config else None
    runners: dict[str, RunnerRecord] = {}
    artifacts: dict[str, Artifact] = {}
    for cls in selected_backends(wanted):
        for precision in (p for p in inp.precisions if p in cls.precisions):
            name = runner_name(cls, precision)
            ctx = _context(inp, cls, precision)
            common: dict[str, Any] = {
                "backend": cls.name,
                "precision": precision,
                "display_name": runner_display_name(cls, precision),
                "reference": cls.reference,
            }
            reason = cls.unavailable_reason(ctx)
            refused = _build_refusal(inp) if cls.needs == "engine" else None
            if refused is not None:
                runners[name] = RunnerRecord(**common, state="build failed", reason=refused)
                continue
            if reason is not None:
                built = cls.needs == "engine" and ctx.engine_path is not None
                planned = cls.planned_io_order(ctx)
                runners[name] = RunnerRecord(
                    **common,
                    state="built, not executed" if built else "not executed",
                    reason=reason,
                    io_order=planned[0] if planned else None,
                    io_source=planned[1] if planned else "",
                )
                continue
            sets = list(samples.sets) if precision == "fp32" else [SAMPLES]
            folder = inp.run_dir / OUTPUTS / name
            shutil.rmtree(folder, ignore_errors=True)  # ours: an earlier run's samples must not mix in
            with cls(ctx) as backend:
                for sample_set in sets:
                    made = samples.sets[sample_set].source != "samples"
                    for index, feed in enumerate(inp.samples(sample_set)):
                        write_sample(
                            sample_file(folder / sample_set, index), _infer(backend, feed, sample_set, made)
                        )
                io = backend.io_order()
                described = backend.describe()
                ordering = tuple(backend.ordering_mismatches)
            artifact = outputs_artifact_name(name)
            artifacts[artifact] = Artifact.of_folder(inp.run_dir, f"{OUTPUTS}/{name}")
            runners[name] = RunnerRecord(
                **common,
                state="executed",
                outputs=artifact,
                sample_sets=tuple(sets),
                samples=samples.sets[SAMPLES].samples,
                io_order=io,
                io_source=cls.io_source,
                median_latency_s=statistics.median(backend.inference_seconds),
                inference_s=sum(backend.inference_seconds),
                setup_s=backend.setup_seconds,
                device=described,
                ordering_mismatches=ordering,
            )
    return StageOutput(artifacts, RunDetails(runners))


def run_key(inp: StageInput) -> dict[str, Any]:
    config = inp.config
    assert config is not None
    return {
        "recipe": recipe_fingerprint(config.recipe),
        # the declared outputs the backends are checked against
        "declared_outputs": [repr(o) for o in config.recipe.outputs],
        "onnx": {p: inp.onnx_for(p).sha256 for p in inp.precisions}
        if inp.optional_artifact("onnx")
        else None,
        "engines": {k: a.sha256 for k, a in inp.artifacts().items() if k.startswith("engine_")},
        "build_refusal": _build_refusal(inp),  # recorded as the TensorRT runner's reason
        "precisions": list(inp.precisions),
        "samples": inp.artifact("samples").sha256,
        "weights": weights_hash(inp),
        "backends": list(config.backends) if config.backends else None,
        "gpus": [d.name for d in cuda_devices()],
        "versions": versions(
            "torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorrt-rtx", "polygraphy"
        ),
    }


STAGE = Stage("run", "Run backends", run, run_key, runs_recipe_code=True)
