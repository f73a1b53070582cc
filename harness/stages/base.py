"""What a stage is: a name, a function from what it reads to what it wrote, and its cache key.

A stage receives a `StageInput` (the run's settings, the run folder, and the ledger entries of the
stages before it, whose artifacts are files with hashes) and returns a `StageOutput` (the artifacts
it wrote and its typed details). Nothing else passes between stages: no live model, no feeds.

The cache key a stage gives lists the data and settings it depends on; the pipeline adds the hash of
the code it runs, derived from the stage module's imports (`harness.code_keys`), so no list of source
files is kept by hand.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from trt_harness.harness.environment import package_versions
from trt_harness.harness.sample_files import SampleFolder
from trt_harness.models.core.artifacts import Artifact, sha256_file
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.core.serde import to_json
from trt_harness.models.recipe import PRECISIONS, Recipe
from trt_harness.models.results.comparisons import SAMPLES
from trt_harness.models.results.recipe import RecipeRecord, ToleranceOverrides
from trt_harness.models.results.stages import SamplesDetails, StageDetails, StageRecord

D = TypeVar("D", bound=StageDetails)


class StageSkipped(Exception):
    """Raised by a stage that has nothing to do here; an expected outcome, recorded with its reason."""


class StageFailed(Exception):
    """Raised by a stage on an expected failure (e.g. TensorRT refused the model); recorded, stops the run."""

    def __init__(self, reason: str, details: StageDetails | None = None) -> None:
        super().__init__(reason)
        self.details = details


@dataclass(frozen=True)
class RunConfig:
    """Everything a run is asked to do: the recipe and what the command line says."""

    recipe: Recipe
    out_dir: Path
    weights: Path | None = None
    overrides: ToleranceOverrides = field(default_factory=ToleranceOverrides)
    backends: tuple[str, ...] | None = None  # None: every registered backend
    cache_dir: Path | None = None  # None: no cache
    precisions: tuple[str, ...] | None = None  # None: the recipe's
    fp16_auto_block_list: bool = True  # keep tensors that overflow/underflow FP16 in FP32
    baseline: Path | None = None  # an earlier run to gate on (`--baseline`); None: no baseline gate
    baseline_factor: float | None = None  # None: the recipe's
    baseline_floor: float | None = None  # None: the recipe's
    shard: tuple[int, int] | None = None  # (index, count), 0-based: judge that slice of the samples

    @property
    def precisions_in_order(self) -> tuple[str, ...]:
        wanted = set(self.precisions or self.recipe.precisions)
        return tuple(p for p in PRECISIONS if p in wanted)


@dataclass(frozen=True)
class StageInput:
    """What a stage may read. `config` is None when a saved run is re-judged (`harness compare`)."""

    run_dir: Path
    recipe_record: RecipeRecord
    overrides: ToleranceOverrides
    precisions: tuple[str, ...]
    earlier: Mapping[str, StageRecord]
    config: RunConfig | None = None

    @property
    def recipe(self) -> Recipe:
        if self.config is None:
            raise HarnessError("this stage runs recipe code, which a re-judged saved run does not have")
        return self.config.recipe

    def artifacts(self) -> dict[str, Artifact]:
        """Every artifact the earlier stages wrote, by name."""
        return {name: a for record in self.earlier.values() for name, a in record.artifacts.items()}

    def artifact(self, name: str) -> Artifact:
        found = self.artifacts().get(name)
        if found is None:
            raise HarnessError(f"no '{name}' artifact from an earlier stage; re-run `harness convert`")
        return found

    def optional_artifact(self, name: str) -> Artifact | None:
        return self.artifacts().get(name)

    def samples(self, sample_set: str = SAMPLES) -> SampleFolder:
        """The feeds of one sample set, read one at a time from the samples stage's files."""
        details = self.details(SamplesDetails)
        if details is None or sample_set not in details.sets:
            raise HarnessError(
                f"no sample set '{sample_set}' from the samples stage; re-run `harness convert`"
            )
        return SampleFolder(self.run_dir, self.artifact("samples"), details.sets[sample_set].folder)

    def first_feed(self) -> dict[str, Any]:
        return next(iter(self.samples()))

    def final_onnx(self) -> Artifact:
        """The FP32 model every precision starts from: after surgery, or as exported."""
        return self.optional_artifact("onnx_final") or self.artifact("onnx")

    def onnx_for(self, precision: str) -> Artifact:
        """The ONNX model a precision runs from: its variant if one was made, else the final FP32 model."""
        return self.optional_artifact(f"onnx_{precision}") or self.final_onnx()

    def details(self, kind: type[D]) -> D | None:
        record = self.earlier.get(kind.__json_tag__)  # type: ignore[attr-defined]
        if record is None or not record.done or not isinstance(record.details, kind):
            return None
        return record.details


