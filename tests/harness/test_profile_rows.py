"""Variable shapes: samples of different sequence lengths compared one by one, and profile rows over
every dynamic dim (`batch` and `seq` shared by `input_ids` and `attention_mask`) at min/opt/max, made
by the recipe's make_input, tiled from the samples, or skipped with the reason."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from trt_harness.harness.stages.samples import profile_rows, skipped_note, write_samples
from trt_harness.models.core.errors import UsageError
from trt_harness.models.recipe import Recipe, ShapeRange, TensorSpec
from trt_harness.models.results.stages import CompareDetails, SamplesDetails

from tests.harness import seq_recipe
from tests.harness.seq_recipe import BATCH_RANGE, SEQ_LENGTHS, SEQ_RANGE, VOCAB, seq_tiny

SEQ_ROWS = {f"seq{n}" for n in SEQ_RANGE}
BATCH_ROWS = {f"batch{n}" for n in BATCH_RANGE}
CORNERS = {"batch2-seq32", "batch4-seq128"}  # batch1-seq1 is the seq1 row (the first sample has batch 1)


def _rows(recipe: Recipe):
    return {row.name: row for row in profile_rows(recipe, recipe.sample_inputs())}


def test_rows_cover_every_dynamic_dim_at_min_opt_max_with_shared_dims_together() -> None:
    rows = _rows(seq_tiny("vocab"))
    assert set(rows) == SEQ_ROWS | BATCH_ROWS | CORNERS
    first_seq = SEQ_LENGTHS[0]
    for n in SEQ_RANGE:  # seq rows: batch as in the first sample
        assert rows[f"seq{n}"].shapes == {"input_ids": (1, n), "attention_mask": (1, n)}
    for n in BATCH_RANGE:  # batch rows: seq as in the first sample
        assert rows[f"batch{n}"].shapes == {"input_ids": (n, first_seq), "attention_mask": (n, first_seq)}
    assert rows["batch4-seq128"].shapes["attention_mask"] == (4, 128)
    for row in rows.values():
        assert row.feed is not None and row.source == "make_input"
        ids, mask = row.feed["input_ids"], row.feed["attention_mask"]
        assert ids.shape == mask.shape == row.shapes["input_ids"]
        assert ids.dtype == mask.dtype == np.int64
        assert ids.min() >= 0 and ids.max() < VOCAB  # token ids stay in the vocabulary
    # seeded: the same rows again, value for value; different rows get different ids
    again = _rows(seq_tiny("vocab"))
    assert all(np.array_equal(again[n].feed["input_ids"], r.feed["input_ids"]) for n, r in rows.items())
    assert not np.array_equal(rows["seq32"].feed["input_ids"], rows["batch2-seq32"].feed["input_ids"][:1])


def test_without_make_input_batch_rows_tile_the_samples_and_the_others_are_skipped() -> None:
    recipe = seq_tiny("none")
    rows = _rows(recipe)
    sample = recipe.sample_inputs()[0]
    for n in BATCH_RANGE:  # only the first sample has the first sample's length: tiled
        row = rows[f"batch{n}"]
        assert row.source == "samples"
        for name in ("input_ids", "attention_mask"):
            assert np.array_equal(row.feed[name], np.repeat(sample[name], n, axis=0))
    skipped = {name for name, row in rows.items() if row.feed is None}
    assert skipped == SEQ_ROWS | CORNERS
    assert rows["seq128"].reason == (
        "profile row seq=128 (input_ids 1x128, attention_mask 1x128) skipped: the recipe has no "
        "make_input for input_ids, and no sample can be tiled to that shape"
    )
    note = skipped_note(list(rows.values()))
    assert note.startswith("profile rows seq=1, seq=32, seq=128, batch=2 seq=32, batch=4 seq=128 skipped")


def test_make_input_may_leave_an_input_to_the_samples() -> None:
    def ids_only(name, shape, rng):
        return rng.integers(0, VOCAB, shape, dtype=np.int64) if name == "input_ids" else None

    rows = _rows(dataclasses.replace(seq_tiny("none"), make_input=ids_only))
    assert rows["batch2"].source == "samples, make_input" and rows["batch2"].feed is not None
    assert (
        rows["seq32"].feed is None and "make_input returned None for attention_mask" in rows["seq32"].reason
    )


def test_make_input_of_the_wrong_shape_or_dtype_is_a_usage_error() -> None:
    wrong = {
        "shape": lambda name, shape, rng: np.zeros((1, 3), np.int64),
        "dtype": lambda name, shape, rng: np.zeros(shape, np.float32),
        "list": lambda name, shape, rng: [0] * shape[-1],
    }
    for kind, make in wrong.items():
        with pytest.raises(
            UsageError, match=r"make_input\('input_ids', \(1, 18\)\) for profile row batch1"
        ) as e:
            _rows(dataclasses.replace(seq_tiny("none"), make_input=make))
        assert "int64[1, 18]" in str(e.value), kind


def test_a_make_input_that_raises_is_a_usage_error_naming_it() -> None:
    def broken(name, shape, rng):
        raise KeyError(name)

    with pytest.raises(
        UsageError, match=r"make_input\('input_ids', \(1, 18\)\) for profile row batch1 raised KeyError"
    ):
        _rows(dataclasses.replace(seq_tiny("none"), make_input=broken))


def _two_inputs(**changes) -> Recipe:
    recipe = seq_tiny("vocab")
    return dataclasses.replace(recipe, **changes)


def test_a_shared_dim_has_one_range() -> None:
    ranges = dict(seq_tiny().shape_ranges)
    ranges["attention_mask"] = ShapeRange((1, 1), (2, 16), (4, 128))
    with pytest.raises(UsageError, match=r"dim 'seq' is min/opt/max 1/32/128 .* but 1/16/128"):
        _rows(_two_inputs(shape_ranges=ranges))


class _Input:
    def __init__(self, recipe: Recipe, tmp_path: Path) -> None:
        self.recipe, self.run_dir, self.config = recipe, tmp_path, None


def test_each_sample_needs_one_size_per_shared_dim_inside_the_profile(tmp_path: Path) -> None:
    feeds = [dict(f) for f in seq_tiny().sample_inputs()]
    feeds[1]["attention_mask"] = feeds[1]["attention_mask"][:, :4]
    with pytest.raises(UsageError, match=r"sample 1 has seq=9 in 'input_ids' but seq=4 in 'attention_mask'"):
        write_samples(_Input(_two_inputs(sample_inputs=lambda: feeds), tmp_path))
    long = [{n: np.zeros((1, 200), np.int64) for n in ("input_ids", "attention_mask")}]
    with pytest.raises(UsageError, match=r"sample 0 input 'input_ids' has seq=200, outside .* 1..128"):
        write_samples(_Input(_two_inputs(sample_inputs=lambda: long), tmp_path))


def test_a_batch_only_profile_keeps_its_batch_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((1, 3, 4, 4)).astype(np.float32)} for _ in range(3)]
    recipe = Recipe(
        name="batch_only",
        description="",
        build_model=lambda _w: None,
        sample_inputs=lambda: feeds,
        inputs=(TensorSpec("x", ("batch", 3, 4, 4)),),
        shape_ranges={"x": ShapeRange((1, 3, 4, 4), (4, 3, 4, 4), (8, 3, 4, 4))},
    )
    out = write_samples(_Input(recipe, tmp_path))
    sets = out.details.sets
    assert list(sets) == ["samples", "batch1", "batch4", "batch8"] and out.reason is None
    assert sets["batch8"].shapes == ({"x": (8, 3, 4, 4)},) and sets["batch8"].source == "samples"
    rows = _rows(recipe)  # cycling through the samples, as before
    assert np.array_equal(rows["batch4"].feed["x"], np.concatenate([feeds[i]["x"] for i in (0, 1, 2, 0)]))


# --- through the CLI ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seq_runs(tmp_path_factory: pytest.TempPathFactory):
    from trt_harness.harness.cli import main
    from trt_harness.models.recipes import RECIPES

    RECIPES.register(seq_recipe.NAME, seq_recipe.seq_tiny)
    root = tmp_path_factory.mktemp("seq")
    common = ["--backends", "torch", "onnxrt", "--no-cache"]
    codes = {
        make: main(["convert", seq_recipe.NAME, "--out", str(root / make), "-p", f"make={make}", *common])
        for make in ("vocab", "none", "oov")
    }
    yield root, codes, main
    RECIPES.unregister(seq_recipe.NAME)


def _results(run_dir: Path):
    from trt_harness.models.results.document import load_results

    return load_results(run_dir)


def test_samples_of_three_lengths_are_compared_one_by_one_and_every_row_runs(seq_runs) -> None:
    root, codes, main = seq_runs
    assert codes["vocab"] == 0
    results = _results(root / "vocab")
    samples = results.details(SamplesDetails)
    assert [s["input_ids"] for s in samples.sets["samples"].shapes] == [(1, n) for n in SEQ_LENGTHS]
    assert samples.skipped_rows == ()
    for n in SEQ_RANGE:  # the seq rows, with their shapes, in results.json
        assert samples.sets[f"seq{n}"].shapes == ({"input_ids": (1, n), "attention_mask": (1, n)},)
        assert samples.sets[f"seq{n}"].source == "make_input"
    compared = results.details(CompareDetails)
    by_set = {(c.output, c.sample_set): c for c in compared.comparisons}
    for output in ("hidden", "pooled"):
        assert by_set[output, "samples"].samples == len(SEQ_LENGTHS)
        assert by_set[output, "samples"].shape_mismatches == 0
        for row in SEQ_ROWS | BATCH_ROWS | CORNERS:
            assert by_set[output, row].passed and by_set[output, row].samples == 1
    assert main(["compare", str(root / "vocab")]) == 0  # re-judged from the saved per-sample files


def test_without_make_input_the_non_batch_rows_are_skipped_with_the_reason(seq_runs) -> None:
    root, codes, _main = seq_runs
    assert codes["none"] == 0
    results = _results(root / "none")
    samples = results.details(SamplesDetails)
    assert set(samples.sets) == {"samples"} | BATCH_ROWS
    assert {r.name for r in samples.skipped_rows} == SEQ_ROWS | CORNERS
    row = next(r for r in samples.skipped_rows if r.name == "seq128")
    assert row.dims == {"seq": 128} and row.shapes["input_ids"] == (1, 128)
    assert "the recipe has no make_input for input_ids" in row.reason
    assert "profile rows seq=1, seq=32, seq=128" in results.stage("samples").reason
    assert "the recipe has no make_input for input_ids" in (root / "none" / "report.html").read_text()


def test_make_input_with_ids_outside_the_vocabulary_fails_the_run_naming_it(seq_runs) -> None:
    root, codes, _main = seq_runs
    assert codes["oov"] == 4
    reason = _results(root / "oov").stage("run").reason
    assert "profile row 'batch1', whose inputs the recipe's make_input made (IndexError" in reason
    assert "token ids inside the vocabulary" in reason and "input_ids int64 in [1" in reason
