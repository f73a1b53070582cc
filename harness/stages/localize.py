"""localize: after the verdict, on demand (`harness localize RUN_DIR`, `harness convert --localize`).

Not one of `pipeline.STAGES`: it runs from a finished run folder (results.json, the module map, the
ONNX models and the sample files), rebuilds the recipe's Torch model, compares it layer by layer with
ONNX Runtime on the failing sample(s) (`harness.localize`) and records `Results.localization`. It
never changes the verdict.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trt_harness.conversions.ort_session import OrtSettings
from trt_harness.harness.localize import DEFAULT_CHUNK_BYTES, layer_curve, reference_outputs
from trt_harness.harness.localize_tensorrt import tensorrt_side
from trt_harness.harness.stages.base import StageInput, torch_model
from trt_harness.models.core.artifacts import Artifact
from trt_harness.models.core.errors import HarnessError, UsageError
from trt_harness.models.recipe import Feed, Recipe, Tolerance
from trt_harness.models.recipes import get_recipe
from trt_harness.models.results.comparisons import SAMPLES, OutputComparison
from trt_harness.models.results.document import UNFINISHED, Results, load_results
from trt_harness.models.results.localize import (
    Fp16Triage,
    Int8Triage,
    LayerCurve,
    Localization,
    ModuleMap,
    TensorRTMarking,
    load_module_map,
)
from trt_harness.models.results.stages import CompareDetails, PrecisionDetails, RunDetails, RunnerRecord

REFERENCE, CANDIDATE = "torch", "onnxrt"


def _failing(
    compare: CompareDetails | None, runners: Mapping[str, RunnerRecord], precision: str
) -> list[OutputComparison]:
    """The failing comparisons of Torch (FP32) against the ORT runner of `precision`."""
    if compare is None:
        return []

    def backend(runner: str) -> str | None:
        record = runners.get(runner)
        return record.backend if record else None

    return [
        c
        for c in compare.comparisons
        if backend(c.ref_backend) == REFERENCE
        and backend(c.cand_backend) == CANDIDATE
        and c.precision == precision
        and c.sample_set == SAMPLES
        and not c.passed
    ]


def _samples_to_compare(failing: list[OutputComparison], count: int) -> list[int]:
    """The samples holding the worst elements of the failing outputs, worst first; else the first."""
    found: dict[int, None] = {}
    for comparison in failing:
        for worst in comparison.worst:
            if worst.index:
                found[int(worst.index[0])] = None
    return list(found)[:count] or list(range(count))


def _feeds(inp: StageInput, indexes: list[int]) -> list[tuple[int, Feed]]:
    wanted = set(indexes)
    feeds = [
        (i, feed) for i, feed in enumerate(itertools.islice(inp.samples(), max(wanted) + 1)) if i in wanted
    ]
    return sorted(feeds, key=lambda f: indexes.index(f[0]))


def _settings(recipe: Recipe) -> OrtSettings:
    """As the run's ORT session (on CPU: the comparison must run where the device is absent too)."""
    return OrtSettings(recipe.ort_optimization)


def _verified(artifact: Artifact, run_dir: Path) -> Path:
    try:
        return artifact.verified(run_dir)
    except HarnessError as e:
        raise UsageError(f"{run_dir}: {e}") from None


@dataclasses.dataclass(frozen=True)
class _TriageInputs:
    """What either precision's triage judges its candidates with, read once from the run."""

    tolerances: Mapping[str, Tolerance]
    feeds: list[Feed]
    references: list[Mapping[str, Any]]
    curve: LayerCurve | None
    already: tuple[str, ...]  # the variant's nodes already kept out of the reduced precision
    settings: OrtSettings


