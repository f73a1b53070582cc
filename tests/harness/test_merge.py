"""Merging the streaming statistics: a sample set split over separate processes gives one run's result."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from trt_harness.harness.comparison import ExactSum, OutputAccumulator, compare_runs, merge_states
from trt_harness.models.core.errors import UsageError
from trt_harness.models.core.serde import from_json, to_json
from trt_harness.models.recipe import Tolerance
from trt_harness.models.results.shards import RunComparisonState

# The samples: seeded, with NaN/Inf on one side, a shape mismatch, an output that only appears in later
# samples, class scores (some rows constant), errors over many orders of magnitude (so float sums depend
# on their order), a reference with no signal (within atol of zero) and the recipe's own checks.
SAMPLES_CODE = """
import numpy as np
from trt_harness.models.checks import FunctionCheck, RowCosine, ThresholdAgreement, TopKAgreement

def make_samples(n=12):
    rng = np.random.default_rng(1234)
    samples = []
    for i in range(n):
        ref = rng.standard_normal((3, 50, 7)).astype(np.float32) * 10.0 ** rng.integers(-3, 4)
        logits = rng.standard_normal((4, 10)).astype(np.float32)
        logits[i % 4] = 0.5  # a position with no argmax (the no-signal test counts those)
        quiet = rng.standard_normal((6,)).astype(np.float32) * 1e-5 * (i + 1)
        sample = {}
        for backend, scale in (("torch", 0.0), ("onnxrt", 1e-4), ("tensorrt", 3e-3)):
            noise = rng.standard_normal(ref.shape).astype(np.float32) * scale * np.abs(ref)
            out = {"features": ref + noise, "logits": logits + rng.standard_normal(logits.shape).astype(np.float32) * scale * 20,
                   "quiet": quiet + np.float32(scale * 1e-3)}
            if backend == "tensorrt" and i % 5 == 2:
                out["features"].flat[i] = np.nan
            if backend == "tensorrt" and i == 7:
                out["logits"] = out["logits"][:3]
            if i >= 4:
                out["late"] = np.full((5,), float(i), dtype=np.float32) + scale
            sample[backend] = out
        samples.append(sample)
    return samples

TOLERANCES = {"features": dict(atol=1e-3, rtol=1e-3, check="quantile", quantile=0.99),
              "logits": dict(atol=1e-2, rtol=1e-2, check="elemwise", min_argmax_agreement=0.5),
              "late": dict(atol=1e-3, rtol=0.0, check="max"),
              "quiet": dict(atol=1e-3, rtol=0.0, check="max")}

CHECKS = {
    "features": (RowCosine(name="rows", min_cosine=0.99999999),),
    "logits": (
        TopKAgreement(name="top3", k=3, axis=1, min_agreement=0.9),
        ThresholdAgreement(name="above", threshold=0.5, min_agreement=0.99),
        FunctionCheck(name="gap", function="tests.harness.test_merge:largest_gap", better="lower"),
    ),
}
"""

SHARD_SCRIPT = """
import json, sys
from trt_harness.harness.comparison import compare_runs
from trt_harness.models.core.serde import to_json
from trt_harness.models.recipe import Tolerance
ns = {}
exec(sys.argv[1], ns)
index, count = int(sys.argv[2]), int(sys.argv[3])
samples = ns["make_samples"]()
first, stop = index * len(samples) // count, (index + 1) * len(samples) // count
report = compare_runs(samples[first:stop], tolerance_for=lambda o: Tolerance(**ns["TOLERANCES"][o]),
                      class_axes={"logits": 1}, worst_k=5, checks=ns["CHECKS"])
json.dump(to_json(report.state), sys.stdout)
"""


REPO = Path(__file__).resolve().parents[2]


def largest_gap(ref, cand):
    """A user's check for the merge test: the largest difference, at most 0.05."""
    from trt_harness.models.checks import CheckResult

    gap = float(np.max(np.abs(ref - cand)))
    return CheckResult(gap, gap <= 0.05, threshold=0.05)


def _namespace() -> dict:
    ns: dict = {}
    exec(SAMPLES_CODE, ns)
    return ns


