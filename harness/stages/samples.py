"""samples: the recipe's sample feeds, and one feed at each profile row (every dynamic dim of the
optimization profile at its min/opt/max), written as files with hashes before anything else runs;
every later stage reads them from there.

Samples may differ in shape (a text encoder's sequence lengths): each is its own feed and is compared
on its own, never stacked with the others. A profile row's inputs come from the recipe's `make_input`
where it gives them (seeded by the row's name), else from the samples tiled along the batch axis; a
row neither can make is skipped, with the reason in the details and the ledger.
"""

from __future__ import annotations

import re
import shutil
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from trt_harness.harness.sample_files import sample_file, write_sample
from trt_harness.harness.stages.base import Stage, StageInput, StageOutput
from trt_harness.models.core.artifacts import Artifact
from trt_harness.models.core.errors import UsageError
from trt_harness.models.recipe import Feed, Recipe, Shape, TensorSpec
from trt_harness.models.results.comparisons import SAMPLES
from trt_harness.models.results.shards import Shard
from trt_harness.models.results.stages import SamplesDetails, SampleSet, SkippedProfileRow

FOLDER = "samples"


LEVELS = ("min", "opt", "max")


@dataclass(frozen=True)
class ProfileRow:
    """One shape at which the comparison also runs: the dynamic dims it sets, and a feed or why none."""

    name: str
    dims: dict[str, int]
    shapes: dict[str, Shape]
    feed: Feed | None
    source: str = ""
    reason: str = ""
    why: str = ""  # the reason without the row, shared by the rows skipped for the same cause


def profile_dims(recipe: Recipe) -> dict[str, dict[str, int]]:
    """Each dynamic dim of the optimization profile by name: its min/opt/max size.

    A dim shared by several inputs (its name reused, e.g. `batch` and `seq` of `input_ids` and
    `attention_mask`) is one dim, and must have one range in all of them.
    """
    dims: dict[str, dict[str, int]] = {}
    where: dict[str, str] = {}
    for spec in recipe.inputs:
        ranges = recipe.shape_ranges.get(spec.name)
        if ranges is None:
            continue
        if len(ranges.min) != len(spec.shape):
            raise UsageError(
                f"recipe '{recipe.name}': shape_ranges['{spec.name}'] has rank {len(ranges.min)}, the input "
                f"{spec.name}{list(spec.shape)} rank {len(spec.shape)}; give one size per axis"
            )
        for axis, dim in spec.dynamic_axes.items():
            sizes = {level: getattr(ranges, level)[axis] for level in LEVELS}
            if dim in dims and dims[dim] != sizes:
                raise UsageError(
                    f"recipe '{recipe.name}': dim '{dim}' is min/opt/max {_sizes(dims[dim])} in "
                    f"shape_ranges['{where[dim]}'] but {_sizes(sizes)} in shape_ranges['{spec.name}']; "
                    f"a dim shared by name has one range"
                )
            dims.setdefault(dim, sizes)
            where.setdefault(dim, spec.name)
    return dims


def _sizes(sizes: Mapping[str, int]) -> str:
    return "/".join(str(sizes[level]) for level in LEVELS)


def _row_dims(recipe: Recipe, feeds: Sequence[Feed]) -> list[tuple[str, dict[str, int]]]:
    """The rows: each dynamic dim alone at its min/opt/max (the other dims as in the first sample),
    and with several dims all of them together at min, at opt and at max (the profile's corners)."""
    dims = profile_dims(recipe)
    base = _dims_of(recipe, feeds[0])
    rows: list[tuple[str, dict[str, int]]] = []
    for dim, sizes in dims.items():
        rows += [(f"{dim}{sizes[level]}", {dim: sizes[level]}) for level in LEVELS]
    if len(dims) > 1:
        for level in LEVELS:
            corner = {dim: sizes[level] for dim, sizes in dims.items()}
            rows.append(("-".join(f"{dim}{size}" for dim, size in corner.items()), corner))
    unique: dict[tuple[tuple[str, int], ...], tuple[str, dict[str, int]]] = {}
    for name, row in rows:
        unique.setdefault(tuple(sorted((base | row).items())), (_folder_name(name), row))
    return list(unique.values())


