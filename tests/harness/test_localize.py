"""Localization: a divergence planted in one submodule of a deep model is named, with its source line.

The plant is an inexact replacement of `torch.erf`, registered only here and patched in only while
exporting (as every replacement): Torch computes the true erf, the ONNX graph the approximation, and
only `blocks.12.mix` calls erf.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math

import numpy as np
import pytest
from trt_harness.conversions.replacements import _registry, register_replacement
from trt_harness.harness.cli import main
from trt_harness.harness.pipeline import RunConfig, localize_and_report, run_pipeline
from trt_harness.models.core.errors import ExitCode
from trt_harness.models.recipe import ExportOptions, Recipe, TensorSpec, Tolerance
from trt_harness.models.results.document import load_results
from trt_harness.models.results.localize import MODULE_MAP_FILE, load_module_map
from trt_harness.models.results.stages import CompareDetails

BLOCKS = 24
PLANTED_BLOCK = 12
PLANTED = f"blocks.{PLANTED_BLOCK}.mix"
PLANT = "test_inexact_erf"


def deep_model(overflow_block: int | None = None):
    import torch

    class Mix(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 0.5

    class ErfMix(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 0.5 * torch.erf(x)  # planted: the export computes an inexact erf

    class Boost(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            big = (x + 4.0) * 1024.0
            # big * big is beyond FP16's 65504: inf in an FP16 model. ORT's CPU provider computes FP16
            # arithmetic in FP32 between the casts it inserts; a Concat (which it runs in FP16) makes
            # the square an FP16 tensor
            square = torch.cat([big * big, x], 1)[:, :4]
            return square / 1024.0 / 1024.0 * 0.01

    class Block(torch.nn.Module):
        def __init__(self, planted: bool, boost: bool = False) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
            self.act = torch.nn.Tanh()
            self.mix = ErfMix() if planted else Mix()
            self.boost = Boost() if boost else None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.mix(self.act(self.conv(x)))
            return x if self.boost is None else self.boost(x)

    class Deep(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 4, 1)
            self.blocks = torch.nn.Sequential(
                *(Block(i == PLANTED_BLOCK, boost=i == overflow_block) for i in range(BLOCKS))
            )
            self.head = torch.nn.Conv2d(4, 2, 1)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.head(self.blocks(self.stem(image)))

    torch.manual_seed(0)
    model = Deep().eval()
    return model, ErfMix


def register_plant() -> None:
    """`torch.erf` -> tanh(1.2 x): off by up to ~2e-2; the caller unregisters it."""

    def build(context):
        def inexact_erf(x, *args, **kwargs):
            import torch

            return torch.tanh(x * 1.2)

        return {"torch.erf": inexact_erf}

    register_replacement(PLANT, targets=("torch.erf",), summary="an inexact erf (test plant)")(build)


@pytest.fixture(scope="module")
def plant():
    """The plant, registered for these tests only."""
    register_plant()
    yield PLANT
    _registry.REPLACEMENTS.unregister(PLANT)


def recipe(exporter: str, planted: bool) -> Recipe:
    rng = np.random.default_rng(0)
    samples = [{"image": rng.standard_normal((1, 3, 8, 8), dtype=np.float32)} for _ in range(2)]
    return Recipe(
        name=f"deep_{exporter}",
        description="24 residual blocks, an erf in one",
        build_model=lambda weights: deep_model()[0],
        sample_inputs=lambda: samples,
        inputs=(TensorSpec("image", (1, 3, 8, 8)),),
        output_names=("out",),
        export=ExportOptions(exporter=exporter, opset=18, replacements=(PLANT,) if planted else ()),
        default_tolerance=Tolerance(atol=1e-4, rtol=1e-4),
        compare_profile_shapes=False,
    )


def _source_line(cls, text: str) -> int:
    lines, start = inspect.getsourcelines(cls.forward)
    return start + next(i for i, line in enumerate(lines) if text in line)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_a_planted_divergence_is_localized_to_its_submodule_and_source_line(tmp_path, plant, exporter):
    planted = recipe(exporter, planted=True)
    results = run_pipeline(RunConfig(planted, tmp_path, backends=("torch", "onnxrt")))
    assert results.verdict.exit_code == ExitCode.ACCURACY_FAILED, results.verdict

    module_map = load_module_map(tmp_path / MODULE_MAP_FILE)
    assert len(module_map.modules) >= 3 * BLOCKS
    assert module_map.by_path()[PLANTED].class_name.endswith("ErfMix")

    results = localize_and_report(tmp_path, planted)
    (curve,) = results.localization.curves
    assert curve.first_divergence == PLANTED
    layer = curve.divergence
    erf_mix = deep_model()[1]
    file = inspect.getsourcefile(erf_mix.forward)
    # dynamo's stack trace names the line that computes the output; TorchScript's scope only the module,
    # so there it is the line its forward is defined on
    line = _source_line(erf_mix, "torch.erf" if exporter == "dynamo" else "def forward")
    assert layer.source == f"{file}:{line}"
    assert "Tanh" in layer.op_types or "Erf" not in layer.op_types  # the export holds the replacement
    # everything before the plant is within tolerance, the plant and everything after it is not
    order = [entry.module for entry in curve.layers]
    assert all(entry.passed for entry in curve.layers[: order.index(PLANTED)])
    assert not curve.layer("head").passed
    assert curve.largest_jumps(1)[0].module == PLANTED

    # written into the results contract and the report
    assert load_results(tmp_path).localization == results.localization
    page = (tmp_path / "report.html").read_text()
    assert "Where it diverges" in page and PLANTED in page


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_the_same_model_without_the_plant_reports_no_divergence(tmp_path, exporter, capsys):
    results = run_pipeline(RunConfig(recipe(exporter, planted=False), tmp_path, backends=("torch", "onnxrt")))
    assert results.verdict.passed, results.verdict
    results = localize_and_report(tmp_path, recipe(exporter, planted=False))
    (curve,) = results.localization.curves
    assert curve.first_divergence is None
    assert len(curve.layers) >= 3 * BLOCKS and all(layer.passed for layer in curve.layers)
    assert max(layer.error_ratio for layer in curve.layers) < 1


def test_layers_are_compared_in_bounded_chunks_with_the_same_result(tmp_path, plant):
    planted = recipe("torchscript", planted=True)
    run_pipeline(RunConfig(planted, tmp_path, backends=("torch", "onnxrt")))
    whole = localize_and_report(tmp_path, planted).localization.curves[0]
    chunked = localize_and_report(tmp_path, planted, chunk_bytes=4 * 8 * 8 * 4 * 3).localization.curves[0]
    assert whole.chunks == 1 and chunked.chunks > 10
    assert chunked.first_divergence == whole.first_divergence == PLANTED
    assert [layer.max_abs_err for layer in chunked.layers] == [layer.max_abs_err for layer in whole.layers]


def test_harness_localize_reads_a_saved_run_and_needs_its_module_map(tmp_path, capsys):
    import trt_harness.models.recipes as recipes

    run_pipeline(RunConfig(recipe("torchscript", planted=False), tmp_path, backends=("torch", "onnxrt")))
    # the saved run names a recipe the registry does not have: a one-line usage error
    assert main(["localize", str(tmp_path)]) == ExitCode.USAGE_ERROR
    assert "deep_torchscript" in capsys.readouterr().err
    recipes.RECIPES.register("deep_torchscript", lambda: recipe("torchscript", planted=False))
    try:
        assert main(["localize", str(tmp_path)]) == ExitCode.PASSED
        assert "first divergence: none" in capsys.readouterr().out
        data = json.loads((tmp_path / "results.json").read_text())
        assert data["localization"]["curves"][0]["first_divergence"] is None
        (tmp_path / MODULE_MAP_FILE).write_text("{}")
        assert main(["localize", str(tmp_path)]) == ExitCode.USAGE_ERROR
    finally:
        recipes.RECIPES.unregister("deep_torchscript")


OVERFLOW_BLOCK = 7
OVERFLOW = f"blocks.{OVERFLOW_BLOCK}.boost"


def fp16_recipe(block_list: tuple[str, ...] = ()) -> Recipe:
    return dataclasses.replace(
        recipe("torchscript", planted=False),
        name="deep_fp16",
        build_model=lambda weights: deep_model(OVERFLOW_BLOCK)[0],
        precision_tolerances={"fp16": Tolerance(atol=5e-2, rtol=5e-2)},
        fp16_block_list=block_list,
    )


def _fp16_passed(results) -> bool:
    compare = results.details(CompareDetails)
    fp16 = [c for c in compare.comparisons if c.precision == "fp16" and c.ref_backend == "torch"]
    return bool(fp16) and all(fp16)


def test_a_planted_fp16_overflow_is_named_and_the_proposed_block_list_fixes_it(tmp_path):
    config = RunConfig(
        fp16_recipe(),
        tmp_path / "before",
        backends=("torch", "onnxrt"),
        precisions=("fp32", "fp16"),
        fp16_auto_block_list=False,  # else the range check would already keep the overflow in FP32
    )
    assert not _fp16_passed(run_pipeline(config))
    localization = localize_and_report(config.out_dir, fp16_recipe()).localization
    fp32, fp16 = localization.curves
    assert fp32.first_divergence is None
    assert fp16.first_divergence == OVERFLOW
    assert math.isinf(fp16.divergence.error_ratio)
    triage = localization.fp16_triage
    assert triage.fixed and math.isinf(triage.tolerance_ratio_before) and triage.tolerance_ratio_after < 1
    assert triage.block_list and {b.module for b in triage.block_list} == {OVERFLOW}
    proposed = tuple(b.node for b in triage.block_list)
    assert triage.recipe_option == f"fp16_block_list={proposed!r}"
    assert " ".join(f"{n}:float32" for n in proposed) in triage.polygraphy_option
    # smaller than keeping the whole module: the square and what holds it before it is scaled down
    module_nodes = load_module_map(config.out_dir / MODULE_MAP_FILE).by_path()[OVERFLOW].nodes
    assert set(proposed) < set(module_nodes)
    assert any(n.endswith("/Concat") for n in proposed) and not any(n.endswith("/Add") for n in proposed)

    # the recipe option, applied: a fresh run's FP16 variant is within its tolerance
    fixed = dataclasses.replace(config, recipe=fp16_recipe(proposed), out_dir=tmp_path / "after")
    assert _fp16_passed(run_pipeline(fixed))
    page = (config.out_dir / "report.html").read_text()
    assert "FP16: nodes to keep in FP32" in page and proposed[0] in page


def test_the_bench_gates_localize_on_time_rss_and_less_memory_than_polygraphy():
    from trt_harness.harness.bench.localize import localize_result

    def process(wall, rss, code=0):
        return {"exit_code": code, "wall_s": wall, "peak_rss_bytes": rss, "bytes_written": 1 << 20}

    data = {"run_dir": "r", "layers_compared": 200, "chunks": 2, "first_divergence": None}
    within = localize_result({**data, "localize": process(30, 1 << 30), "polygraphy": process(20, 3 << 30)})
    assert all(t.passed for t in within.targets)
    heavier = localize_result({**data, "localize": process(30, 1 << 30), "polygraphy": process(20, 1 << 29)})
    assert [t.passed for t in heavier.targets] == [True, True, False]
    crashed = localize_result({**data, "localize": process(90, 3 << 30), "polygraphy": process(5, 1, code=1)})
    assert not any(t.passed for t in crashed.targets)
    assert "polygraphy exited with 1" in crashed.targets[2].detail


def test_convert_localize_runs_when_a_comparison_fails(tmp_path, plant, capsys):
    import trt_harness.models.recipes as recipes

    recipes.RECIPES.register("deep_planted", lambda: recipe("torchscript", planted=True))
    try:
        argv = [
            "convert",
            "deep_planted",
            "--backends",
            "torch",
            "onnxrt",
            "--no-cache",
            "--out",
            str(tmp_path),
        ]
        assert main([*argv, "--localize"]) == ExitCode.ACCURACY_FAILED  # the verdict stays the run's
        assert f"first divergence: {PLANTED} (" in capsys.readouterr().out
    finally:
        recipes.RECIPES.unregister("deep_planted")
    localization = load_results(tmp_path).localization
    assert localization.curves[0].first_divergence == PLANTED
