"""INT8 triage: an outlier channel planted in one conv's input makes INT8 fail; the triage names that
conv's node (and only it), and the recipe option it proposes, applied, makes a fresh run pass.

The plant: channel 0 of `blocks.6.pre`'s output is scaled by 1000 and the next conv's weights for that
channel by 1/1000, so FP32 computes the same function, but that conv's input holds one channel a
per-tensor INT8 scale cannot share with the others (the other channels round to zero).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from trt_harness.harness.pipeline import RunConfig, localize_and_report, run_pipeline
from trt_harness.harness.precision_triage import tolerance_ratio
from trt_harness.models.recipe import ExportOptions, Recipe, TensorSpec, Tolerance
from trt_harness.models.recipes import build_recipe, parse_params, resolve_recipe
from trt_harness.models.results.stages import CompareDetails

BLOCKS = 12
OUTLIER_BLOCK = 6
OUTLIER = f"blocks.{OUTLIER_BLOCK}.conv"
SCALE = 1000.0


def outlier_model(outlier: bool = True):
    import torch

    class Pre(torch.nn.Module):
        def __init__(self, scale: float) -> None:
            super().__init__()
            gain = torch.ones(1, 8, 1, 1)
            gain[0, 0] = scale
            self.register_buffer("gain", gain)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.gain

    class Block(torch.nn.Module):
        def __init__(self, planted: bool) -> None:
            super().__init__()
            self.pre = Pre(SCALE if planted else 1.0)
            self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.act = torch.nn.Tanh()
            if planted:
                with torch.no_grad():
                    self.conv.weight[:, 0] /= SCALE

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.act(self.conv(self.pre(x)))

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.blocks = torch.nn.Sequential(*(Block(outlier and i == OUTLIER_BLOCK) for i in range(BLOCKS)))

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.blocks(image)

    return Net().eval()


def _samples():
    import numpy as np

    rng = np.random.default_rng(0)
    # positive inputs: the planted channel stays large after the scaling, as a SiLU/ReLU net's would
    return [{"image": rng.uniform(0.5, 1.5, (1, 8, 16, 16)).astype(np.float32)} for _ in range(3)]


def int8_recipe(exclude: tuple[str, ...] = ()) -> Recipe:
    return Recipe(
        name="int8_outlier",
        description="12 convs, an INT8 outlier channel planted in one conv's input",
        build_model=lambda weights: outlier_model(),
        sample_inputs=_samples,
        inputs=(TensorSpec("image", (1, 8, 16, 16)),),
        output_names=("out",),
        export=ExportOptions(exporter="torchscript", opset=17),
        default_tolerance=Tolerance(atol=1e-4, rtol=1e-4),
        precisions=("fp32", "int8"),
        # a quantile check, judged over every element of every sample
        precision_tolerances={"int8": Tolerance(atol=0.1, rtol=0.1, check="quantile", quantile=0.99)},
        int8_exclude_nodes=exclude,
    )


def _int8(results):
    compare = results.details(CompareDetails)
    return [c for c in compare.comparisons if c.precision == "int8" and c.ref_backend == "torch"]


def test_a_planted_int8_outlier_is_excluded_alone_and_the_option_fixes_it(tmp_path):
    config = RunConfig(int8_recipe(), tmp_path / "before", backends=("torch", "onnxrt"))
    before = _int8(run_pipeline(config))
    assert before and not all(c.passed for c in before)
    localization = localize_and_report(config.out_dir, int8_recipe()).localization
    triage = localization.int8_triage
    assert triage is not None and triage.fixed
    assert triage.tolerance_ratio_before > 1 > triage.tolerance_ratio_after
    assert triage.quantizable_nodes == BLOCKS
    assert [b.module for b in triage.excluded] == [OUTLIER] and triage.modules == (OUTLIER,)
    assert triage.samples == 3  # a quantile check: every sample, not the worst one
    node = triage.excluded[0].node
    assert triage.excluded[0].op_type == "Conv"
    assert triage.cli_option == f"-p int8_exclude_nodes={node}"
    assert triage.ort_option == f"nodes_to_exclude={[node]!r}"
    assert f"{node}:float32" in triage.polygraphy_option
    assert any(c.precision == "int8" for c in localization.curves)

    # the option, applied through the recipe field as the command line gives it
    resolved = dataclasses.replace(resolve_recipe("yolov5"), factory=lambda: int8_recipe())
    fixed_recipe = build_recipe(resolved, int8_exclude_nodes=node)
    assert fixed_recipe.int8_exclude_nodes == (node,)
    listed = build_recipe(resolved, **parse_params(["int8_exclude_nodes=a, b,a"]))
    assert listed.int8_exclude_nodes == ("a", "b") and listed.params["int8_exclude_nodes"] == "a,b"
    fixed = dataclasses.replace(config, recipe=fixed_recipe, out_dir=tmp_path / "after")
    after = _int8(run_pipeline(fixed))
    assert after and all(c.passed for c in after)
    page = (config.out_dir / "report.html").read_text()
    assert "INT8: nodes to leave unquantized" in page and node in page


def test_a_statistic_check_is_judged_by_its_statistic_not_the_worst_element():
    import numpy as np
    from trt_harness.harness.comparison import OutputAccumulator

    tol = Tolerance(atol=1e-2, rtol=1e-6, check="median")
    acc = OutputAccumulator("o", "torch", "onnxrt", tol)
    ref = np.ones(101, dtype=np.float32)
    cand = ref.copy()
    cand[:10] += 5.0  # a few huge errors: the median is 0
    acc.update(ref, cand)
    result = acc.result()
    assert result.passed and tolerance_ratio(result, elementwise=500.0) == 0.0
    cand[:60] += 0.05  # now the median error is 0.05 = 5x atol
    acc = OutputAccumulator("o", "torch", "onnxrt", tol)
    acc.update(ref, cand)
    assert not acc.result().passed
    assert tolerance_ratio(acc.result(), elementwise=0.0) == pytest.approx(5.0, rel=0.13)
    assert math.isinf(tolerance_ratio(dataclasses.replace(acc.result(), nonfinite_mismatches=1), 0.0))
