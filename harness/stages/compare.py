"""compare: every pair of runners that ran, matched by output name, streaming one sample at a time.

Which pairs are compared is decided here and recorded (`ComparisonGroup`), so reports never re-derive
it: at FP32 every two FP32 runners (reference first, neighbours by rank first) on every sample set
they ran; at a reduced precision P the reference backend's FP32 runner against each P runner, and the
P runners against each other, on the recipe's samples. On the recipe's samples at FP32 the outputs
are also cross-matched (an ordering mismatch is named), error maps are drawn, and detections compared.

The stage reads only what the run recorded (the recipe record, the run's runners, saved files), so
`harness compare` re-judges a saved run exactly as the run itself judged it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from trt_harness.harness.comparison import compare_runs, default_pairs
from trt_harness.harness.crossmatch import cross_match
from trt_harness.harness.detections import (
    DETECTION_IMAGES,
    compare_pair,
    detections_of,
    is_set_compared,
    spec_output_problem,
    write_detection_images,
)
from trt_harness.harness.heatmap import ErrorHeatmap
from trt_harness.harness.sample_files import SampleFolder
from trt_harness.harness.stages.base import Stage, StageInput, StageOutput, StageSkipped
from trt_harness.models.core.artifacts import Artifact, write_text_atomic
from trt_harness.models.core.errors import HarnessError, UsageError
from trt_harness.models.core.serde import to_json
from trt_harness.models.recipe import DetectionSpec
from trt_harness.models.results.comparisons import SAMPLES, ComparisonGroup, ErrorMap, PairNotCompared
from trt_harness.models.results.detections import DetectionsReport
from trt_harness.models.results.recipe import RecipeRecord
from trt_harness.models.results.shards import (
    STATE_FILE,
    STATE_SCHEMA,
    ComparisonStates,
    RunComparisonState,
    Shard,
)
from trt_harness.models.results.stages import CompareDetails, RunDetails, RunnerRecord, SamplesDetails

Sample = dict[str, dict[str, np.ndarray]]


def comparison_groups(run: RunDetails, sample_sets: Sequence[str]) -> tuple[ComparisonGroup, ...]:
    """Which runner pairs to compare on which sample set, at which precision (see the module doc)."""
    executed = run.executed()
    groups = []
    for sample_set in sample_sets:
        fp32 = [n for n, r in executed.items() if r.precision == "fp32" and sample_set in r.sample_sets]
        if len(fp32) >= 2:
            groups.append(ComparisonGroup(sample_set, "fp32", tuple(default_pairs(fp32))))
    references = [n for n, r in executed.items() if r.reference and r.precision == "fp32"]
    for precision in sorted({r.precision for r in executed.values()} - {"fp32"}):
        variant = [n for n, r in executed.items() if r.precision == precision]
        pairs = [(ref, v) for ref in references for v in variant]
        pairs += [(a, b) for i, a in enumerate(variant) for b in variant[i + 1 :]]
        if pairs:
            groups.append(ComparisonGroup(SAMPLES, precision, tuple(pairs)))
    return tuple(groups)


def pairs_not_compared(run: RunDetails) -> tuple[PairNotCompared, ...]:
    """FP32 pairs with a runner that did not execute, each with that runner's reason."""
    fp32 = {n: r for n, r in run.runners.items() if r.precision == "fp32"}
    missing = []
    for ref, cand in default_pairs(fp32):
        idle = next((fp32[n] for n in (ref, cand) if not fp32[n].executed), None)
        if idle is not None:
            missing.append(
                PairNotCompared(
                    ref, cand, f"{idle.display_name} {idle.state}: {idle.reason or 'no reason recorded'}"
                )
            )
    return tuple(missing)


def _outputs(inp: StageInput, runner: RunnerRecord, name: str, sample_set: str) -> SampleFolder:
    if runner.outputs is None:
        raise HarnessError(f"runner '{name}' has no saved outputs; re-run `harness convert`")
    return SampleFolder(inp.run_dir, inp.artifact(runner.outputs), f"outputs/{name}/{sample_set}")


def _samples(folders: Mapping[str, SampleFolder]) -> Iterator[Sample]:
    lengths = {name: len(folder) for name, folder in folders.items()}
    if len(set(lengths.values())) > 1:
        raise HarnessError(
            f"the runners saved different numbers of samples {lengths}; re-run `harness convert`"
        )
    streams = {name: iter(folder) for name, folder in folders.items()}
    for _ in range(next(iter(lengths.values()), 0)):
        yield {name: next(stream) for name, stream in streams.items()}


def _without_set_compared(recipe: RecipeRecord, sample: Sample) -> Sample:
    """The sample without the outputs the detection gate compares as sets (a post-processed
    detector's boxes, scores, labels...): position by position they differ whenever the order does."""
    spec = recipe.detection
    if spec is None:
        return sample
    return {
        runner: {name: value for name, value in outputs.items() if not is_set_compared(spec, name)}
        for runner, outputs in sample.items()
    }