@dataclass(frozen=True)
class StageOutput:
    artifacts: Mapping[str, Artifact] = field(default_factory=dict)
    details: StageDetails | None = None
    reason: str | None = None  # a note for the ledger (e.g. what a scan found unfixed)


# what judges outputs (tolerances, detection criteria) is left out: changing it re-runs compare only
_JUDGING_FIELDS = (
    "default_tolerance",
    "tolerances",
    "precision_tolerances",
    "detection",
    "class_axes",
    "spatial_axes",
    "spatial_axis_names",
    "weights",
    # where the recipe came from: its code is in the code keys (pipeline.recipe_modules), as a built-in's is
    "origin",
    "checks",
    "weights_source",
)


def recipe_fingerprint(recipe: Recipe) -> dict[str, Any]:
    """The recipe as far as it determines models and outputs (for cache keys)."""
    described = to_json(RecipeRecord.of(recipe, None))
    return {
        **{k: v for k, v in described.items() if k not in _JUDGING_FIELDS},
        "shape_ranges": to_json(recipe.shape_ranges),
        "export": to_json(recipe.export),
        "surgery_passes": list(recipe.surgery_passes),
        "build": to_json(recipe.build),
        "compare_profile_shapes": recipe.compare_profile_shapes,
        # an installed recipe's own code is not followed into (a library): its version stands for it
        **(
            {"recipe_distribution": recipe.origin.distribution}
            if recipe.origin and recipe.origin.distribution
            else {}
        ),
    }


_built: dict[tuple[Any, ...], Any] = {}


def torch_model(recipe: Recipe, weights: Path | None) -> Any:
    """The recipe's Torch model, a copy of its own for each caller.

    Building runs the recipe's (possibly slow: seeded init with BatchNorm calibration, seconds) factory
    once per process for the same recipe and weights; each stage gets a deep copy, so no stage sees
    another's changes to the model.
    """
    key = (
        recipe.name,
        repr(sorted(recipe.params.items())),
        str(weights),
        sha256_file(weights) if weights else None,
        recipe.origin,  # two recipe files may give the same name; an edited file builds anew
    )
    if key not in _built:
        _built.clear()  # one model at a time: a long test session builds many recipes
        _built[key] = recipe.build_model(weights)
    return copy.deepcopy(_built[key])


def weights_hash(inp: StageInput) -> str | None:
    weights = inp.config.weights if inp.config else None
    return sha256_file(weights) if weights is not None else None


def versions(*distributions: str) -> dict[str, str | None]:
    installed = package_versions()
    return {d: installed.get(d) for d in distributions}


StageFn = Callable[[StageInput], StageOutput]
KeyFn = Callable[[StageInput], Mapping[str, Any]]


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    run: StageFn
    # the data and settings the output depends on; None: the stage is never cached
    key: KeyFn | None = None
    # the stage calls the recipe's own code (model, samples): its source joins the code key
    runs_recipe_code: bool = False
    # a failure of this stage still fails the run (exit 4) but does not stop the stages after it: only
    # the runners that need what it makes cannot run (TensorRT refusing a model leaves Torch and ORT)
    keep_going: bool = False
