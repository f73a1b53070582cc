"""samples: the recipe's sample feeds, and one batch at each distinct shape of its optimization profile,
written as files with hashes before anything else runs; every later stage reads them from there."""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence

import numpy as np
from trt_harness.harness.sample_files import sample_file, write_sample
from trt_harness.harness.stages.base import Stage, StageInput, StageOutput
from trt_harness.models.core.artifacts import Artifact
from trt_harness.models.core.errors import UsageError
from trt_harness.models.recipe import Feed, Recipe
from trt_harness.models.results.comparisons import SAMPLES
from trt_harness.models.results.shards import Shard
from trt_harness.models.results.stages import SamplesDetails, SampleSet

FOLDER = "samples"


def profile_feeds(recipe: Recipe, feeds: Sequence[Feed]) -> dict[str, list[Feed]]:
    """One feed at each distinct min/opt/max shape of the recipe's optimization profile.

    Only dynamic axes along which samples can be stacked (batch-like: the samples' own size there is
    the profile's, or 1) are resized, by cycling through the samples' entries; named "batch8" etc.
    Shapes no profile entry changes give no extra set.
    """
    sets: dict[str, list[Feed]] = {}
    for level in ("min", "opt", "max"):
        feed: dict[str, np.ndarray] = {}
        label_parts: dict[str, int] = {}
        for spec in recipe.inputs:
            ranges = recipe.shape_ranges.get(spec.name)
            if ranges is None or 0 not in spec.dynamic_axes:
                array = feeds[0][spec.name]
            else:
                pool = np.concatenate([f[spec.name] for f in feeds], axis=0)
                size = getattr(ranges, level)[0]
                array = pool[np.arange(size) % pool.shape[0]]
                label_parts[spec.dynamic_axes[0]] = size
            feed[spec.name] = np.ascontiguousarray(array)
        if not label_parts:
            return {}
        label = "-".join(f"{dim}{size}" for dim, size in sorted(label_parts.items()))
        sets.setdefault(_folder_name(label), [feed])
    return sets


def _folder_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label) or "set"


def _label(name: str, feeds: Sequence[Mapping[str, np.ndarray]]) -> str:
    if name == SAMPLES:
        return ""
    shown = ", ".join(f"{input_name} {'x'.join(map(str, a.shape))}" for input_name, a in feeds[0].items())
    return f"at {shown}"


def _checked_feeds(recipe: Recipe) -> list[Feed]:
    feeds = recipe.sample_inputs()
    if not feeds:
        raise UsageError(f"recipe '{recipe.name}' gives no sample inputs; its sample_inputs() returned none")
    for index, feed in enumerate(feeds):
        if not isinstance(feed, Mapping) or set(feed) != set(recipe.input_names):
            got = sorted(feed) if isinstance(feed, Mapping) else type(feed).__name__
            raise UsageError(
                f"recipe '{recipe.name}': sample {index} has inputs {got}, the recipe declares "
                f"{list(recipe.input_names)}; make sample_inputs() return one dict per inference with those keys"
            )
    return [{name: np.ascontiguousarray(feed[name]) for name in recipe.input_names} for feed in feeds]


def write_samples(inp: StageInput) -> StageOutput:
    recipe = inp.recipe
    feeds = _checked_feeds(recipe)
    sets = {SAMPLES: feeds}
    if recipe.compare_profile_shapes:
        sets.update(profile_feeds(recipe, feeds))
    shard = shard_of(inp, len(feeds))
    if shard is not None:
        # profile sets come from all samples, judged once (by the first shard), as one run does
        sets = {SAMPLES: feeds[shard.first : shard.first + shard.samples]} | (
            {k: v for k, v in sets.items() if k != SAMPLES} if shard.index == 0 else {}
        )
    root = inp.run_dir / FOLDER
    shutil.rmtree(root, ignore_errors=True)  # ours: samples of an earlier run must not mix in
    records = {}
    for name, set_feeds in sets.items():
        for index, feed in enumerate(set_feeds):
            write_sample(sample_file(root / name, index), feed)
        records[name] = SampleSet(
            folder=f"{FOLDER}/{name}",
            samples=len(set_feeds),
            shapes=tuple({k: tuple(v.shape) for k, v in feed.items()} for feed in set_feeds),
            label=_label(name, set_feeds),
        )
    return StageOutput(
        {"samples": Artifact.of_folder(inp.run_dir, FOLDER)}, SamplesDetails(records, shard=shard)
    )


def shard_of(inp: StageInput, total: int) -> Shard | None:
    """Which of the recipe's `total` samples the run judges (`--shard i/n`): a contiguous slice."""
    wanted = inp.config.shard if inp.config is not None else None
    if wanted is None:
        return None
    index, count = wanted
    if count > total:
        raise UsageError(
            f"--shard {index + 1}/{count}: recipe '{inp.recipe.name}' has only {total} samples; "
            f"use at most {total} shards"
        )
    first, stop = index * total // count, (index + 1) * total // count
    return Shard(index=index, count=count, first=first, samples=stop - first, total=total)


# never cached: making samples is cheap, and later stages key on the hash of what it wrote
STAGE = Stage("samples", "Sample inputs", write_samples, key=None, runs_recipe_code=True)