def _one_process():
    ns = _namespace()
    return compare_runs(
        ns["make_samples"](),
        tolerance_for=lambda o: Tolerance(**ns["TOLERANCES"][o]),
        class_axes={"logits": 1},
        worst_k=5,
        checks=ns["CHECKS"],
    )


def _exact(total) -> Fraction:
    return sum((Fraction(x) for x in total.partials), Fraction(0))


def test_three_processes_merge_to_one(tmp_path: Path) -> None:
    states = []
    for index in range(3):
        out = subprocess.run(
            [sys.executable, "-c", SHARD_SCRIPT, SAMPLES_CODE, str(index), "3"],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,  # the check function is tests.harness.test_merge:largest_gap
        ).stdout
        states.append(from_json(RunComparisonState, json.loads(out)))
    merged = merge_states(states, worst_k=5)
    single = _one_process()

    assert merged.samples == single.samples == 12
    assert len(single.comparisons) == 12  # 3 pairs x 4 outputs
    # every statistic, histogram, worst element and verdict: identical, not close (as JSON: NaN == NaN)
    assert to_json(merged.comparisons) == to_json(single.comparisons)
    assert merged.missing == single.missing
    assert merged.passed == single.passed
    assert not single.passed  # the NaNs and the shape mismatch fail TensorRT's pairs
    assert {c.passed for c in single.comparisons} == {True, False}
    # the states too; sums are compared as the exact numbers they hold (partials are not unique)
    one, many = single.state, merged.state
    assert one is not None and many is not None
    for a, b in zip(one.accumulators, sorted(many.accumulators, key=lambda s: _key(s, one)), strict=True):
        for name in ("abs_sum", "abs_sq_sum", "rel_sum", "dot_rc", "dot_rr", "dot_cc"):
            assert _exact(getattr(a, name)) == _exact(getattr(b, name)), name
            assert getattr(a, name).nonfinite == getattr(b, name).nonfinite
        plain = {"abs_sum", "abs_sq_sum", "rel_sum", "dot_rc", "dot_rr", "dot_cc"}
        assert {k: v for k, v in to_json(a).items() if k not in plain} == {
            k: v for k, v in to_json(b).items() if k not in plain
        }
    assert any(a.argmax_constant for a in one.accumulators)
    # the recipe's checks and the no-signal verdicts merge as exactly, and are not trivial here
    assert _checks(many) == _checks(one)
    outcomes = [o for c in single.comparisons for o in c.checks]
    assert len(outcomes) == 3 * 4 and {o.passed for o in outcomes} == {True, False}
    assert {o.name for o in outcomes if o.worst} >= {"rows", "gap"}
    quiet = [c for c in merged.comparisons if c.output == "quiet"]
    assert len(quiet) == 3 and all("within atol" in c.no_signal and not c.passed for c in quiet)
    assert not any(c.no_signal for c in merged.comparisons if c.output != "quiet")


def _checks(state) -> dict:
    return {(c.ref_backend, c.cand_backend, c.output, c.check.name): to_json(c) for c in state.checks}


def _key(state, order) -> int:
    keys = [(s.ref_backend, s.cand_backend, s.output) for s in order.accumulators]
    return keys.index((state.ref_backend, state.cand_backend, state.output))


def test_worst_elements_keep_sample_numbers_across_shards() -> None:
    ns = _namespace()
    samples = ns["make_samples"]()
    tol = lambda o: Tolerance(**ns["TOLERANCES"][o])  # noqa: E731
    parts = [compare_runs(samples[a:b], tolerance_for=tol, worst_k=5).state for a, b in ((0, 5), (5, 12))]
    merged = merge_states(parts, worst_k=5)
    nan_worst = [
        w.index[0]
        for c in merged.comparisons
        if c.output == "features" and c.cand_backend == "tensorrt"
        for w in c.worst
        if math.isinf(w.abs_err)
    ]
    # NaNs were planted in samples 2 and 7; sample 7 is the second shard's third
    assert nan_worst == [2, 7, 2, 7]  # torch vs tensorrt, onnxrt vs tensorrt


