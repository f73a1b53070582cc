"""interpolate_size replacement: size=k*n becomes scale_factor=k with identical results; other sizes stay."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from trt_harness.conversions.replacements import applied

from tests.conversions.test_replace_support import export_onnx, nodes_of, run_onnx

# Error bound: none. For integer upscale factors torch computes the same source coordinates and
# weights from scale_factor=k as from size=k*n (scale 1/k either way), so results are equal bit
# for bit (torch.equal); the property test below checks that across modes, sizes and factors.

MODES = [  # (mode, spatial dims, align_corners choices, antialias choices)
    ("nearest", 1, [None], [False]),
    ("nearest", 2, [None], [False]),
    ("nearest", 3, [None], [False]),
    ("nearest-exact", 2, [None], [False]),
    ("area", 2, [None], [False]),
    ("linear", 1, [False, True], [False]),
    ("bilinear", 2, [False, True], [False, True]),
    ("bicubic", 2, [False, True], [False, True]),
    ("trilinear", 3, [False, True], [False]),
]


@st.composite
def upscales(draw: st.DrawFn) -> tuple[torch.Tensor, dict]:
    mode, spatial, corner_choices, antialias_choices = draw(st.sampled_from(MODES))
    sizes = draw(st.lists(st.integers(1, 6), min_size=spatial, max_size=spatial))
    factors = draw(st.lists(st.integers(1, 8), min_size=spatial, max_size=spatial))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    values = torch.randn(draw(st.integers(1, 2)), draw(st.integers(1, 3)), *sizes, generator=generator)
    size = [n * k for n, k in zip(sizes, factors, strict=True)]
    options = {
        "size": size[0] if spatial == 1 and draw(st.booleans()) else size,
        "mode": mode,
        "align_corners": draw(st.sampled_from(corner_choices)),
        "antialias": draw(st.sampled_from(antialias_choices)),
    }
    return values, options


@settings(max_examples=100, deadline=None)
@given(upscales())
def test_integer_upscale_matches_size_call(call: tuple[torch.Tensor, dict]) -> None:
    values, options = call
    expected = F.interpolate(values, **options)
    with applied(["interpolate_size"]) as record:
        actual = F.interpolate(values, **options)
    assert [c.action for c in record.calls] == ["replaced"]
    assert actual.shape == expected.shape and torch.equal(actual, expected)


@pytest.mark.parametrize(
    ("size", "reason"),
    [((6, 7), "not an integer multiple"), ((2, 2), "not an integer multiple")],  # ratios 1.5, 1.75; downscale
)
def test_other_sizes_keep_the_original_call(size: tuple[int, int], reason: str) -> None:
    values = torch.randn(1, 2, 4, 4)
    expected = F.interpolate(values, size=size, mode="bilinear")
    with applied(["interpolate_size"]) as record:
        actual = F.interpolate(values, size=size, mode="bilinear")
    assert torch.equal(actual, expected)
    [call] = record.calls
    assert call.action == "kept original" and reason in call.detail


def test_scale_factor_calls_are_left_alone() -> None:
    values = torch.randn(1, 2, 4, 4)
    with applied(["interpolate_size"]) as record:
        torch.nn.Upsample(scale_factor=2)(values)
    assert record.calls == []


class FrozenSize(torch.nn.Module):
    """The usual reason for size=: computed from the traced input as Python ints."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = int(images.shape[2]), int(images.shape[3])
        return F.interpolate(images, size=(height * 2, width * 3), mode="bilinear", align_corners=False)


def _resize_inputs(proto: object) -> tuple[str, str]:
    [resize] = nodes_of(proto, "Resize")
    inputs = list(resize.input) + ["", "", "", ""]
    return inputs[2], inputs[3]  # scales, sizes


# The torch.export-based exporter is covered by test_replace_framework's export of all replacements.
def test_export_resizes_by_constant_scales_and_follows_the_input() -> None:
    model = FrozenSize()
    args = (torch.randn(2, 3, 4, 5),)
    original, _ = export_onnx(model, args, "torchscript", [[0, 2, 3]])
    assert _resize_inputs(original)[1]  # a `sizes` input, frozen at the traced 8x15
    assert run_onnx(original, (torch.randn(1, 3, 6, 7),)).shape == (1, 3, 8, 15)

    replaced, record = export_onnx(model, args, "torchscript", [[0, 2, 3]], ["interpolate_size"])
    scales, sizes = _resize_inputs(replaced)
    assert scales and not sizes
    assert [c.action for c in record.calls] == ["replaced"]
    other = torch.randn(1, 3, 6, 7)
    expected = F.interpolate(other, scale_factor=(2.0, 3.0), mode="bilinear", align_corners=False)
    torch.testing.assert_close(torch.from_numpy(run_onnx(replaced, (other,))), expected, atol=1e-5, rtol=1e-5)
