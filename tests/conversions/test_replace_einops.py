"""einops replacement: rearrange/repeat equal einops exactly; the export runs no einops code."""

from __future__ import annotations

import einops
import einops.einops
import einops.layers.torch
import pytest
import torch
from einops import rearrange as imported_rearrange  # bound at import time, as model code does
from hypothesis import given, settings
from hypothesis import strategies as st
from trt_harness.conversions.replacements import applied

from tests.conversions.test_replace_support import assert_runs_like_torch, export_onnx

# Error bound: none. Both sides only move data (reshape, permute, expand), so results are equal
# bit for bit (torch.equal).
NAMES = "abcdefg"


def _side(draw: st.DrawFn, items: list[str], left: bool) -> str:
    """Group consecutive items into parentheses at random, sprinkling unit axes `1` and `()`.

    On the left `...` stands alone; on the right it may share a group with axes.
    """
    parts, i = [], 0
    while i < len(items):
        take = 1 if left and items[i] == "..." else draw(st.integers(1, 3))
        group = items[i : i + take]
        if left and "..." in group[1:]:
            group = group[: group.index("...")]
        bare = len(group) == 1 and (group == ["..."] and left or draw(st.booleans()))
        parts.append(group[0] if bare else "(" + " ".join(group) + ")")
        i += len(group)
        if draw(st.integers(0, 9)) == 0:
            parts.append(draw(st.sampled_from(["1", "()"])))
    return " ".join(parts)


@st.composite
def einops_calls(draw: st.DrawFn) -> tuple[str, str, tuple[int, ...], dict[str, int]]:
    operation = draw(st.sampled_from(["rearrange", "repeat"]))
    axes = draw(st.lists(st.sampled_from(NAMES), max_size=5, unique=True))
    sizes = {axis: draw(st.integers(1, 3)) for axis in axes}
    use_ellipsis = draw(st.booleans())
    ellipsis_shape = draw(st.lists(st.integers(1, 3), max_size=2))
    left_items = list(axes)
    if use_ellipsis:
        left_items.insert(draw(st.integers(0, len(left_items))), "...")
    left = _side(draw, left_items, left=True)

    # the input shape and the sizes einops needs: all but one axis of each parenthesized group
    shape: list[int] = []
    lengths: dict[str, int] = {}
    tokens = left.replace("(", " ( ").replace(")", " ) ").split()
    group_axes: list[str] | None = None
    for token in tokens:
        if token == "(":
            group_axes = []
        elif token == ")":
            assert group_axes is not None
            named = [a for a in group_axes if a not in ("1", "...")]
            size = 1
            for a in named:
                size *= sizes[a]
            shape.append(size)
            lengths.update({a: sizes[a] for a in named[1:]})
            group_axes = None
        elif group_axes is not None:
            group_axes.append(token)
        elif token == "...":
            shape.extend(ellipsis_shape)
        else:
            shape.append(1 if token == "1" else sizes[token])

    right_items = list(draw(st.permutations(axes)))
    if operation == "repeat":
        for name in draw(st.lists(st.sampled_from("xyz"), max_size=2, unique=True)):
            right_items.insert(draw(st.integers(0, len(right_items))), name)
            lengths[name] = draw(st.integers(1, 3))
        if draw(st.booleans()):
            right_items.insert(draw(st.integers(0, len(right_items))), str(draw(st.integers(2, 3))))
    if use_ellipsis:
        right_items.insert(draw(st.integers(0, len(right_items))), "...")
    return operation, f"{left} -> {_side(draw, right_items, left=False)}", tuple(shape), lengths


@settings(max_examples=100, deadline=None)
@given(einops_calls())
def test_matches_einops(call: tuple[str, str, tuple[int, ...], dict[str, int]]) -> None:
    operation, pattern, shape, lengths = call
    tensor = torch.randn(shape)
    expected = getattr(einops, operation)(tensor, pattern, **lengths)
    with applied(["einops"]) as record:
        actual = getattr(einops, operation)(tensor, pattern, **lengths)
    assert [c.action for c in record.calls] == ["replaced"]
    assert actual.shape == expected.shape
    assert torch.equal(actual, expected)


@pytest.mark.parametrize(
    ("operation", "pattern", "lengths"),
    [
        ("rearrange", "a b c -> a b", {}),  # axis dropped
        ("rearrange", "(a b) c d -> a b c d", {}),  # rank mismatch
        ("rearrange", "a b c -> a (b c) 2", {}),  # anonymous axis in rearrange
        ("repeat", "a b c -> a b c d", {}),  # new axis without size
        ("rearrange", "a b c -> a b c", {"z": 3}),  # size for an unused axis
        ("rearrange", "a (...) -> a", {}),  # parenthesized ellipsis on the left
        ("rearrange", "a b _c -> a b _c", {}),  # invalid name
        ("rearrange", "a (b k) c -> a b k c", {"k": 2}),  # 3 does not split by 2
        ("rearrange", "a b c -> (a (b c))", {}),  # nested parentheses
        ("rearrange", "a b c -> a a b c", {}),  # duplicate axis
        ("rearrange", "a b c->a b c->a", {}),  # two arrows
    ],
)
def test_invalid_patterns_raise_einops_own_error(
    operation: str, pattern: str, lengths: dict[str, int]
) -> None:
    tensor = torch.randn(2, 3, 4)
    with pytest.raises(Exception) as original:
        getattr(einops, operation)(tensor, pattern, **lengths)
    with pytest.raises(type(original.value)), applied(["einops"]):
        getattr(einops, operation)(tensor, pattern, **lengths)


def test_list_input_layer_and_imported_names() -> None:
    tensors = [torch.randn(3, 4) for _ in range(2)]
    layer = einops.layers.torch.Rearrange("b (h p) w -> b h (p w)", p=2)
    images = torch.randn(2, 4, 3)
    expected = (einops.rearrange(tensors, "n a b -> a n b"), layer(images))
    with applied(["einops"]) as record:
        actual = (imported_rearrange(tensors, "n a b -> a n b"), layer(images))
    assert all(torch.equal(a, e) for a, e in zip(actual, expected, strict=True))
    assert sum(c.count for c in record.calls if c.action == "replaced") == 2


class Patches(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.to_tokens = einops.layers.torch.Rearrange("b c h w -> b (h w) c")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        split = einops.rearrange(images, "b c (h p) w -> b (c p) h w", p=2)
        tiled = einops.repeat(split, "b c h w -> b c h (w r)", r=2)
        return self.to_tokens(tiled)


# The torch.export-based exporter is covered by test_replace_framework's export of all replacements.
def test_export_runs_no_einops_code_and_follows_dynamic_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    def einops_internals_called(*args: object, **kwargs: object) -> None:
        raise AssertionError("einops code ran inside the export")

    model = Patches()
    args = (torch.randn(2, 3, 8, 5),)
    monkeypatch.setattr(einops.einops, "_apply_recipe", einops_internals_called)
    monkeypatch.setattr(einops.layers.torch, "apply_for_scriptable_torch", einops_internals_called)
    replaced, record = export_onnx(model, args, "torchscript", [[0, 2, 3]], ["einops"])
    assert sum(c.count for c in record.calls if c.action == "replaced") == 3
    monkeypatch.undo()
    assert_runs_like_torch(replaced, model, (torch.randn(3, 3, 12, 7),), 0.0)
