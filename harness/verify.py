"""`harness verify <bundle>`: on the target device, build (or load) the engine, run ONNX Runtime and
TensorRT on the bundled inputs, and judge them against the bundled reference, with no torch.

The bundle (`harness bundle`) holds the final ONNX models, the sample inputs, the reference outputs
measured where the model was converted, and a manifest with every file's SHA-256. Verify checks every
file against the manifest first (a changed file is a usage error naming it, before anything runs),
then copies the bundle into a run folder and runs the pipeline's own stages on it:

  bundle (the checked files) -> samples (the bundled inputs) -> build -> run -> compare

`build`, `run` and `compare` are the stages `harness convert` runs (harness.stages), so the results
contract, the report, JUnit and the exit codes are the same; the run stage runs every backend except
the reference, whose record and outputs come from the bundle. Where TensorRT cannot execute, the
report says "built, not executed", as everywhere. No module on this path imports torch: the recipe
is rebuilt from the manifest as values, with no model to build.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from trt_harness.conversions.tensorrt_flavor import select_flavor
from trt_harness.harness.backends.base import backend_classes
from trt_harness.harness.environment import environment
from trt_harness.harness.gpu import cuda_devices
from trt_harness.harness.pipeline import _run_stage, prepare_run_folder, write_results
from trt_harness.harness.stages import build, compare, run
from trt_harness.harness.stages.base import (
    RunConfig,
    Stage,
    StageInput,
    StageOutput,
    StageSkipped,
)
from trt_harness.harness.verdict import verdict_for
from trt_harness.models.core.artifacts import Artifact, atomic_path, run_relative, sha256_file
from trt_harness.models.core.errors import ExitCode, HarnessError, Interrupted, UsageError
from trt_harness.models.recipe import PRECISIONS, Recipe
from trt_harness.models.results.bundle import (
    FINAL_ONNX,
    SAMPLES_ARTIFACT,
    BundleManifest,
    load_manifest,
    onnx_artifact_name,
)
from trt_harness.models.results.document import UNFINISHED, Results, Verdict, save_results
from trt_harness.models.results.stages import BuildDetails, EngineRecord, RunDetails, StageRecord

DEFAULT_OUT = "verify"  # the run folder inside the bundle, unless --out says otherwise


def check_bundle(bundle_dir: Path) -> BundleManifest:
    """The bundle's manifest, after checking every file it lists against its SHA-256 (a usage error
    naming the first file that is missing or changed)."""
    manifest = load_manifest(bundle_dir)
    reference_outputs = manifest.reference_runner.outputs or f"the outputs of '{manifest.reference}'"
    needed = (FINAL_ONNX, SAMPLES_ARTIFACT, reference_outputs)
    missing = [name for name in needed if name not in manifest.artifacts]
    missing += [
        onnx_artifact_name(p) for p in manifest.precisions if onnx_artifact_name(p) not in manifest.artifacts
    ]
    if missing:
        raise UsageError(
            f"{bundle_dir}: the manifest lists no {', '.join(dict.fromkeys(missing))}; make the bundle again"
        )
    for name, artifact in manifest.artifacts.items():
        for member in artifact.members:
            file = bundle_dir / run_relative(member.path)
            if not file.is_file():
                raise UsageError(
                    f"{file}: missing from the bundle (the manifest lists it in '{name}'); copy the bundle again"
                )
            actual = sha256_file(file)
            if actual != member.sha256:
                raise UsageError(
                    f"{file}: sha256 {actual[:12]} is not the manifest's {member.sha256[:12]}: the file was "
                    "changed or damaged after `harness bundle`; copy the bundle again (or make it anew)"
                )
    return manifest


def _no_model(recipe: str):
    def build_model(_weights: object) -> object:
        raise HarnessError(
            f"a bundle of recipe '{recipe}' holds no Torch model: its reference outputs were measured "
            "when it was made; run `harness convert` for anything that needs the model"
        )

    return build_model


def recipe_of(manifest: BundleManifest) -> Recipe:
    """The recipe as values, from the manifest: enough to build an engine and run ONNX Runtime and
    TensorRT, with no model (no torch) behind it."""
    record, settings = manifest.recipe, manifest.settings
    return Recipe(
        name=record.name,
        description=record.description,
        build_model=_no_model(record.name),
        sample_inputs=lambda: [],
        inputs=record.inputs,
        output_names=record.output_names,
        shape_ranges=settings.shape_ranges,
        build=settings.build,
        default_tolerance=record.default_tolerance,
        tolerances=record.tolerances,
        class_axes=record.class_axes,
        precisions=manifest.precisions,  # type: ignore[arg-type]
        precision_tolerances=record.precision_tolerances,
        spatial_axes=record.spatial_axes,
        detection=record.detection,
        ort_optimization=settings.ort_optimization,
        params=record.params,
        outputs=settings.outputs,
    )


def _copy_stage(bundle_dir: Path, manifest: BundleManifest) -> Stage:
    """The bundle's files, copied into the run folder (so it is a run folder `harness compare` reads)."""
    models = {n: a for n, a in manifest.artifacts.items() if n.startswith("onnx_")}
    reference = manifest.reference_runner

    def copy_bundle(inp: StageInput) -> StageOutput:
        if inp.run_dir.resolve() != bundle_dir.resolve():
            for artifact in manifest.artifacts.values():
                for member in artifact.members:
                    relative = run_relative(member.path)
                    with atomic_path(inp.run_dir / relative) as tmp:
                        shutil.copyfile(bundle_dir / relative, tmp)
                artifact.verified(inp.run_dir)
        origin = manifest.origin
        where = origin.environment.platform
        versions = ", ".join(f"{k} {v}" for k, v in reference.device.items() if k != "device")
        files = sum(len(a.members) for a in manifest.artifacts.values())
        artifacts = {**models, "onnx": models[FINAL_ONNX]}
        assert reference.outputs is not None
        artifacts[reference.outputs] = manifest.artifacts[reference.outputs]
        return StageOutput(
            artifacts,
            reason=f"{files} files of {bundle_dir} match its manifest; reference {reference.display_name} "
            f"measured on {where}" + (f" ({versions})" if versions else "") + f", run {origin.run_id[:12]}",
        )

    return Stage("bundle", "Bundle", copy_bundle)


