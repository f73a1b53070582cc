"""The manifest of a verification bundle (`harness bundle`), schema `trt-harness/bundle` version 1.

A bundle is what a target device (a Jetson board, a deployment box) needs to judge its own TensorRT
engine and ONNX Runtime against the reference the conversion machine measured, with no torch and no
recipe code: the final ONNX model of each precision (with its sidecars), the sample inputs, the
reference runner's outputs, and this manifest. Every file is an `Artifact` with its SHA-256 (paths
relative to the bundle folder), so a damaged or edited bundle is refused naming the file.

The recipe travels as the run recorded it (`RecipeRecord`: inputs, outputs, tolerances and checks)
plus the settings that building an engine and running ONNX Runtime need (`RecipeSettings`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trt_harness.models.core.artifacts import Artifact, write_text_atomic
from trt_harness.models.core.errors import UsageError
from trt_harness.models.core.serde import SchemaError, from_json, to_json
from trt_harness.models.recipe import BuildOptions, OrtOptimization, ShapeRange, TensorSpec
from trt_harness.models.results.document import Environment, Verdict
from trt_harness.models.results.recipe import RecipeRecord, ToleranceOverrides
from trt_harness.models.results.stages import RunnerRecord, SamplesDetails

BUNDLE_SCHEMA = "trt-harness/bundle"
BUNDLE_SCHEMA_VERSION = 1
MANIFEST_FILE = "bundle.json"

# artifact names inside a bundle, as the run that made it named them
SAMPLES_ARTIFACT = "samples"
FINAL_ONNX = "onnx_final"


def onnx_artifact_name(precision: str) -> str:
    """The bundle's model for a precision: its own variant (fp16, int8), else the final FP32 model."""
    return FINAL_ONNX if precision in ("fp32", "tf32") else f"onnx_{precision}"


@dataclass(frozen=True)
class RecipeSettings:
    """What of the recipe building the engine and running the backends needs beyond its record."""

    shape_ranges: Mapping[str, ShapeRange] = field(default_factory=dict)
    build: BuildOptions = BuildOptions()
    ort_optimization: OrtOptimization = "all"
    # declared outputs (shape and dtype checked on every backend), as the recipe declares them
    outputs: tuple[TensorSpec | str, ...] = ()


@dataclass(frozen=True)
class BundleOrigin:
    """Where the bundle's reference was measured: the source run, its machine and versions."""

    run_dir: str  # the run folder the bundle was made from, as given to `harness bundle`
    run_id: str
    run_created_unix: float
    environment: Environment  # versions of everything that can change a number, on that machine
    verdict: Verdict  # how that run ended
    harness_version: str
    # the weights file the run was given (RecipeRecord.weights), hashed when the bundle was made;
    # None: the recipe's own seeded weights, or the file is gone
    weights_sha256: str | None = None


@dataclass(frozen=True)
class BundleManifest:
    recipe: RecipeRecord
    settings: RecipeSettings
    precisions: tuple[str, ...]
    # the reference runner (normally Torch at FP32) as the source run recorded it, and its name there
    reference: str
    reference_runner: RunnerRecord
    samples: SamplesDetails  # the sample sets, as the source run's samples stage recorded them
    # every file of the bundle: "samples", the reference's outputs, "onnx_final", each "onnx_<precision>"
    artifacts: Mapping[str, Artifact]
    origin: BundleOrigin
    overrides: ToleranceOverrides = field(default_factory=ToleranceOverrides)
    created_unix: float = 0.0
    schema: str = BUNDLE_SCHEMA
    schema_version: int = BUNDLE_SCHEMA_VERSION


def manifest_to_text(manifest: BundleManifest) -> str:
    return json.dumps(to_json(manifest), indent=1) + "\n"


def save_manifest(manifest: BundleManifest, bundle_dir: Path) -> Path:
    path = Path(bundle_dir) / MANIFEST_FILE
    write_text_atomic(path, manifest_to_text(manifest))
    return path


def manifest_from_json(data: Any, source: str) -> BundleManifest:
    if not isinstance(data, dict) or data.get("schema") != BUNDLE_SCHEMA:
        schema = data.get("schema") if isinstance(data, dict) else None
        raise UsageError(
            f"{source} has schema {schema!r}, not {BUNDLE_SCHEMA!r}: it was not written by `harness bundle`"
        )
    if data.get("schema_version") != BUNDLE_SCHEMA_VERSION:
        raise UsageError(
            f"{source} is bundle schema version {data.get('schema_version')!r}; this trt-harness reads "
            f"version {BUNDLE_SCHEMA_VERSION}: make the bundle again with this trt-harness (`harness bundle`)"
        )
    try:
        return from_json(BundleManifest, data, "bundle")
    except SchemaError as e:
        raise UsageError(f"{source} is damaged or was edited: {e}; make the bundle again") from e


def load_manifest(bundle_dir: Path) -> BundleManifest:
    """The manifest of the bundle in `bundle_dir`, or a usage error naming the file."""
    path = Path(bundle_dir) / MANIFEST_FILE
    if not Path(bundle_dir).is_dir():
        raise UsageError(f"{bundle_dir} is not a folder; pass the folder `harness bundle` wrote")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"{path} not found: {bundle_dir} is not a bundle; make one with `harness bundle <run dir>`"
        ) from None
    except UnicodeDecodeError:
        raise UsageError(
            f"{path} is not UTF-8 text, so not a bundle manifest; make the bundle again"
        ) from None
    except OSError as e:
        raise UsageError(f"{path} cannot be read: {e.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not valid JSON ({e}); make the bundle again") from None
    return manifest_from_json(data, str(path))