def _triage_inputs(
    inp: StageInput,
    model: Any,
    precision: str,
    failing: list[OutputComparison],
    samples: int,
    curves: list[LayerCurve],
    output_names: tuple[str, ...],
) -> _TriageInputs:
    tolerances = {o: inp.recipe_record.tolerance_for(o, precision, inp.overrides) for o in output_names}
    feeds = _judged_feeds(inp, failing, samples, tolerances)
    details = inp.details(PrecisionDetails)
    variant = details.variants.get(precision) if details else None
    return _TriageInputs(
        tolerances,
        feeds,
        [reference_outputs(model, feed, inp.recipe_record.input_names, output_names) for feed in feeds],
        next((c for c in curves if c.precision == precision), None),
        tuple(variant.block_list) if variant else (),
        _settings(inp.recipe) if inp.config else OrtSettings(),
    )


def _triage(
    inp: StageInput,
    model: Any,
    module_map: ModuleMap,
    failing: list[OutputComparison],
    samples: int,
    curves: list[LayerCurve],
    output_names: tuple[str, ...],
) -> Fp16Triage:
    from trt_harness.harness.fp16_triage import triage_fp16

    t = _triage_inputs(inp, model, "fp16", failing, samples, curves, output_names)
    return triage_fp16(
        _verified(inp.final_onnx(), inp.run_dir),
        module_map,
        t.feeds,
        t.references,
        t.tolerances,
        t.curve,
        already_blocked=t.already,
        settings=t.settings,
    )


# checks that judge a statistic over every element of every sample: a triage judged on the worst
# samples alone would pass or fail another statistic than the compare stage's
_STATISTIC_CHECKS = ("mean", "median", "quantile")


def _judged_feeds(
    inp: StageInput, failing: list[OutputComparison], samples: int, tolerances: Mapping[str, Tolerance]
) -> list[Feed]:
    """The feeds a triage judges its candidates on: all samples under a statistic check, else the
    worst `samples` of the failing outputs."""
    if any(t.check in _STATISTIC_CHECKS for t in tolerances.values()):
        return list(inp.samples())
    return [feed for _, feed in _feeds(inp, _samples_to_compare(failing, samples))]


def _int8_triage(
    inp: StageInput,
    model: Any,
    module_map: ModuleMap,
    failing: list[OutputComparison],
    samples: int,
    curves: list[LayerCurve],
    output_names: tuple[str, ...],
) -> Int8Triage:
    from trt_harness.harness.int8_triage import triage_int8

    t = _triage_inputs(inp, model, "int8", failing, samples, curves, output_names)
    return triage_int8(
        _verified(inp.final_onnx(), inp.run_dir),
        module_map,
        list(inp.samples()),  # the precision stage calibrates on every sample
        t.feeds,
        t.references,
        t.tolerances,
        t.curve,
        already_excluded=t.already,
        settings=t.settings,
    )


