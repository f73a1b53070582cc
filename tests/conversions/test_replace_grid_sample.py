"""grid_sample replacement: equal to F.grid_sample, exports without GridSample, refuses bicubic by name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from trt_harness.conversions.replacements import ReplacementUnsupported, applied
from trt_harness.models.core.errors import HarnessError

from tests.conversions.test_replace_support import assert_runs_like_torch, export_onnx, op_types

# Error bounds. Nearest: exact, because the replacement computes the source coordinate with
# torch's own CPU formulas (same operations in the same order), so it picks the same pixel, ties
# included. Bilinear: four products summed; torch's vectorised kernel may fuse multiply-adds, so
# the results differ by a few ulps of the largest partial sum (|values| < 6, weights <= 1):
# float32 1e-5, float64 1e-12.
BILINEAR_TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


@st.composite
def grid_sample_calls(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, dict]:
    ndim = draw(st.sampled_from([4, 5]))
    spatial = draw(st.lists(st.integers(1, 5), min_size=ndim - 2, max_size=ndim - 2))
    out_spatial = draw(st.lists(st.integers(1, 4), min_size=ndim - 2, max_size=ndim - 2))
    batch, channels = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    values = torch.randn(batch, channels, *spatial, generator=generator, dtype=dtype)
    grid_shape = (batch, *out_spatial, ndim - 2)
    if draw(st.booleans()):
        # quarter steps land exactly on pixel centres and half-way points: rounding ties for nearest
        grid = torch.randint(-6, 7, grid_shape, generator=generator).to(dtype) / 4
    else:
        grid = torch.rand(grid_shape, generator=generator, dtype=dtype) * 3 - 1.5  # outside [-1, 1] too
    options = {
        "mode": draw(st.sampled_from(["bilinear", "nearest"])),
        "padding_mode": draw(st.sampled_from(["zeros", "border", "reflection"])),
        "align_corners": draw(st.booleans()),
    }
    return values, grid, options


@settings(max_examples=100, deadline=None)
@given(grid_sample_calls())
def test_matches_grid_sample(call: tuple[torch.Tensor, torch.Tensor, dict]) -> None:
    values, grid, options = call
    expected = F.grid_sample(values, grid, **options)
    with applied(["grid_sample"]) as record:
        actual = F.grid_sample(values, grid, **options)
    assert [c.action for c in record.calls] == ["replaced"]
    tolerance = 0.0 if options["mode"] == "nearest" else BILINEAR_TOLERANCE[values.dtype]
    torch.testing.assert_close(actual, expected, atol=tolerance, rtol=tolerance)


class Sampler(torch.nn.Module):
    def __init__(self, **options: object) -> None:
        super().__init__()
        self.options = options

    def forward(self, values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(values, grid, **self.options)


# The torch.export-based exporter is covered by test_replace_framework's export of all replacements.
def test_4d_export_has_no_gridsample_and_follows_dynamic_shapes() -> None:
    model = Sampler(mode="bilinear", padding_mode="reflection", align_corners=False)
    args = (torch.randn(2, 3, 5, 6), torch.rand(2, 4, 3, 2) * 2.4 - 1.2)
    dynamic = [[0, 2, 3], [0, 1, 2]]
    original, _ = export_onnx(model, args, "torchscript", dynamic)
    assert "GridSample" in op_types(original)

    replaced, record = export_onnx(model, args, "torchscript", dynamic, ["grid_sample"])
    assert "GridSample" not in op_types(replaced)
    assert {c.action for c in record.calls} == {"replaced"}
    assert_runs_like_torch(
        replaced, model, (torch.randn(3, 3, 7, 4), torch.rand(3, 2, 5, 2) * 2.4 - 1.2), 1e-5
    )


def test_5d_exports_where_the_torchscript_exporter_fails() -> None:
    model = Sampler(mode="nearest", padding_mode="border", align_corners=True)
    args = (torch.randn(1, 2, 3, 4, 5), torch.rand(1, 2, 3, 2, 3) * 2 - 1)
    dynamic = [[0, 2, 3, 4], [0, 1, 2, 3]]
    with pytest.raises(Exception, match="GridSample with 5D"):
        export_onnx(model, args, "torchscript", dynamic)
    replaced, _ = export_onnx(model, args, "torchscript", dynamic, ["grid_sample"])
    assert "GridSample" not in op_types(replaced)
    assert_runs_like_torch(
        replaced, model, (torch.randn(2, 2, 4, 3, 6), torch.rand(2, 3, 2, 4, 3) * 2 - 1), 0.0
    )


def _assert_names_call(error: BaseException, line_marker: str, function: str) -> None:
    message = str(error)
    line = next(i for i, text in enumerate(Path(__file__).read_text().splitlines(), 1) if line_marker in text)
    assert re.search(rf"test_replace_grid_sample\.py:{line} in {function}", message), message
    assert "grid_sample" in message and "mode='bicubic'" in message


def test_bicubic_is_refused_naming_op_option_and_call_site() -> None:
    values, grid = torch.randn(1, 1, 4, 4), torch.rand(1, 2, 2, 2)
    with pytest.raises(ReplacementUnsupported) as raised, applied(["grid_sample"]):
        F.grid_sample(values, grid, mode="bicubic", align_corners=False)  # bicubic-eager
    _assert_names_call(
        raised.value, "# bicubic-eager", "test_bicubic_is_refused_naming_op_option_and_call_site"
    )


class BicubicSampler(torch.nn.Module):
    def forward(self, values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(values, grid, mode="bicubic", align_corners=False)  # bicubic-model


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_bicubic_refusal_reaches_the_caller_of_the_exporter(exporter: str) -> None:
    # the dynamo exporter catches the error and retries in strict mode, which bypasses the patch;
    # applied() must still raise instead of letting a GridSample through
    args = (torch.randn(1, 1, 4, 4), torch.rand(1, 2, 2, 2))
    with pytest.raises(HarnessError) as raised:
        export_onnx(BicubicSampler(), args, exporter, [[0], [0]], ["grid_sample"])
    _assert_names_call(raised.value, "# bicubic-model", "forward")