def _dims_of(recipe: Recipe, feed: Feed) -> dict[str, int]:
    return {
        dim: feed[spec.name].shape[axis]
        for spec in recipe.inputs
        for axis, dim in spec.dynamic_axes.items()
        if axis < feed[spec.name].ndim
    }


def _row_shape(spec: TensorSpec, first: np.ndarray, dims: Mapping[str, int]) -> Shape:
    named = spec.dynamic_axes
    return tuple(
        dims.get(named[axis], size) if axis in named else size for axis, size in enumerate(first.shape)
    )


def _batch_axis(spec: TensorSpec) -> bool:
    # samples stack only along a dynamic leading axis (a batch); any other axis must already match
    return 0 in spec.dynamic_axes


def _from_samples(spec: TensorSpec, arrays: Sequence[np.ndarray], shape: Shape) -> np.ndarray:
    if not _batch_axis(spec):
        return arrays[0]
    pool = np.concatenate(arrays, axis=0)
    return pool[np.arange(shape[0]) % pool.shape[0]]


def _tileable(spec: TensorSpec, array: np.ndarray, shape: Shape) -> bool:
    skip = 1 if _batch_axis(spec) else 0
    return array.ndim == len(shape) and array.shape[skip:] == shape[skip:]


def _made(
    recipe: Recipe, spec: TensorSpec, shape: Shape, rng: np.random.Generator, row: str
) -> np.ndarray | None:
    if recipe.make_input is None:
        return None
    try:
        array = recipe.make_input(spec.name, shape, rng)
    except Exception as e:  # the recipe's own code: name the call that failed, not the harness
        raise UsageError(
            f"recipe '{recipe.name}': make_input('{spec.name}', {shape}) for profile row {row} raised "
            f"{type(e).__name__}: {e}"
        ) from e
    if array is None:
        return None
    if not isinstance(array, np.ndarray) or tuple(array.shape) != shape or str(array.dtype) != spec.dtype:
        got = f"{array.dtype}{list(array.shape)}" if isinstance(array, np.ndarray) else type(array).__name__
        raise UsageError(
            f"recipe '{recipe.name}': make_input('{spec.name}', {shape}) for profile row {row} returned {got}; "
            f"it must return a numpy array of {spec.dtype}{list(shape)} (or None to take the samples)"
        )
    return np.ascontiguousarray(array)


def _row(recipe: Recipe, feeds: Sequence[Feed], name: str, dims: dict[str, int]) -> ProfileRow:
    """The row's feed: each input from `make_input` where it gives one, else tiled from the samples
    that have the row's shape on every axis but the batch axis; else the row is skipped, with why."""
    shapes = {spec.name: _row_shape(spec, feeds[0][spec.name], dims) for spec in recipe.inputs}
    # seeded by the row's name: a row's values do not depend on which other rows there are
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    feed: dict[str, np.ndarray] = {}
    for spec in recipe.inputs:
        made = _made(recipe, spec, shapes[spec.name], rng, name)
        if made is not None:
            feed[spec.name] = made
    from_samples = [spec for spec in recipe.inputs if spec.name not in feed]
    # one set of samples for all inputs taken from them, so ids and their mask stay a pair
    usable = [f for f in feeds if all(_tileable(s, f[s.name], shapes[s.name]) for s in from_samples)]
    if from_samples and not usable:
        # name an input no sample fits; else they fit only in different samples
        culprit = next(
            (s for s in from_samples if not any(_tileable(s, f[s.name], shapes[s.name]) for f in feeds)),
            from_samples[0],
        )
        why = "the recipe has no make_input" if recipe.make_input is None else "make_input returned None"
        why = f"{why} for {culprit.name}, and no sample can be tiled to that shape"
        shown = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in shapes.items())
        reason = f"profile row {_dims_text(dims)} ({shown}) skipped: {why}"
        return ProfileRow(name, dims, shapes, None, reason=reason, why=why)
    for spec in from_samples:
        feed[spec.name] = np.ascontiguousarray(
            _from_samples(spec, [f[spec.name] for f in usable], shapes[spec.name])
        )
    made = len(recipe.inputs) - len(from_samples)
    sources = [source for source, n in (("samples", len(from_samples)), ("make_input", made)) if n]
    return ProfileRow(name, dims, shapes, {k: feed[k] for k in recipe.input_names}, ", ".join(sources))