def localize_run(
    run_dir: Path,
    recipe: Recipe | None = None,
    *,
    samples: int = 1,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    triage: bool = True,
    tensorrt: bool = False,
) -> Results:
    """The layer-wise comparison of a finished run; returns its results with `localization` set
    (the caller writes them). `tensorrt`: also build the final model with the mapped tensors marked
    and, where it can execute, compare Torch with TensorRT layer by layer (`Localization.tensorrt_marking`)."""
    results = load_results(run_dir)
    if results.verdict.status == UNFINISHED.status:
        raise UsageError(f"{run_dir}: {UNFINISHED.summary}")
    record = results.recipe
    if recipe is None:
        recipe = get_recipe(record.name, **record.params)
    weights = Path(record.weights) if record.weights else None
    earlier = {s.name: s for s in results.stages}
    inp = StageInput(run_dir, record, results.overrides, record.precisions, earlier)
    map_artifact = inp.optional_artifact("module_map")
    if map_artifact is None:
        raise UsageError(
            f"{run_dir}: the run has no module map (written by the export stage since trt-harness "
            "localizes); run `harness convert` again"
        )
    module_map = load_module_map(_verified(map_artifact, run_dir))
    run = results.details(RunDetails)
    if run is None:
        raise UsageError(f"{run_dir}: the run did not get as far as running the backends")
    compare = results.details(CompareDetails)
    model = torch_model(recipe, weights).eval()
    output_names = record.output_names or tuple(o.output for o in (compare.comparisons if compare else ()))
    curves: list[LayerCurve] = []
    notes: list[str] = []
    fp16_failing: list[OutputComparison] = []
    int8_failing: list[OutputComparison] = []
    for precision in ("fp32", "fp16", "int8"):
        artifact = inp.final_onnx() if precision == "fp32" else inp.optional_artifact(f"onnx_{precision}")
        if artifact is None:
            continue
        failing = _failing(compare, run.runners, precision)
        if precision == "fp16":
            fp16_failing = failing
        if precision == "int8":
            int8_failing = failing
        output = failing[0].output if failing else output_names[0]
        tolerance = record.tolerance_for(output, precision, results.overrides)
        feeds = _feeds(inp, _samples_to_compare(failing, samples))
        try:
            curve = layer_curve(
                model,
                module_map,
                _verified(artifact, run_dir),
                feeds,
                input_names=record.input_names,
                output_names=output_names,
                output=output,
                tolerance=tolerance,
                precision=precision,
                chunk_bytes=chunk_bytes,
                settings=_settings(recipe),
            )
        except HarnessError as e:
            notes.append(f"{precision}: the layer-wise comparison failed: {e}")
            continue
        curves.append(curve)
        if not failing:
            notes.append(f"{precision}: no ORT output fails against Torch; compared sample {feeds[0][0]}")
    fp16_triage = None
    if triage and fp16_failing and inp.optional_artifact("onnx_fp16") is not None:
        fp16_triage = _triage(inp, model, module_map, fp16_failing, samples, curves, output_names)
    int8_triage = None
    if triage and int8_failing and inp.optional_artifact("onnx_int8") is not None:
        int8_triage = _int8_triage(inp, model, module_map, int8_failing, samples, curves, output_names)
    tensorrt_marking = None
    if tensorrt:
        tensorrt_marking = _tensorrt_side(inp, recipe, model, module_map, compare, run, samples, notes)
    localization = Localization(
        tuple(curves),
        fp16_triage,
        tuple(notes),
        int8_triage=int8_triage,
        tensorrt_marking=tensorrt_marking,
    )
    return dataclasses.replace(results, localization=localization)


def _tensorrt_side(
    inp: StageInput,
    recipe: Recipe,
    model: Any,
    module_map: ModuleMap,
    compare: CompareDetails | None,
    run: RunDetails,
    samples: int,
    notes: list[str],
) -> TensorRTMarking | None:
    """The marked TensorRT builds of the final FP32 model, and Torch against the output-marked engine
    where it can execute, on the samples of the FP32 Torch-vs-ORT curve."""
    record = inp.recipe_record
    output_names = record.output_names or tuple(o.output for o in (compare.comparisons if compare else ()))
    # where TensorRT ran in the run, its own failing samples; else the ones ORT fails on
    failing = _failing_tensorrt(compare, run.runners) or _failing(compare, run.runners, "fp32")
    output = failing[0].output if failing else output_names[0]
    try:
        return tensorrt_side(
            model,
            module_map,
            _verified(inp.final_onnx(), inp.run_dir),
            inp.run_dir,
            _feeds(inp, _samples_to_compare(failing, samples)),
            options=recipe.build,
            shape_ranges=recipe.shape_ranges,
            input_names=record.input_names,
            output_names=output_names,
            output=output,
            tolerance=record.tolerance_for(output, "fp32", inp.overrides),
        )
    except HarnessError as e:
        notes.append(f"tensorrt: the layer-wise comparison failed: {e}")
        return None


def _failing_tensorrt(
    compare: CompareDetails | None, runners: Mapping[str, RunnerRecord]
) -> list[OutputComparison]:
    def backend(runner: str) -> str | None:
        record = runners.get(runner)
        return record.backend if record else None

    return [
        c
        for c in (compare.comparisons if compare else ())
        if backend(c.ref_backend) == REFERENCE
        and backend(c.cand_backend) == "tensorrt"
        and c.precision == "fp32"
        and c.sample_set == SAMPLES
        and not c.passed
    ]
