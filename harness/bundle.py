"""`harness bundle <run dir>`: a small folder a target device verifies its own engine with (`harness verify`).

It holds the final ONNX model of each precision the run made (with its sidecar files), the sample
inputs, the reference runner's outputs (Torch at FP32), and a typed manifest (models/results/bundle.py)
with the recipe's identity, tolerances and checks, the settings the engine build needs, the source
run's versions and the SHA-256 of every file. It is made on the machine that ran `harness convert`:
it loads the recipe there for the settings the run record does not keep (shape ranges, build options).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import shutil
import tempfile
import time
from pathlib import Path

from trt_harness.models.core.artifacts import Artifact, run_relative, sha256_file
from trt_harness.models.core.errors import HarnessError, UsageError
from trt_harness.models.recipe import PRECISIONS
from trt_harness.models.results.bundle import (
    FINAL_ONNX,
    MANIFEST_FILE,
    SAMPLES_ARTIFACT,
    BundleManifest,
    BundleOrigin,
    RecipeSettings,
    onnx_artifact_name,
    save_manifest,
)
from trt_harness.models.results.comparisons import SAMPLES
from trt_harness.models.results.document import UNFINISHED, Results, load_results
from trt_harness.models.results.stages import RunDetails, RunnerRecord, SamplesDetails


def default_bundle_dir(run_dir: Path) -> Path:
    """`artifacts/mnist` -> `artifacts/mnist-bundle`: beside the run, never inside it."""
    run_dir = Path(run_dir)
    return run_dir.with_name(f"{run_dir.resolve().name}-bundle")


def _reference(run_dir: Path, run: RunDetails) -> tuple[str, RunnerRecord]:
    found = next(
        ((n, r) for n, r in run.runners.items() if r.reference and r.precision == "fp32" and r.executed),
        None,
    )
    if found is None or found[1].outputs is None:
        raise UsageError(
            f"{run_dir}: its reference backend (Torch) did not run at FP32, so there is no reference "
            "output to bundle; run `harness convert` with the torch backend"
        )
    return found


def _bundled_artifacts(run_dir: Path, results: Results, reference: RunnerRecord) -> dict[str, Artifact]:
    """The run's artifacts that go into the bundle, by the name the bundle gives them."""
    recorded = {name: a for record in results.stages for name, a in record.artifacts.items()}
    final = recorded.get(FINAL_ONNX) or recorded.get("onnx")
    if final is None:
        raise UsageError(f"{run_dir}: the run wrote no ONNX model (its export failed); nothing to bundle")
    chosen = {FINAL_ONNX: final, SAMPLES_ARTIFACT: recorded[SAMPLES_ARTIFACT]}
    assert reference.outputs is not None
    chosen[reference.outputs] = recorded[reference.outputs]
    for precision in PRECISIONS:
        name = onnx_artifact_name(precision)
        if name != FINAL_ONNX and name in recorded:
            chosen[name] = recorded[name]
    return chosen


def _precisions(run: RunDetails, artifacts: dict[str, Artifact]) -> tuple[str, ...]:
    """The precisions the run ran that the bundle has a model for, in the harness's order."""
    ran = {r.precision for r in run.runners.values()}
    return tuple(p for p in PRECISIONS if p in ran and onnx_artifact_name(p) in artifacts)


def _weights_sha256(weights: str | None) -> str | None:
    if weights is None or not Path(weights).is_file():
        return None
    return sha256_file(Path(weights))


def _copy_into(
    artifacts: dict[str, Artifact],
    run_dir: Path,
    folder: Path,
    sample_folders: set[str],
    sets: frozenset[str],
) -> dict[str, Artifact]:
    """Copy every file of each artifact, checked against the run's record of it, to the same path;
    of the artifacts named in `sample_folders` (inputs, reference outputs: one folder per sample set)
    only the sets in `sets`. Returns the artifacts as the bundle holds them."""
    bundled = {}
    for name, artifact in artifacts.items():
        try:
            artifact.verified(run_dir)
        except HarnessError as e:
            raise UsageError(f"{run_dir}: {e}") from None
        per_sample = name in sample_folders
        for member in artifact.members:
            relative = run_relative(member.path)
            if per_sample and relative.parent.name not in sets:
                continue
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run_dir / relative, folder / relative)
        # a folder with sets left out is a new artifact (its own member list and hash); the same otherwise
        left_out = per_sample and any(run_relative(m.path).parent.name not in sets for m in artifact.members)
        bundled[name] = Artifact.of_folder(folder, artifact.path) if left_out else artifact
    return bundled


