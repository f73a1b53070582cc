"""`harness calibrate <recipe>` on the mnist and yolov5 recipes: every variant measured (or named as not
measured, with its reason), and the proposed tolerances are passed by the recipe's own samples (through
`harness compare` of the run, and by every measured variant) and failed by a planted error 10x the
worst measured one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from trt_harness.harness.calibrate import (
    Measured,
    measure,
    noise_of,
    propose,
    propose_one,
    round_up,
    run_inputs,
    tolerance_source,
)
from trt_harness.harness.cli import main
from trt_harness.harness.stages.base import torch_model
from trt_harness.models.core.errors import ExitCode, UsageError
from trt_harness.models.recipe import ORT_OPTIMIZATIONS, Recipe, Tolerance
from trt_harness.models.recipes import get_recipe, parse_params
from trt_harness.models.results.calibration import Calibration, calibration_from_json
from trt_harness.models.results.document import load_results


@dataclass(frozen=True)
class Calibrated:
    recipe: Recipe
    run_dir: Path
    calibration: Calibration
    measured: Measured  # a second measurement, with each variant's outputs kept


def calibrated(out: Path, name: str, *params: str) -> Calibrated:
    argv = ["calibrate", name, "--out", str(out)]
    for p in params:
        argv += ["-p", p]
    assert main(argv) == ExitCode.PASSED
    calibration = calibration_from_json(json.loads((out / "calibration.json").read_text()))
    recipe = get_recipe(name, **parse_params(list(params)))
    onnx, feeds = run_inputs(load_results(out), out)
    measured = measure(recipe, onnx, feeds, lambda: torch_model(recipe, None), keep_outputs=True)
    return Calibrated(recipe, out, calibration, measured)


@pytest.fixture(scope="module")
def mnist(tmp_path_factory: pytest.TempPathFactory) -> Calibrated:
    return calibrated(tmp_path_factory.mktemp("calibrate") / "mnist", "mnist")


def _overrides(calibration: Calibration) -> list[str]:
    flags = []
    for p in calibration.proposals:
        flags += ["--atol", f"{p.output}={p.proposed.atol!r}", "--rtol", f"{p.output}={p.proposed.rtol!r}"]
    return flags


def assert_passes_own_samples_and_fails_planted_10x(c: Calibrated) -> None:
    # the run's own comparison (Torch vs ORT on the recipe's samples), judged by `harness compare`
    assert main(["compare", str(c.run_dir), *_overrides(c.calibration)]) == ExitCode.PASSED
    reference = c.measured.reference
    for p in c.calibration.proposals:
        assert p.changed, p.reason  # these recipes' outputs do differ between backends
        class_axis = c.recipe.class_axes.get(p.output)
        for variant, outputs in c.measured.outputs.items():
            noise = noise_of(variant, p.output, reference, outputs, p.proposed, class_axis)
            assert noise.passes_today, f"{variant} fails the proposed {p.proposed}"
        worst = c.measured.outputs[p.worst_variant]
        planted = [
            {p.output: r[p.output] + 10.0 * (w[p.output] - r[p.output])}
            for r, w in zip(reference, worst, strict=True)
        ]
        noise = noise_of("planted 10x", p.output, reference, planted, p.proposed, class_axis)
        assert not noise.passes_today, f"a 10x error passes the proposed {p.proposed} ({noise})"


def test_mnist_proposal_is_passed_by_its_samples_and_failed_by_a_10x_error(mnist: Calibrated) -> None:
    assert_passes_own_samples_and_fails_planted_10x(mnist)


def test_every_variant_is_measured_or_named_with_its_reason(mnist: Calibrated) -> None:
    import onnxruntime
    import torch

    variants = {n.variant for n in mnist.calibration.measured}
    expected = {
        f"ORT CPU threads={t} opt={level}" for t in ("1", "2", "default") for level in ORT_OPTIMIZATIONS
    }
    assert expected | {"Torch CPU repeat 2", "Torch CPU repeat 3"} <= variants
    skipped = {m.variant: m.reason for m in mnist.calibration.not_measured}
    assert ("Torch CUDA" in variants) == torch.cuda.is_available() == ("Torch CUDA vs CPU" not in skipped)
    has_cuda_ep = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    assert ("ORT CUDA" in skipped) != has_cuda_ep
    assert all(reason for reason in skipped.values())
    # the measurements are repeatable: the second measurement found the same worst deviation
    again = propose(mnist.recipe, mnist.measured)
    assert [p.proposed for p in again.proposals] == [p.proposed for p in mnist.calibration.proposals]


def test_the_snippet_is_recipe_code_with_the_reason_beside_each_number(mnist: Calibrated) -> None:
    text = (mnist.run_dir / "tolerances.py").read_text()
    values = eval(f"dict({text})", {"Tolerance": Tolerance})  # a keyword argument of Recipe(...)
    assert values == {"tolerances": {p.output: p.proposed for p in mnist.calibration.proposals}}
    for p in mnist.calibration.proposals:
        before = text.split(f"{p.output!r}: {tolerance_source(p.proposed)}")[0]
        assert f"# {p.output}: today {tolerance_source(p.today)}" in before
        assert "max |err|" in before.rsplit(f"# {p.output}: today", 1)[1]
    assert "not measured: TensorRT" in text


def test_round_up_to_one_significant_digit() -> None:
    assert [round_up(x) for x in (3.2e-5, 1e-4, 9.5e-3, 0.0, 7.0)] == [4e-5, 1e-4, 1e-2, 0.0, 7.0]


def test_an_output_no_variant_changed_keeps_todays_tolerance(mnist: Calibrated) -> None:
    today = Tolerance(atol=1e-4, rtol=1e-4)
    exact = [{"logits": r["logits"].copy()} for r in mnist.measured.reference]
    noise = noise_of("copy", "logits", mnist.measured.reference, exact, today, None)
    proposal = propose_one("logits", today, [noise], 4.0)
    assert proposal.proposed == today and not proposal.changed and "exactly" in proposal.reason


def test_quantile_check_scales_the_statistic(mnist: Calibrated) -> None:
    today = Tolerance(atol=1.0, rtol=1.0, check="quantile", quantile=0.9)
    reference = mnist.measured.reference
    shifted = [{"logits": r["logits"] + np.float32(1e-3)} for r in reference]
    noise = noise_of("shifted", "logits", reference, shifted, today, None)
    proposal = propose_one("logits", today, [noise], 4.0)
    assert proposal.proposed.check == "quantile" and proposal.proposed.quantile == 0.9
    assert proposal.proposed.atol == round_up(4.0 * noise.quantile_abs_err)
    assert 4e-3 <= proposal.proposed.atol <= 5e-3


def test_bad_headroom_is_a_usage_error(mnist: Calibrated) -> None:
    with pytest.raises(UsageError, match="--headroom 0.5"):
        propose(mnist.recipe, mnist.measured, 0.5)


@pytest.mark.slow
def test_yolov5_proposal_is_passed_by_its_samples_and_failed_by_a_10x_error(tmp_path: Path) -> None:
    assert_passes_own_samples_and_fails_planted_10x(
        calibrated(tmp_path / "yolov5", "yolov5", "image_size=160")
    )