def _samples_stage(manifest: BundleManifest) -> Stage:
    def bundled_samples(inp: StageInput) -> StageOutput:
        return StageOutput({SAMPLES_ARTIFACT: manifest.artifacts[SAMPLES_ARTIFACT]}, manifest.samples)

    return Stage("samples", "Sample inputs (bundled)", bundled_samples)


def _engine_stage(engine_file: Path) -> Stage:
    """`--engine FILE`: the engine built earlier on this device, loaded instead of built."""

    def load_engine(inp: StageInput) -> StageOutput:
        flavor = select_flavor()
        if flavor is None:
            raise StageSkipped(
                "no TensorRT installed to load --engine with: `pip install .[gpu]` or `.[rtx]`"
            )
        precision = inp.precisions[0]
        name = engine_file.name
        with atomic_path(inp.run_dir / name) as tmp:
            shutil.copyfile(engine_file, tmp)
        record = EngineRecord(
            precision,
            built=True,
            engine=name,
            # where it came from is not recorded in the plan: TensorRT refuses one built for another GPU
            # or TensorRT version when it deserializes it, and the run stage records that refusal
            targets=tuple(d.sm_tag for d in cuda_devices()),
            plan_size_bytes=(inp.run_dir / name).stat().st_size,
            profile=dict(inp.recipe.shape_ranges),
            reason=f"loaded from --engine {engine_file}, not built here",
        )
        artifact = Artifact.of_file(inp.run_dir, name)
        return StageOutput({f"engine_{precision}": artifact}, BuildDetails(flavor, {precision: record}))

    return Stage("build", "TensorRT engine (loaded)", load_engine, keep_going=True)


def _run_stage_with_reference(manifest: BundleManifest) -> Stage:
    """The run stage for every backend but the reference, whose record the bundle brings."""

    def run_backends(inp: StageInput) -> StageOutput:
        out = run.STAGE.run(inp)
        assert isinstance(out.details, RunDetails)
        runners = {manifest.reference: manifest.reference_runner, **out.details.runners}
        return StageOutput(out.artifacts, RunDetails(runners), out.reason)

    return Stage("run", run.STAGE.title, run_backends)