def _judge_group(
    inp: StageInput, run: RunDetails, group: ComparisonGroup, recipe: RecipeRecord, primary: bool
) -> tuple[Any, list[Any], list[ErrorMap]]:
    names = list(dict.fromkeys(name for pair in group.pairs for name in pair))
    folders = {name: _outputs(inp, run.runners[name], name, group.sample_set) for name in names}
    first: list[Sample] = []
    heatmaps = (
        {
            (output, ref, cand): ErrorHeatmap(tuple(axes))
            for output, axes in recipe.spatial_axes.items()
            for ref, cand in group.pairs
        }
        if primary
        else {}
    )

    def samples() -> Iterator[Sample]:
        for sample in _samples(folders):
            if primary and not first:
                first.append(sample)  # the cross-match sees every output, set-compared ones too
            for (output, ref, cand), heatmap in heatmaps.items():
                if output in sample[ref] and output in sample[cand]:
                    heatmap.update(sample[ref][output], sample[cand][output])
            yield _without_set_compared(recipe, sample)

    report = compare_runs(
        samples(),
        pairs=list(group.pairs),
        tolerance_for=lambda output: recipe.tolerance_for(output, group.precision, inp.overrides),
        class_axes=recipe.class_axes,
        checks=recipe.checks,
        output_names=recipe.output_names or None,  # () when derived from the returned structure
    )
    crossmatch = (
        [
            cross_match(first[0][ref], first[0][cand], ref_backend=ref, cand_backend=cand)
            for ref, cand in group.pairs
        ]
        if first
        else []
    )
    maps = [h.record(output, ref, cand) for (output, ref, cand), h in heatmaps.items() if h.samples]
    return report, crossmatch, maps


def _detections(
    inp: StageInput,
    spec: DetectionSpec,
    recipe: RecipeRecord,
    run: RunDetails,
    groups: Sequence[ComparisonGroup],
) -> DetectionsReport:
    problem = spec_output_problem(spec, recipe.output_names)
    if problem is not None:
        raise UsageError(f"recipe '{recipe.name}': {problem}")
    pairs = [(ref, cand, g.precision) for g in groups if g.sample_set == SAMPLES for ref, cand in g.pairs]
    runners = list(dict.fromkeys(name for ref, cand, _ in pairs for name in (ref, cand)))
    folders = {name: _outputs(inp, run.runners[name], name, SAMPLES) for name in runners}
    found = detections_of(spec, runners, _samples(folders))
    images_file = None
    if recipe.inputs:
        write_detection_images(inp.samples(), recipe.inputs[0].name, inp.run_dir / DETECTION_IMAGES)
        images_file = DETECTION_IMAGES
    return DetectionsReport(
        output=spec.output,
        spec=spec,
        images=len(found[runners[0]]) if runners else 0,
        images_file=images_file,
        # masks are image-sized: compared above, not kept in results.json
        runners={
            name: tuple(d if d is None else d.without_masks() for d in per_image)
            for name, per_image in found.items()
        },
        pairs=tuple(compare_pair(spec, ref, cand, p, found[ref], found[cand]) for ref, cand, p in pairs),
    )


def compare(inp: StageInput) -> StageOutput:
    run = inp.details(RunDetails)
    samples = inp.details(SamplesDetails)
    if run is None or samples is None:
        raise StageSkipped("the run stage recorded no outputs")
    groups = comparison_groups(run, list(samples.sets))
    if not groups:
        executed = ", ".join(run.executed()) or "none"
        raise StageSkipped(f"fewer than two backends executed ({executed})")
    recipe = inp.recipe_record
    comparisons, missing, judged, states = [], [], [], []
    crossmatch: list[Any] = []
    maps: list[ErrorMap] = []
    for group in groups:
        primary = group.sample_set == SAMPLES and group.precision == "fp32"
        report, group_crossmatch, group_maps = _judge_group(inp, run, group, recipe, primary)
        tags = {"sample_set": group.sample_set, "precision": group.precision}
        comparisons += [dataclasses.replace(c, **tags) for c in report.comparisons]
        missing += [dataclasses.replace(m, **tags) for m in report.missing]
        judged.append(dataclasses.replace(group, samples=report.samples))
        if report.state is not None:
            states.append(dataclasses.replace(report.state, **tags))
        if primary:
            crossmatch, maps = group_crossmatch, group_maps
    detections = _detections(inp, recipe.detection, recipe, run, groups) if recipe.detection else None
    artifacts = {}
    if samples.shard is not None:  # a shard's statistics are merged with the others' (`harness merge`)
        artifacts["comparison_state"] = write_states(inp.run_dir, tuple(states), samples.shard)
    if detections is not None and detections.images_file:
        artifacts["detection_images"] = Artifact.of_file(inp.run_dir, detections.images_file)
    details = CompareDetails(
        groups=tuple(judged),
        comparisons=tuple(comparisons),
        missing=tuple(missing),
        crossmatch=tuple(crossmatch),
        error_maps=tuple(maps),
        detections=detections,
        not_compared=pairs_not_compared(run),
    )
    return StageOutput(artifacts, details)


def write_states(run_dir: Path, states: tuple[RunComparisonState, ...], shard: Shard) -> Artifact:
    document = ComparisonStates(schema=STATE_SCHEMA, groups=states, shard=shard)
    write_text_atomic(run_dir / STATE_FILE, json.dumps(to_json(document)))
    return Artifact.of_file(run_dir, STATE_FILE)


def _runners_key(run: RunDetails | None) -> Any:
    """What of the run decides the comparison (not its timings, which change every run)."""
    if run is None:
        return None
    return {
        name: [r.state, r.precision, r.reference, list(r.sample_sets), r.outputs]
        for name, r in run.runners.items()
    }


def compare_key(inp: StageInput) -> dict[str, Any]:
    return {
        "outputs": {k: a.sha256 for k, a in inp.artifacts().items() if k.startswith("outputs_")},
        "samples": inp.artifact("samples").sha256,
        "runners": _runners_key(inp.details(RunDetails)),
        # where the weights file lies does not change a verdict (its hash is in the outputs' keys)
        "recipe": {
            k: v for k, v in to_json(inp.recipe_record).items() if k not in ("weights", "weights_source")
        },
        "overrides": to_json(inp.overrides),
    }


STAGE = Stage("compare", "Compare outputs", compare, compare_key)