def _dims_text(dims: Mapping[str, int]) -> str:
    return " ".join(f"{dim}={size}" for dim, size in dims.items())


def skipped_note(rows: Sequence[ProfileRow]) -> str | None:
    """The ledger's note on the rows not run, one clause per cause, e.g. "profile rows seq=1, seq=32
    skipped: the recipe has no make_input for input_ids, and no sample can be tiled to that shape"."""
    causes: dict[str, list[str]] = {}
    for row in rows:
        if row.feed is None:
            causes.setdefault(row.why, []).append(_dims_text(row.dims))
    return (
        "; ".join(
            f"profile row{'s' if len(names) > 1 else ''} {', '.join(names)} skipped: {why}"
            for why, names in causes.items()
        )
        or None
    )


def profile_rows(recipe: Recipe, feeds: Sequence[Feed]) -> list[ProfileRow]:
    """The comparison's rows over the optimization profile: every dynamic dim at its min/opt/max
    (see `_row_dims`), each with a feed, or the reason it has none. Rows that come to the same
    shapes are one row, named as the first of them."""
    return [_row(recipe, feeds, name, dims) for name, dims in _row_dims(recipe, feeds)]


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


def _check_dims(recipe: Recipe, feeds: Sequence[Feed]) -> None:
    """Each sample on its own: a dim shared by name has one size in all inputs, inside the profile."""
    dims = profile_dims(recipe)
    for index, feed in enumerate(feeds):
        seen: dict[str, tuple[str, int]] = {}
        for spec in recipe.inputs:
            array = feed[spec.name]
            if array.ndim != len(spec.shape):
                raise UsageError(
                    f"recipe '{recipe.name}': sample {index} input '{spec.name}' has shape {list(array.shape)}, "
                    f"the recipe declares {list(spec.shape)}"
                )
            for axis, dim in spec.dynamic_axes.items():
                size = array.shape[axis]
                if dim in seen and seen[dim][1] != size:
                    raise UsageError(
                        f"recipe '{recipe.name}': sample {index} has {dim}={seen[dim][1]} in '{seen[dim][0]}' "
                        f"but {dim}={size} in '{spec.name}'; inputs sharing a dim by name need one size"
                    )
                seen.setdefault(dim, (spec.name, size))
                if dim in dims and not dims[dim]["min"] <= size <= dims[dim]["max"]:
                    raise UsageError(
                        f"recipe '{recipe.name}': sample {index} input '{spec.name}' has {dim}={size}, outside "
                        f"the optimization profile's {dims[dim]['min']}..{dims[dim]['max']}; widen shape_ranges"
                    )


def write_samples(inp: StageInput) -> StageOutput:
    recipe = inp.recipe
    feeds = _checked_feeds(recipe)
    _check_dims(recipe, feeds)
    sets = {SAMPLES: feeds}
    rows = profile_rows(recipe, feeds) if recipe.compare_profile_shapes else []
    sets.update({row.name: [row.feed] for row in rows if row.feed is not None})
    sources = {row.name: row.source for row in rows if row.feed is not None}
    skipped = tuple(
        SkippedProfileRow(row.name, row.dims, row.shapes, row.reason) for row in rows if row.feed is None
    )
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
            label=_label(name, set_feeds)
            + (" (make_input)" if "make_input" in sources.get(name, "") else ""),
            source=sources.get(name, "samples"),
        )
    if shard is not None and shard.index != 0:
        skipped = ()  # judged (and reported) by the first shard, as its profile rows are
    return StageOutput(
        {"samples": Artifact.of_folder(inp.run_dir, FOLDER)},
        SamplesDetails(records, shard=shard, skipped_rows=skipped),
        reason=skipped_note(rows) if skipped else None,
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
