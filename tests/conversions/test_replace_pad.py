"""pad replacement: every mode and negative pads equal F.pad exactly; the export has no Pad."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from trt_harness.conversions.replacements import applied

from tests.conversions.test_replace_support import assert_runs_like_torch, export_onnx, op_types

# Error bound: none. Padding only copies elements (slices, gathers, concatenation, a fill value),
# so the results are equal bit for bit (torch.equal).


def _pads_for(draw: st.DrawFn, mode: str, size: int) -> tuple[int, int]:
    """(before, after) for one dim of `size` that torch defines, including crops (negative pads)."""
    if mode == "constant":
        before = draw(st.integers(-size, 4))
        return before, draw(st.integers(-(size + min(before, 0)), 4))
    if mode == "reflect":  # pads < size, at least one element left
        before = draw(st.integers(-(size - 1), size - 1))
        return before, draw(st.integers(max(1 - size - before, -(size - 1)), size - 1))
    if mode == "replicate":
        before = draw(st.integers(-3, 4))
        return before, draw(st.integers(max(1 - size - before, -3), 4))
    # circular wraps what is left after cropping, at most once
    cut_before = draw(st.integers(0, size - 1))
    cut_after = draw(st.integers(0, size - 1 - cut_before))
    kept = size - cut_before - cut_after
    before = -cut_before if cut_before else draw(st.integers(0, kept))
    after = -cut_after if cut_after else draw(st.integers(0, kept))
    return before, after


@st.composite
def pad_calls(draw: st.DrawFn) -> tuple[torch.Tensor, list[int], str, float | None]:
    mode = draw(st.sampled_from(["constant", "reflect", "replicate", "circular"]))
    if mode == "constant":
        ndim = draw(st.integers(1, 5))
        padded = draw(st.integers(1, ndim))
    else:  # torch pads 1-3 trailing dims of an input with one or two leading dims
        padded = draw(st.integers(1, 3))
        ndim = padded + draw(st.integers(1, 2))
    shape = draw(st.lists(st.integers(2 if mode == "reflect" else 1, 5), min_size=ndim, max_size=ndim))
    pads: list[int] = []
    for i in range(padded):
        pads.extend(_pads_for(draw, mode, shape[ndim - 1 - i]))
    dtype = draw(st.sampled_from([torch.float32, torch.int64]))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    values = (torch.randn(shape, generator=generator) * 10).to(dtype)
    value = draw(st.sampled_from([None, 0, 1.5, -2])) if mode == "constant" else None
    return values, pads, mode, value


@settings(max_examples=100, deadline=None)
@given(pad_calls())
def test_matches_pad(call: tuple[torch.Tensor, list[int], str, float | None]) -> None:
    values, pads, mode, value = call
    expected = F.pad(values, pads, mode=mode, value=value)
    with applied(["pad"]) as record:
        actual = F.pad(values, pads, mode=mode, value=value)
    assert [c.action for c in record.calls] == ["replaced"]
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert torch.equal(actual, expected)


def test_result_is_a_new_tensor_even_for_a_pure_crop() -> None:
    values = torch.randn(3, 5)
    before = values.clone()
    with applied(["pad"]):
        cropped = F.pad(values, (-1, -1))
    cropped += 1  # as with torch's pad, writing into the result leaves the input alone
    assert torch.equal(values, before)


@pytest.mark.parametrize(
    ("shape", "pads", "mode", "value"),
    [
        ((2, 3), (1,), "constant", None),  # odd length
        ((2, 3, 4), (1, 1), "reflect", 1.0),  # value with a non-constant mode
        ((1, 2, 3, 4), (1, 1), "reflect", None),  # 1 pair on a 4-D input
        ((1, 2, 3), (3, 0), "reflect", None),  # pad >= size
        ((2, 3), (-2, -2), "constant", None),  # crops more than the dim holds
        ((2, 3), (1, 1), "wrap", None),  # unknown mode
    ],
)
def test_invalid_arguments_raise_torchs_own_error(
    shape: tuple[int, ...], pads: tuple[int, ...], mode: str, value: float | None
) -> None:
    values = torch.randn(shape)
    with pytest.raises(Exception) as original:
        F.pad(values, pads, mode=mode, value=value)
    with pytest.raises(type(original.value)), applied(["pad"]):
        F.pad(values, pads, mode=mode, value=value)


class Padding(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.reflect = torch.nn.ReflectionPad2d((1, 2, 2, 1))  # nn modules call F.pad too

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        padded = F.pad(self.reflect(images), (2, 1, 1, 2), mode="replicate")
        padded = F.pad(padded, (1, 1, -1, 2), mode="circular")
        return F.pad(padded, (1, -1, 0, 0, 1, 1), value=0.5)


# The torch.export-based exporter is covered by test_replace_framework's export of all replacements.
def test_export_has_no_pad_and_follows_dynamic_shapes() -> None:
    model = Padding()
    args = (torch.randn(2, 3, 5, 6),)
    original, _ = export_onnx(model, args, "torchscript", [[0, 2, 3]])
    assert "Pad" in op_types(original)

    replaced, record = export_onnx(model, args, "torchscript", [[0, 2, 3]], ["pad"])
    assert "Pad" not in op_types(replaced)
    assert sum(c.count for c in record.calls if c.action == "replaced") == 4
    assert_runs_like_torch(replaced, model, (torch.randn(1, 3, 7, 4),), 0.0)