def _replace_folder(staged: Path, bundle_dir: Path) -> None:
    """Put the staged bundle in place; an earlier bundle there is replaced, anything else refused."""
    if bundle_dir.exists():
        if not bundle_dir.is_dir() or (
            not (bundle_dir / MANIFEST_FILE).is_file() and any(bundle_dir.iterdir())
        ):
            raise UsageError(f"--out {bundle_dir}: exists and is not a bundle; choose an empty or new folder")
        shutil.rmtree(bundle_dir)
    os.replace(staged, bundle_dir)


def write_bundle(run_dir: Path, bundle_dir: Path, samples_only: bool = False) -> BundleManifest:
    """Write the bundle of the finished run in `run_dir` into `bundle_dir`; return its manifest.

    `samples_only`: only the recipe's own samples, not the batches at the optimization profile's
    min/opt/max shapes (a smaller bundle; the engine is then checked at the samples' shapes only)."""
    # the recipe's code gives the settings the run record does not keep (shape ranges, build options);
    # loading it imports no torch (recipes import it when they build a model)
    from trt_harness.models.recipes import get_recipe

    run_dir, bundle_dir = Path(run_dir), Path(bundle_dir)
    results = load_results(run_dir)
    if results.verdict.status == UNFINISHED.status:
        raise UsageError(f"{run_dir}: {UNFINISHED.summary}")
    run, samples = results.details(RunDetails), results.details(SamplesDetails)
    if run is None or samples is None:
        raise UsageError(f"{run_dir}: the run did not get as far as running the backends; nothing to bundle")
    if samples.shard is not None:
        raise UsageError(
            f"{run_dir} judged only shard {samples.shard.index + 1}/{samples.shard.count} of the samples; "
            "bundle a run made without --shard"
        )
    reference_name, reference = _reference(run_dir, run)
    artifacts = _bundled_artifacts(run_dir, results, reference)
    sets = frozenset({SAMPLES} if samples_only else samples.sets)
    samples = dataclasses.replace(samples, sets={k: v for k, v in samples.sets.items() if k in sets})
    reference = dataclasses.replace(
        reference, sample_sets=tuple(s for s in reference.sample_sets if s in sets)
    )
    recipe = get_recipe(results.recipe.name, **results.recipe.params)
    manifest = BundleManifest(
        recipe=results.recipe,
        settings=RecipeSettings(
            shape_ranges=dict(recipe.shape_ranges),
            build=recipe.build,
            ort_optimization=recipe.ort_optimization,
            outputs=tuple(recipe.outputs),
        ),
        precisions=_precisions(run, artifacts),
        reference=reference_name,
        reference_runner=reference,
        samples=samples,
        artifacts={},  # filled in once copied (a folder with sets left out gets its own hash)
        origin=BundleOrigin(
            run_dir=str(run_dir),
            run_id=results.run_id,
            run_created_unix=results.created_unix,
            environment=results.environment,
            verdict=results.verdict,
            harness_version=importlib.metadata.version("trt-harness"),
            weights_sha256=_weights_sha256(results.recipe.weights),
        ),
        overrides=results.overrides,
        created_unix=time.time(),
    )
    try:
        bundle_dir.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(
            tempfile.mkdtemp(prefix=f".{bundle_dir.name}.", suffix=".partial", dir=bundle_dir.parent)
        )
    except OSError as e:
        raise UsageError(f"--out {bundle_dir}: cannot write there ({e.strerror or e})") from None
    try:
        sample_folders = {SAMPLES_ARTIFACT, reference.outputs or ""}
        bundled = _copy_into(artifacts, run_dir, staged, sample_folders, sets)
        manifest = dataclasses.replace(manifest, artifacts=bundled)
        save_manifest(manifest, staged)
        _replace_folder(staged, bundle_dir)
    except OSError as e:
        raise UsageError(f"--out {bundle_dir}: cannot write there ({e.strerror or e})") from None
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return manifest


def bundle_size_bytes(manifest: BundleManifest) -> int:
    return sum(a.size_bytes for a in manifest.artifacts.values())
