"""The recipe's own acceptance checks (models.checks, evaluated in harness.checks) and the no-signal gate:
each check judges what it claims, names where it failed, and gates the verdict like the statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from trt_harness.harness.comparison import compare_runs
from trt_harness.harness.verdict import verdict_for
from trt_harness.models.checks import (
    CheckResult,
    FunctionCheck,
    RowCosine,
    ThresholdAgreement,
    TopKAgreement,
)
from trt_harness.models.core.errors import ExitCode, UsageError
from trt_harness.models.recipe import Tolerance
from trt_harness.models.results.comparisons import OutputComparison

from tests.harness.results_builders import compare_stage, run_stage

# statistics that let one bad row or element through: the check alone decides
LOOSE = Tolerance(atol=1e-5, rtol=1e-5, check="quantile", quantile=0.9)


def _pairs(refs: list[dict], cands: list[dict]) -> list[dict]:
    return [{"torch": r, "onnxrt": c} for r, c in zip(refs, cands, strict=True)]


def _judge(samples, checks, tolerance: Tolerance = LOOSE, **kwargs) -> OutputComparison:
    (comparison,) = compare_runs(
        samples, tolerance_for=lambda _o: tolerance, checks=checks, **kwargs
    ).comparisons
    return comparison


# --- a seeded token encoder: tanh(x @ W), float64 reference, float32 candidate ---------------------------


def _encoder(corrupt: tuple[int, int, int] | None = None, samples: int = 3) -> list[dict]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 8))
    refs, cands = [], []
    for s in range(samples):
        x = rng.standard_normal((2, 5, 8))
        ref = np.tanh(x @ w)
        cand = np.tanh(x.astype(np.float32) @ w.astype(np.float32))
        if corrupt is not None and corrupt[0] == s:
            cand[corrupt[1:]] = rng.standard_normal(8)  # one token's embedding replaced
        refs.append({"embedding": ref})
        cands.append({"embedding": cand})
    return _pairs(refs, cands)


def test_row_cosine_fails_on_exactly_the_corrupted_row_and_names_it():
    checks = {"embedding": (RowCosine(name="token_cosine", min_cosine=0.999),)}
    clean = _judge(_encoder(), checks)
    (outcome,) = clean.checks
    assert clean.passed and outcome.passed and outcome.failing == 0
    assert outcome.total == 3 * 2 * 5 and outcome.unit == "rows"
    assert 0.999 <= outcome.value <= 1.0

    corrupted = _judge(_encoder(corrupt=(1, 0, 3)), checks)
    (outcome,) = corrupted.checks
    assert corrupted.within_tolerance and not corrupted.passed  # the check alone fails it
    assert not outcome.passed and outcome.failing == 1 and outcome.total == 30
    assert outcome.worst[0].index == (1, 0, 3)  # sample, batch item, token
    assert outcome.value == outcome.worst[0].value < 0.999
    assert "1 of 30 rows" in outcome.reason and "row [1, 0, 3]" in outcome.reason
    assert "check 'token_cosine' failed" in corrupted.reason


def test_row_cosine_over_several_axes_scores_one_row_per_batch_item():
    checks = {"embedding": (RowCosine(name="item_cosine", min_cosine=0.9999, axes=(1, 2)),)}
    (outcome,) = _judge(_encoder(corrupt=(2, 1, 4)), checks).checks
    assert outcome.total == 3 * 2 and outcome.failing == 1
    assert outcome.worst[0].index == (2, 1)


# --- thresholded agreement: seeded probabilities, one decision pushed across the threshold ------------------


def _probabilities(flip: bool) -> tuple[list[dict], tuple[int, ...]]:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 6)) * 3
    refs, cands = [], []
    for _ in range(3):
        p = 1 / (1 + np.exp(-(rng.standard_normal((4, 5)) @ w)))
        refs.append({"prob": p})
        cands.append({"prob": p + 1e-7})
    above = np.argwhere(refs[2]["prob"] > 0.7)
    flipped = (2, *(int(i) for i in above[0]))
    if flip:
        cands[2]["prob"][flipped[1:]] = 0.69
    return _pairs(refs, cands), flipped


def test_threshold_agreement_counts_decisions_that_differ():
    samples, flipped = _probabilities(flip=False)
    strict = {"prob": (ThresholdAgreement(name="confident", threshold=0.7, min_agreement=1.0),)}
    (outcome,) = _judge(samples, strict).checks
    assert outcome.passed and outcome.value == 1.0 and outcome.total == 3 * 4 * 6 and not outcome.no_signal

    samples, flipped = _probabilities(flip=True)
    result = _judge(samples, strict)
    (outcome,) = result.checks
    assert not result.passed and not outcome.passed
    assert outcome.failing == 1 and outcome.value == pytest.approx(1 - 1 / 72)
    assert outcome.worst[0].index == flipped
    assert (
        f"worst sample 2: 1 of 24 elements disagree; first at [{flipped[1]}, {flipped[2]}]" in outcome.reason
    )
    lenient = {"prob": (ThresholdAgreement(name="confident", threshold=0.7, min_agreement=0.98),)}
    assert _judge(samples, lenient).passed


def test_threshold_agreement_with_no_reference_above_the_threshold_is_no_signal():
    samples, _ = _probabilities(flip=False)
    check = ThresholdAgreement(name="certain", threshold=0.999999999)
    (outcome,) = _judge(samples, {"prob": (check,)}).checks
    assert outcome.value == 1.0 and not outcome.passed
    assert outcome.no_signal.startswith("none of the 72 reference elements is above")
    assert "no signal" in outcome.reason
    accepted = ThresholdAgreement(name="certain", threshold=0.999999999, accept_no_signal=True)
    assert _judge(samples, {"prob": (accepted,)}).passed


# --- top-k agreement: seeded logits, two classes' scores swapped at one position ----------------------------


def _logits(swap: tuple[int, int] | None) -> list[dict]:
    rng = np.random.default_rng(2)
    refs, cands = [], []
    for s in range(2):
        ref = rng.standard_normal((4, 10))
        cand = ref + 1e-6 * rng.standard_normal((4, 10))
        if swap is not None and s == 1:
            ranked = np.argsort(-ref[3])
            a, b = ranked[swap[0]], ranked[swap[1]]
            cand[3, a], cand[3, b] = cand[3, b], cand[3, a]
        refs.append({"logits": ref})
        cands.append({"logits": cand})
    return _pairs(refs, cands)


def _topk(samples, **kwargs):
    (outcome,) = _judge(samples, {"logits": (TopKAgreement(name="top", axis=1, **kwargs),)}).checks
    return outcome


def test_topk_agreement_finds_a_class_that_left_the_top_k():
    assert _topk(_logits(None), k=3).passed
    swapped = _logits((1, 3))  # the 2nd and 4th best swap places at sample 1, position 3
    outcome = _topk(swapped, k=3)
    assert not outcome.passed and outcome.failing == 1 and outcome.total == 8
    assert outcome.worst[0].index == (1, 3) and "position [1, 3]" in outcome.reason
    assert outcome.value == pytest.approx(7 / 8)
    assert _topk(swapped, k=3, candidate_k=4).passed  # still within the candidate's top 4
    assert _topk(swapped, k=1).passed
    assert _topk(swapped, k=3, min_agreement=0.8).passed


def test_ordered_topk_agreement_sees_a_swap_inside_the_top_k():
    swapped = _logits((1, 2))
    assert _topk(swapped, k=3).passed  # the same three classes
    outcome = _topk(swapped, k=3, ordered=True)
    assert not outcome.passed and outcome.worst[0].index == (1, 3)


# --- a user's function ----------------------------------------------------------------------------------

GAP_LIMIT = 1e-3


def largest_gap(ref: np.ndarray, cand: np.ndarray) -> CheckResult:
    gap = float(np.max(np.abs(ref - cand)))
    return CheckResult(gap, gap <= GAP_LIMIT, threshold=GAP_LIMIT)


def broken_check(ref: np.ndarray, cand: np.ndarray) -> CheckResult:
    raise ValueError("operands could not be broadcast\nsecond line of the message")


def test_a_user_function_gives_value_and_verdict():
    samples = _logits(None)
    samples[1]["onnxrt"]["logits"][2, 5] += 0.01  # sample 1 breaks the user's limit
    gaps = [float(np.max(np.abs(s["torch"]["logits"] - s["onnxrt"]["logits"]))) for s in samples]
    check = FunctionCheck.of("gap", largest_gap, better="lower")
    result = _judge(samples, {"logits": (check,)})
    (outcome,) = result.checks
    assert outcome.value == max(gaps) and outcome.threshold == GAP_LIMIT and outcome.relation == "<="
    assert not outcome.passed and outcome.failing == 1 and outcome.total == 2
    assert outcome.worst[0].index == (1,)
    assert "fails 1 of 2 samples; worst sample 1" in outcome.reason

    verdict = verdict_for([run_stage(), compare_stage([result])])
    assert verdict.exit_code == ExitCode.ACCURACY_FAILED
    assert "1 check(s) failed: 'gap' on logits (Torch vs ORT)" in verdict.summary
    passing = _judge(_logits(None), {"logits": (check,)})
    verdict = verdict_for([run_stage(), compare_stage([passing])])
    assert verdict.exit_code == ExitCode.PASSED and "all 1 recipe check(s) pass" in verdict.summary


def test_a_user_function_that_raises_is_one_line_naming_check_and_output():
    check = FunctionCheck.of("shapes", broken_check)
    with pytest.raises(UsageError) as raised:
        _judge(_logits(None), {"logits": (check,)})
    message = str(raised.value)
    assert "\n" not in message
    assert "check 'shapes' of output 'logits'" in message
    assert "ValueError on sample 0: operands could not be broadcast" in message


def test_a_lambda_cannot_be_a_check_function():
    with pytest.raises(UsageError, match="module-level function"):
        FunctionCheck.of("anon", lambda r, c: CheckResult(0.0, True))


def test_checks_of_an_output_the_samples_do_not_have_are_a_usage_error():
    with pytest.raises(UsageError, match="output 'scores'"):
        _judge(_logits(None), {"scores": (TopKAgreement(name="top"),)})
    with pytest.raises(UsageError, match="two checks named"):
        _judge(_logits(None), {"logits": (TopKAgreement(name="top"), TopKAgreement(name="top", k=2))})


# --- no signal -------------------------------------------------------------------------------------------


def _classifier(scale: float, samples: int = 3) -> list[dict]:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 10)) * scale
    refs, cands = [], []
    for _ in range(samples):
        x = rng.standard_normal((4, 8))
        refs.append({"logits": x @ w})
        cands.append({"logits": (x.astype(np.float32) @ w.astype(np.float32)).astype(np.float64)})
    return _pairs(refs, cands)


def test_a_zero_logit_classifier_head_is_no_signal_not_a_pass():
    tolerance = Tolerance(atol=1e-5, rtol=1e-5, min_argmax_agreement=0.9)
    result = _judge(_classifier(0.0), {}, tolerance, class_axes={"logits": 1})
    assert result.within_tolerance and result.argmax_agreement == 1.0  # the statistics alone would pass
    assert not result.passed
    assert result.no_signal == "the Torch reference is all zero (120 finite elements)"
    assert result.reason.startswith("no signal: the Torch reference is all zero")
    verdict = verdict_for([run_stage(), compare_stage([result])])
    assert verdict.exit_code == ExitCode.ACCURACY_FAILED and verdict.summary.startswith("no signal: logits")

    accepted = Tolerance(atol=1e-5, rtol=1e-5, min_argmax_agreement=0.9, accept_no_signal=True)
    result = _judge(_classifier(0.0), {}, accepted, class_axes={"logits": 1})
    assert result.passed and result.no_signal
    verdict = verdict_for([run_stage(), compare_stage([result])])
    assert verdict.exit_code == ExitCode.PASSED
    assert "no signal, accepted by the recipe: logits (Torch vs ORT)" in verdict.summary


def test_a_reference_within_atol_of_zero_is_no_signal_and_a_real_one_is_not():
    quiet = _judge(_classifier(1e-6), {}, Tolerance(atol=1e-3, rtol=0.0))
    assert not quiet.passed and "within atol=1e-3 of zero" in quiet.no_signal
    real = _judge(_classifier(1.0), {}, Tolerance(atol=1e-3, rtol=1e-3))
    assert real.passed and real.no_signal == ""


def test_argmax_agreement_over_a_constant_reference_is_trivial():
    samples = _classifier(1.0)
    for sample in samples:
        for side in sample.values():
            side["logits"][:] = side["logits"][:, :1] * 0 + 2.5  # every class scores the same
    tolerance = Tolerance(atol=1e-3, rtol=1e-3, min_argmax_agreement=0.9)
    result = _judge(samples, {}, tolerance, class_axes={"logits": 1})
    assert result.argmax_agreement == 1.0 and not result.passed
    assert result.no_signal.startswith("argmax agreement is trivial")


# --- through the CLI, with a small recipe (tests/harness/checks_recipe.py) -----------------------------------


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory):
    from trt_harness.harness.cli import main
    from trt_harness.models.recipes import RECIPES

    from tests.harness import checks_recipe

    root = tmp_path_factory.mktemp("checks")
    RECIPES.register(checks_recipe.NAME, checks_recipe.checks_tiny)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HARNESS_CACHE_DIR", str(root / "cache"))

        def convert(name: str, *params: str) -> tuple[int, Path]:
            out = root / name
            args = [arg for p in params for arg in ("-p", p)]
            return main(
                ["convert", checks_recipe.NAME, "--out", str(out), "--backends", "torch", "onnxrt", *args]
            ), out

        yield convert
    RECIPES.unregister(checks_recipe.NAME)


def _compared(run_dir: Path):
    from trt_harness.models.results.document import load_results
    from trt_harness.models.results.stages import CompareDetails

    results = load_results(run_dir)
    return results, results.details(CompareDetails)


def test_cli_a_corrupted_row_fails_the_run_naming_the_row(cli_runs):
    from tests.harness.checks_recipe import CORRUPT_SAMPLE, CORRUPT_TOKEN

    code, run_dir = cli_runs("corrupt", "corrupt=1")
    assert code == ExitCode.ACCURACY_FAILED
    results, compare = _compared(run_dir)
    outcomes = {o.name: (c, o) for c in compare.comparisons for o in c.checks}
    comparison, rows = outcomes["token_cosine"]
    assert comparison.output == "embedding" and not rows.passed and rows.failing == 1
    assert comparison.within_tolerance and not comparison.passed  # the check alone fails the run
    assert rows.worst[0].index == (CORRUPT_SAMPLE, 0, CORRUPT_TOKEN)
    assert rows.value == pytest.approx(-1.0)  # the exported model flipped that embedding's sign
    assert "'token_cosine' on embedding (Torch vs ORT): 1 of 12 rows" in results.verdict.summary
    assert f"row [{CORRUPT_SAMPLE}, 0, {CORRUPT_TOKEN}]" in results.verdict.summary
    assert all(o.passed for name, (_, o) in outcomes.items() if name != "token_cosine")

    code, run_dir = cli_runs("clean", "corrupt=0")
    assert code == ExitCode.PASSED
    results, compare = _compared(run_dir)
    outcomes = {o.name: o for c in compare.comparisons for o in c.checks}
    assert set(outcomes) == {"token_cosine", "top2", "max_gap", "confident"}
    assert all(o.passed and not o.no_signal for o in outcomes.values())
    assert 0 < outcomes["max_gap"].value <= outcomes["max_gap"].threshold
    assert "all 4 recipe check(s) pass" in results.verdict.summary


def test_cli_a_zero_logit_head_is_not_a_pass_unless_the_recipe_accepts_it(cli_runs):
    code, run_dir = cli_runs("zero", "head=zero", "checks=rows")
    assert code == ExitCode.ACCURACY_FAILED
    results, compare = _compared(run_dir)
    (logits,) = [c for c in compare.comparisons if c.output == "logits"]
    assert logits.within_tolerance and not logits.passed and "all zero" in logits.no_signal
    assert results.verdict.summary.startswith(
        "no signal: logits (Torch vs ORT): the Torch reference is all zero"
    )

    code, run_dir = cli_runs("zero-accepted", "head=zero", "checks=rows", "accept=1")
    assert code == ExitCode.PASSED
    results, _ = _compared(run_dir)
    assert "no signal, accepted by the recipe: logits (Torch vs ORT)" in results.verdict.summary


def test_cli_checks_for_an_unknown_output_exit_2_naming_it(cli_runs, capsys):
    code, run_dir = cli_runs("unknown", "checks=unknown")
    assert code == ExitCode.USAGE_ERROR
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "declares checks for output(s) ['scores']" in err and "'embedding', 'logits', 'prob'" in err


# --- the report's Checks section and the JUnit cases, read from the files a run wrote ----------------------


def _junit_cases(run_dir: Path) -> dict:
    import xml.etree.ElementTree as ET

    (suite,) = ET.parse(run_dir / "junit.xml").getroot().findall("testsuite")
    return {case.get("name"): case for case in suite.findall("testcase")}


def _check_rows(run_dir: Path) -> dict[str, tuple[str, str]]:
    """check name -> (pass/fail, the row's text), from the Checks section of report.html."""
    import re

    html = (run_dir / "report.html").read_text()
    section = html[html.index('<section id="checks">') :]
    section = section[: section.index("</section>")]
    rows = re.findall(r'<tr class="check (pass|fail)"[^>]*>(.*?)</tr>\n', section, re.S)
    return {re.search(r'<span class="mono">([^<]+)</span>', body)[1]: (state, body) for state, body in rows}


def test_report_and_junit_show_each_check_per_output_and_pair(cli_runs):
    code, run_dir = cli_runs("corrupt", "corrupt=1")
    assert code == ExitCode.ACCURACY_FAILED
    _, compare = _compared(run_dir)
    outcomes = {o.name: (c, o) for c in compare.comparisons for o in c.checks}
    html = (run_dir / "report.html").read_text()
    assert '<a href="#checks">Checks</a>' in html
    rows = _check_rows(run_dir)
    assert set(rows) == set(outcomes)
    state, body = rows["token_cosine"]
    assert state == "fail" and "≥ 0.999" in body and "1 of 12 rows fail" in body and "[1, 0, 2]" in body
    assert all(rows[name][0] == "pass" for name in outcomes if name != "token_cosine")
    assert "≤ 1e-4" in rows["max_gap"][1]  # the threshold the user's function gave

    cases = _junit_cases(run_dir)
    for name, (comparison, outcome) in outcomes.items():
        case = cases[f"check:{comparison.output}:{name}[torch-vs-onnxrt]"]
        failure = case.find("failure")
        assert (failure is None) == outcome.passed
        if failure is not None:
            assert failure.get("type") == "CheckFailed" and failure.get("message") == outcome.reason
    # the statistics of embedding pass (p90): its own case passes, the failing check has a case of its own
    assert cases["embedding[torch-vs-onnxrt]"].find("failure") is None
    suite_failures = [n for n, c in cases.items() if c.find("failure") is not None]
    assert suite_failures == ["check:embedding:token_cosine[torch-vs-onnxrt]"]


def test_report_and_junit_say_no_signal(cli_runs):
    code, run_dir = cli_runs("zero", "head=zero", "checks=rows")
    assert code == ExitCode.ACCURACY_FAILED
    html = (run_dir / "report.html").read_text()
    assert "No signal: logits (Torch vs ORT)" in html and "Not a pass" in html
    failure = _junit_cases(run_dir)["logits[torch-vs-onnxrt]"].find("failure")
    assert failure is not None and failure.get("message").startswith(
        "no signal: the Torch reference is all zero"
    )

    code, run_dir = cli_runs("zero-accepted", "head=zero", "checks=rows", "accept=1")
    assert code == ExitCode.PASSED
    html = (run_dir / "report.html").read_text()
    assert "No signal: logits (Torch vs ORT)" in html and "Accepted by the recipe" in html
    cases = _junit_cases(run_dir)
    assert all(c.find("failure") is None for c in cases.values())
    assert "check:embedding:token_cosine[torch-vs-onnxrt]" in cases
