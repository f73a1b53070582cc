"""`harness merge`: one run's results from the run folders of its shards (`harness convert --shard i/n`).

Each shard judged a contiguous slice of the recipe's samples and wrote its accumulators' full state
(`comparison_state.json`); merging them in shard order gives the statistics and verdict one run over
every sample gives (harness.comparison: exact sums, fixed histogram bins, worst-k in one run's order).
Detections are per image and concatenate exactly. Error maps are not merged (each shard drew its own
from its slice), so the merged report has none; the cross-match reads the first sample, which is the
first shard's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from trt_harness.harness.comparison import merge_states
from trt_harness.harness.verdict import verdict_for
from trt_harness.models.core.errors import HarnessError, UsageError
from trt_harness.models.core.serde import from_json, to_json
from trt_harness.models.results.comparisons import SAMPLES
from trt_harness.models.results.detections import DetectionPair, DetectionsReport
from trt_harness.models.results.document import Results, load_results
from trt_harness.models.results.shards import STATE_FILE, STATE_SCHEMA, ComparisonStates
from trt_harness.models.results.stages import CompareDetails, RunDetails, SamplesDetails, StageRecord

STATE_ARTIFACT = "comparison_state"


@dataclasses.dataclass(frozen=True)
class ShardRun:
    dir: Path
    results: Results
    states: ComparisonStates


def load_shard(run_dir: Path) -> ShardRun:
    """A shard's results and comparison state, checked against the hash its results.json recorded."""
    results = load_results(run_dir)
    compare = results.stage("compare")
    artifact = compare.artifacts.get(STATE_ARTIFACT) if compare is not None else None
    if artifact is None:
        raise UsageError(
            f"{run_dir}: no {STATE_FILE} recorded; only runs made with `harness convert --shard i/n` "
            "that got as far as comparing can be merged"
        )
    try:
        path = artifact.verified(run_dir)
    except HarnessError as e:
        raise UsageError(f"{run_dir}: {e}; run that shard again") from None
    states = from_json(ComparisonStates, json.loads(path.read_text()), where=str(path))
    if states.schema != STATE_SCHEMA or states.shard is None:
        raise UsageError(f"{path}: schema {states.schema!r}, expected {STATE_SCHEMA!r} with a shard")
    return ShardRun(run_dir, results, states)


def _check_same_run(shards: Sequence[ShardRun]) -> None:
    first = shards[0]
    count = first.states.shard.count
    for shard in shards[1:]:
        for what, a, b in (
            ("recipe", to_json(first.results.recipe), to_json(shard.results.recipe)),
            ("tolerance overrides", to_json(first.results.overrides), to_json(shard.results.overrides)),
            ("shard count", count, shard.states.shard.count),
            ("sample count", first.states.shard.total, shard.states.shard.total),
        ):
            if a != b:
                raise UsageError(
                    f"{shard.dir} and {first.dir} differ in their {what}: merge only the shards of one "
                    "`harness convert` command line"
                )
    indices = sorted(s.states.shard.index for s in shards)
    if indices != list(range(count)):
        have = ", ".join(s.states.shard.label for s in sorted(shards, key=lambda s: s.states.shard.index))
        raise UsageError(f"shards {have} given, but all {count} of 1/{count}..{count}/{count} are needed")


def _merged_detections(reports: Sequence[DetectionsReport]) -> DetectionsReport:
    """Image lists concatenated in shard order, images renumbered as one run numbers them."""
    offsets, total = [], 0
    for report in reports:
        offsets.append(total)
        total += report.images
    runners = {
        name: tuple(d for report in reports for d in report.runners.get(name, ()))
        for name in reports[0].runners
    }
    pairs = []
    for i, pair in enumerate(reports[0].pairs):
        images = tuple(
            dataclasses.replace(image, image=image.image + offset)
            for report, offset in zip(reports, offsets, strict=True)
            for image in report.pairs[i].images
        )
        pairs.append(DetectionPair(pair.ref_backend, pair.cand_backend, pair.precision, pair.gated, images))
    return dataclasses.replace(
        reports[0], images=total, images_file=None, runners=runners, pairs=tuple(pairs)
    )