def test_exact_sum_does_not_depend_on_order() -> None:
    rng = random.Random(7)
    terms = [rng.uniform(-1, 1) * 10 ** rng.randint(-20, 20) for _ in range(2000)]
    forward = ExactSum(terms)
    shuffled = terms[:]
    rng.shuffle(shuffled)
    halves = ExactSum(shuffled[:700])
    halves.merge(ExactSum(shuffled[700:]))
    assert forward.value == halves.value == math.fsum(terms)
    assert sum(terms) != math.fsum(terms)  # plain float addition would not merge exactly here
    overflow = ExactSum([1e308, 1e308, -1.0])
    assert overflow.value == math.inf


def test_merge_refuses_another_tolerance() -> None:
    a = OutputAccumulator("y", "torch", "onnxrt", Tolerance(atol=1e-3))
    b = OutputAccumulator("y", "torch", "onnxrt", Tolerance(atol=1e-2))
    with pytest.raises(UsageError, match="tolerance"):
        a.merge(b.state())


# --- the pipeline: `convert --shard i/n`, `merge`, `index` ------------------------------------------------


@pytest.fixture(scope="module")
def shard_runs(tmp_path_factory: pytest.TempPathFactory):
    from trt_harness.harness.cli import main
    from trt_harness.models.recipes import RECIPES

    from tests.harness import shard_recipe

    RECIPES.register(shard_recipe.NAME, shard_recipe.shard_tiny)
    root = tmp_path_factory.mktemp("shards")
    cache = ["--backends", "torch", "onnxrt", "-p", "noise=0.5"]
    codes = {"full": main(["convert", shard_recipe.NAME, "--out", str(root / "full"), *cache])}
    for i in (1, 2, 3):
        out = root / "zoo" / f"tiny-shard{i}"
        codes[i] = main(["convert", shard_recipe.NAME, "--out", str(out), "--shard", f"{i}/3", *cache])
    yield root, codes, main
    RECIPES.unregister(shard_recipe.NAME)


def _compared(run_dir: Path):
    from trt_harness.models.results.document import load_results
    from trt_harness.models.results.stages import CompareDetails

    results = load_results(run_dir)
    return results, results.details(CompareDetails)


def test_shards_merged_give_the_one_run_verdict(shard_runs) -> None:
    root, codes, main = shard_runs
    shards = [root / "zoo" / f"tiny-shard{i}" for i in (1, 2, 3)]
    assert main(["merge", *map(str, shards), "--out", str(root / "merged")]) == codes["full"]
    full, full_compare = _compared(root / "full")
    merged, merged_compare = _compared(root / "merged")
    assert to_json(merged_compare.comparisons) == to_json(full_compare.comparisons)
    assert merged_compare.groups == full_compare.groups
    assert merged.verdict == full.verdict
    # each shard judged only its slice: 7 samples as 2 + 2 + 3
    sizes = [_compared(d)[1].comparisons[0].samples for d in shards]
    assert sizes == [2, 2, 3] and full_compare.comparisons[0].samples == 7
    assert (root / "merged" / "report.html").is_file()


def test_index_merges_the_shards_it_finds(shard_runs) -> None:
    root, codes, main = shard_runs
    assert main(["index", str(root / "zoo")]) == 0
    merged, merged_compare = _compared(root / "zoo" / "tiny-merged")
    assert to_json(merged_compare.comparisons) == to_json(_compared(root / "full")[1].comparisons)
    assert "tiny-merged" in (root / "zoo" / "index.html").read_text()


def test_merge_needs_every_shard_once(shard_runs, capsys) -> None:
    root, _codes, main = shard_runs
    shard = str(root / "zoo" / "tiny-shard1")
    assert main(["merge", shard, str(root / "zoo" / "tiny-shard3"), "--out", str(root / "bad")]) == 2
    assert "all 3 of" in capsys.readouterr().err
    assert main(["merge", str(root / "full"), "--out", str(root / "bad")]) == 2
    assert "--shard" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):
        main(["convert", "mnist", "--shard", "4/3"])
    from tests.harness.shard_recipe import NAME

    assert main(["convert", NAME, "--out", str(root / "bad"), "--shard", "8/8"]) == 2
    assert "only 7 samples" in capsys.readouterr().err
