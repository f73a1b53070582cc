"""squeeze_static replacement: equals squeeze (values, shape, view), and the TorchScript export has no If."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from trt_harness.conversions.replacements import applied

from tests.conversions.test_replace_support import assert_runs_like_torch, export_onnx, op_types

# Error bound: none. A squeeze is a view; values, shape and storage must be identical.


@st.composite
def squeeze_calls(draw: st.DrawFn) -> tuple[torch.Tensor, tuple, str]:
    shape = draw(st.lists(st.sampled_from([1, 1, 2, 3]), max_size=5))
    rank = max(len(shape), 1)
    dim = draw(
        st.one_of(
            st.just(None),
            st.integers(-rank, rank - 1),
            st.lists(st.integers(0, rank - 1), max_size=3, unique=True).map(tuple),
        )
    )
    form = draw(st.sampled_from(["method", "function"]))
    return torch.randn(shape), (() if dim is None else (dim,)), form


def _squeeze(tensor: torch.Tensor, args: tuple, form: str) -> torch.Tensor:
    return tensor.squeeze(*args) if form == "method" else torch.squeeze(tensor, *args)


@settings(max_examples=100, deadline=None)
@given(squeeze_calls())
def test_matches_squeeze(call: tuple[torch.Tensor, tuple, str]) -> None:
    tensor, args, form = call
    expected = _squeeze(tensor, args, form)
    with applied(["squeeze_static"]) as record:
        actual = _squeeze(tensor, args, form)
    assert [c.action for c in record.calls] == ["replaced"]
    assert actual.shape == expected.shape and torch.equal(actual, expected)
    assert actual.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr()  # a view, like squeeze


@pytest.mark.parametrize("dim", [3, -4, (0, 0), "x"])
def test_invalid_dims_raise_torchs_own_error(dim: object) -> None:
    tensor = torch.randn(1, 2, 1)
    with pytest.raises(Exception) as original:
        tensor.squeeze(dim)
    with pytest.raises(type(original.value)), applied(["squeeze_static"]):
        tensor.squeeze(dim)


class Flattened(torch.nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # after a reshape to a computed shape ONNX shape inference cannot see that dim 2 is 1
        rows = images.reshape(images.shape[0], -1, 1)
        return rows.squeeze(2) + torch.squeeze(rows, -1)


# The torch.export-based exporter emits no If for squeeze; it is covered by test_replace_framework.
def test_torchscript_export_has_no_if_and_follows_dynamic_shapes() -> None:
    model = Flattened()
    args = (torch.randn(2, 1, 4, 5),)
    original, _ = export_onnx(model, args, "torchscript", [[0, 2, 3]])
    assert "If" in op_types(original)

    replaced, record = export_onnx(model, args, "torchscript", [[0, 2, 3]], ["squeeze_static"])
    assert "If" not in op_types(replaced)
    assert sum(c.count for c in record.calls if c.action == "replaced") == 2
    assert_runs_like_torch(replaced, model, (torch.randn(3, 1, 6, 7),), 0.0)