def merge_shards(run_dirs: Sequence[Path]) -> Results:
    """The results one run over every sample gives, from the run folders of all its shards."""
    if not run_dirs:
        raise UsageError("harness merge: give the run folders of every shard")
    shards = sorted((load_shard(d) for d in run_dirs), key=lambda s: s.states.shard.index)
    _check_same_run(shards)
    for shard in shards:
        if shard.results.verdict.exit_code not in (0, 1):
            raise UsageError(
                f"{shard.dir}: shard {shard.states.shard.label} ended with {shard.results.verdict.status} "
                f"({shard.results.verdict.summary}); run it again before merging"
            )
    first = shards[0].results
    comparisons, missing, groups = [], [], []
    for group in first.details(CompareDetails).groups:
        states = [
            g
            for shard in shards
            for g in shard.states.groups
            if (g.sample_set, g.precision) == (group.sample_set, group.precision)
        ]
        report = merge_states(states)
        tags = {"sample_set": group.sample_set, "precision": group.precision}
        comparisons += [dataclasses.replace(c, **tags) for c in report.comparisons]
        missing += [dataclasses.replace(m, **tags) for m in report.missing]
        groups.append(dataclasses.replace(group, samples=report.samples))
    details = [s.results.details(CompareDetails) for s in shards]
    detections = [d.detections for d in details if d.detections is not None]
    if detections and len(detections) != len(shards):
        raise UsageError("some shards compared detections and some did not; run them with one command line")
    compare = StageRecord(
        "compare",
        "ok",
        sum(s.results.stage("compare").duration_s for s in shards),
        f"merged from {len(shards)} shards: " + ", ".join(str(s.dir) for s in shards),
        {},
        dataclasses.replace(
            details[0],
            groups=tuple(groups),
            comparisons=tuple(comparisons),
            missing=tuple(missing),
            error_maps=(),  # each shard's covers only its slice
            detections=_merged_detections(detections) if detections else None,
        ),
    )
    results = first.with_stage(compare).with_stage(_merged_samples(shards)).with_stage(_merged_run(shards))
    return dataclasses.replace(results, verdict=verdict_for(results.stages))


def _merged_samples(shards: Sequence[ShardRun]) -> StageRecord:
    record = shards[0].results.stage("samples")
    details = shards[0].results.details(SamplesDetails)
    sets = dict(details.sets)
    parts = [s.results.details(SamplesDetails).sets[SAMPLES] for s in shards]
    sets[SAMPLES] = dataclasses.replace(
        parts[0], samples=sum(p.samples for p in parts), shapes=tuple(x for p in parts for x in p.shapes)
    )
    # the files stay in the shards' folders: the merged run records no artifacts of its own
    return dataclasses.replace(
        record, artifacts={}, details=dataclasses.replace(details, sets=sets, shard=None)
    )


def _merged_run(shards: Sequence[ShardRun]) -> StageRecord:
    record = shards[0].results.stage("run")
    details = shards[0].results.details(RunDetails)
    runners = {}
    for name, runner in details.runners.items():
        parts = [s.results.details(RunDetails).runners[name] for s in shards]
        runners[name] = dataclasses.replace(
            runner,
            samples=sum(p.samples for p in parts),
            inference_s=sum(p.inference_s for p in parts),
            outputs=None,  # in the shards' folders
        )
    return dataclasses.replace(record, artifacts={}, details=dataclasses.replace(details, runners=runners))


def find_shard_groups(artifacts: Path) -> dict[str, list[Path]]:
    """Run folders under `artifacts` (one level down) that are shards, grouped by the run they split:
    key = the shared folder name without its shard suffix (e.g. mnist-fp32-rtx for mnist-fp32-rtx-shard2)."""
    groups: dict[str, list[Path]] = {}
    for results_path in sorted(artifacts.glob(f"*/{STATE_FILE}")):
        run_dir = results_path.parent
        try:
            results = load_results(run_dir)
        except HarnessError:
            continue
        samples = results.details(SamplesDetails)
        if samples is None or samples.shard is None:
            continue
        key = json.dumps([to_json(results.recipe), to_json(results.overrides), samples.shard.count])
        groups.setdefault(key, []).append(run_dir)
    return {_merged_name(dirs): dirs for dirs in groups.values()}


def _merged_name(dirs: Sequence[Path]) -> str:
    names = [d.name for d in dirs]
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    prefix = prefix.rstrip("-_.").removesuffix("-shard").removesuffix("shard").rstrip("-_.")
    return f"{prefix or 'run'}-merged"
