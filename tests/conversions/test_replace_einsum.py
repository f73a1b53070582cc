"""einsum replacement: any equation equals torch.einsum, exports as MatMul/ReduceSum without Einsum."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from trt_harness.conversions.replacements import applied

from tests.conversions.test_replace_support import assert_runs_like_torch, export_onnx, op_types

# Error bound: float64 operands in [-1, 1], at most 4**4 products per output element; only the
# summation order differs from torch (MatMul blocks vs. torch's own contraction), so the results
# agree to well within 1e-10 absolute and relative.
TOLERANCE = 1e-10
LABELS = "abcdeXYZ"


@st.composite
def einsum_calls(draw: st.DrawFn) -> tuple[tuple, str]:
    """Valid equations: 1-3 operands, broadcasting size-1 dims, ellipses, diagonals, implicit output."""
    labels = draw(st.lists(st.sampled_from(LABELS), min_size=1, max_size=5, unique=True))
    sizes = {label: draw(st.integers(1, 4)) for label in labels}
    ellipsis = draw(st.lists(st.integers(1, 3), max_size=2)) if draw(st.booleans()) else None
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    terms, operands = [], []
    for _ in range(draw(st.integers(1, 3))):
        term = draw(st.lists(st.sampled_from(labels), max_size=4))  # repeats are diagonals
        shape = [1 if draw(st.integers(0, 2)) == 0 else sizes[label] for label in term]
        for i, label in enumerate(term):  # a repeated label has one size within its operand
            shape[i] = shape[term.index(label)]
        text = "".join(term)
        if ellipsis is not None:
            where = draw(st.integers(0, len(term)))
            dims = ellipsis[len(ellipsis) - draw(st.integers(0, len(ellipsis))) :]
            dims = [1 if draw(st.integers(0, 4)) == 0 else d for d in dims]
            text, shape = text[:where] + "..." + text[where:], shape[:where] + dims + shape[where:]
        terms.append(text)
        operands.append(torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1)
    equation = ",".join(terms)
    if draw(st.booleans()):
        present = sorted({c for term in terms for c in term if c != "."})
        output = "".join(draw(st.permutations(present))[: draw(st.integers(0, len(present)))])
        if ellipsis is not None and draw(st.booleans()):
            where = draw(st.integers(0, len(output)))
            output = output[:where] + "..." + output[where:]
        equation += "->" + output
    form = draw(st.sampled_from(["operands", "list"]))
    args = (equation, *operands) if form == "operands" else (equation, operands)
    return args, form


def _operands(*shapes: tuple[int, ...]) -> list[torch.Tensor]:
    return [torch.rand(shape, dtype=torch.float64) * 2 - 1 for shape in shapes]


@settings(max_examples=100, deadline=None)
@given(einsum_calls())
@example((("ij,jk->ik", *_operands((2, 1), (3, 4))), "operands"))  # contracted dim broadcast from the left
@example((("ij,jk->ik", *_operands((2, 3), (1, 4))), "operands"))  # ... and from the right
@example((("ij,ij->", *_operands((1, 3), (4, 1))), "operands"))  # both, to a scalar
def test_matches_torch_einsum(call: tuple[tuple, str]) -> None:
    args, _ = call
    expected = torch.einsum(*args)
    with applied(["einsum"]) as record:
        actual = torch.einsum(*args)
    assert [c.action for c in record.calls] == ["replaced"]
    torch.testing.assert_close(actual, expected, atol=TOLERANCE, rtol=TOLERANCE)


def test_sublist_form_and_functional_alias() -> None:
    a, b = torch.randn(2, 3, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    with applied(["einsum"]) as record:
        sublist = torch.einsum(a, [0, 1], b, [1, 27], [0, 27])
        ellipsis = torch.einsum(a, [..., 1], b, [1, 2])
        functional = torch.functional.einsum("ij,jk", a, b)
    for result in (sublist, ellipsis, functional):
        torch.testing.assert_close(result, a @ b, atol=TOLERANCE, rtol=TOLERANCE)
    assert sum(c.count for c in record.calls) == 3


@pytest.mark.parametrize(
    ("equation", "shapes"),
    [
        ("ij,jk->ii", [(2, 3), (3, 4)]),  # repeated output subscript
        ("ij->k", [(2, 3)]),  # output subscript in no operand
        ("ijk", [(2, 3)]),  # rank mismatch
        ("ij,jk", [(2, 3), (2, 3)]),  # sizes do not broadcast
        ("i.j", [(2, 3)]),  # stray dot
        ("i1", [(2, 3)]),  # invalid subscript
        ("ij,jk->ik", [(2, 3)]),  # too few operands
    ],
)
def test_invalid_equations_raise_torchs_own_error(equation: str, shapes: list[tuple[int, ...]]) -> None:
    operands = [torch.randn(shape) for shape in shapes]
    with pytest.raises(Exception) as original:
        torch.einsum(equation, *operands)
    with pytest.raises(type(original.value)) as replaced, applied(["einsum"]):
        torch.einsum(equation, *operands)
    assert str(replaced.value) == str(original.value)


def test_integer_operands_keep_the_original_op() -> None:
    a, b = torch.arange(6).reshape(2, 3), torch.arange(12).reshape(3, 4)
    with applied(["einsum"]) as record:
        result = torch.einsum("ij,jk->ik", a, b)
    assert torch.equal(result, a @ b)
    assert [(c.action, c.detail) for c in record.calls] == [("kept original", "integer or bool operands")]


class Contractions(torch.nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, square: torch.Tensor) -> torch.Tensor:
        scores = torch.einsum("bhqd,bhkd->bhqk", q, k)  # attention scores, batch and length dynamic
        diagonal = torch.einsum("bii->bi", square)  # diagonal
        chained = torch.einsum("...qk,...kd,bi->...qd", scores, k, diagonal)  # ellipsis, 3 operands
        return chained.sum(dim=(1, 3)) + torch.einsum("bhqk->bq", scores)


# The torch.export-based exporter is covered by test_replace_framework's export of all replacements.
def test_export_has_no_einsum_and_follows_dynamic_shapes() -> None:
    model = Contractions()
    args = (torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4), torch.randn(2, 6, 6))
    dynamic = [[0, 2], [0, 2], [0]]
    original, _ = export_onnx(model, args, "torchscript", dynamic)
    assert "Einsum" in op_types(original)

    replaced, record = export_onnx(model, args, "torchscript", dynamic, ["einsum"])
    assert "Einsum" not in op_types(replaced)
    assert "MatMul" in op_types(replaced)
    assert sum(c.count for c in record.calls if c.action == "replaced") == 4
    # float32 sums of up to 28 products of magnitude ~100: a few ulps of the result apart
    other_sizes = (torch.randn(3, 3, 7, 4), torch.randn(3, 3, 7, 4), torch.randn(3, 6, 6))
    assert_runs_like_torch(replaced, model, other_sizes, atol=1e-4, rtol=1e-5)