def _precisions(
    manifest: BundleManifest, wanted: tuple[str, ...] | None, engine: Path | None
) -> tuple[str, ...]:
    chosen = wanted or manifest.precisions
    unknown = [p for p in chosen if p not in manifest.precisions]
    if unknown:
        raise UsageError(
            f"--precision {' '.join(unknown)}: the bundle holds models for {', '.join(manifest.precisions)} only"
        )
    if engine is not None and len(chosen) != 1:
        raise UsageError(
            f"--engine {engine} is one engine, the bundle has precisions {', '.join(chosen)}: give "
            "--precision P for the engine's precision"
        )
    return tuple(p for p in PRECISIONS if p in chosen)


def verify_bundle(
    bundle_dir: Path,
    out_dir: Path | None = None,
    engine: Path | None = None,
    precisions: tuple[str, ...] | None = None,
) -> tuple[Results, Path]:
    """Verify the bundle in `bundle_dir`; write the run folder (results.json, report) to `out_dir`
    (default: `<bundle>/verify`). Returns the results and the run folder."""
    bundle_dir = Path(bundle_dir)
    manifest = check_bundle(bundle_dir)
    if engine is not None and not Path(engine).is_file():
        raise UsageError(f"--engine {engine}: no such file")
    chosen = _precisions(manifest, precisions, engine)
    out_dir = Path(out_dir) if out_dir is not None else bundle_dir / DEFAULT_OUT
    select_flavor()  # before anything imports polygraphy.backend.trt
    from polygraphy.logger import G_LOGGER  # imported after the flavor is chosen (see select_flavor)

    G_LOGGER.module_severity = G_LOGGER.WARNING  # our ledger and report say what happened
    prepare_run_folder(out_dir)
    recipe = recipe_of(manifest)
    others = tuple(cls.name for cls in backend_classes() if not cls.reference)
    config = RunConfig(recipe, out_dir, overrides=manifest.overrides, backends=others, precisions=chosen)
    env = environment()
    save_results(Results(manifest.recipe, env, (), UNFINISHED, manifest.overrides), out_dir)
    stages = (
        _copy_stage(bundle_dir, manifest),
        _samples_stage(manifest),
        _engine_stage(Path(engine)) if engine is not None else build.STAGE,
        _run_stage_with_reference(manifest),
        compare.STAGE,
    )
    ledger: dict[str, StageRecord] = {}
    stopped: str | None = None
    interrupted: Interrupted | None = None
    for stage in stages:
        if stopped is not None:
            ledger[stage.name] = StageRecord(stage.name, "skipped", reason=f"not run: {stopped}")
            continue
        start = time.perf_counter()
        inp = StageInput(out_dir, manifest.recipe, manifest.overrides, chosen, dict(ledger), config)
        try:
            entry = _run_stage(stage, inp, None)
        except (KeyboardInterrupt, Interrupted) as e:
            interrupted = e if isinstance(e, Interrupted) else Interrupted("SIGINT", ExitCode.INTERRUPTED)
            interrupted.stage = stage.name
            entry = StageRecord(stage.name, "interrupted", reason=f"interrupted by {interrupted.signal_name}")
        ledger[stage.name] = dataclasses.replace(entry, duration_s=time.perf_counter() - start)
        if entry.status == "failed" and not stage.keep_going:
            stopped = f"stage '{stage.name}' failed"
        elif entry.status == "interrupted":
            stopped = f"the run was interrupted in stage '{stage.name}'"
    records = tuple(ledger.values())
    verdict = verdict_for(records)
    if interrupted is not None:
        verdict = Verdict(
            int(interrupted.exit_code),
            interrupted.exit_code.name,
            f"interrupted by {interrupted.signal_name} in stage '{interrupted.stage}'",
        )
    results = Results(manifest.recipe, env, records, verdict, manifest.overrides)
    write_results(results, out_dir)
    if interrupted is not None:
        raise interrupted
    return results, out_dir
