"""inverse replacement: matches torch.linalg.inv for n <= 4, exports where torch.inverse cannot, refuses n > 4."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from trt_harness.conversions.replacements import ReplacementUnsupported, applied

from tests.conversions.test_replace_support import assert_runs_like_torch, export_onnx, op_types

# Error bound. The test matrices are P @ (D + R): R uniform in [-1, 1], D diagonal with
# |d_i| in [n+1, n+4], P a row permutation (so elimination without pivoting would break down).
# Every row keeps a diagonal margin >= 1, hence ||A^-1||_inf <= 1 and cond_inf(A) <= 2n+4 <= 12.
# A direct method then errs by about cond * n * eps relative to max|A^-1|: ~6e-6 in float32,
# ~1e-14 in float64, compared after undoing the random scale 10^k applied to A.
TOLERANCE = {torch.float32: 2e-5, torch.float64: 1e-12}


@st.composite
def well_conditioned(draw: st.DrawFn) -> tuple[torch.Tensor, float]:
    n = draw(st.integers(1, 4))
    batch = draw(st.lists(st.integers(1, 3), max_size=2))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    rest = torch.rand(*batch, n, n, generator=generator, dtype=torch.float64) * 2 - 1
    diagonal = (torch.rand(*batch, n, generator=generator, dtype=torch.float64) * 3 + n + 1) * torch.where(
        torch.rand(*batch, n, generator=generator) < 0.5, -1.0, 1.0
    ).double()
    matrix = (rest + torch.diag_embed(diagonal))[..., torch.randperm(n, generator=generator), :]
    scale = 10.0 ** draw(st.integers(-6, 6))
    return (matrix * scale).to(dtype), scale


@settings(max_examples=100, deadline=None)
@given(well_conditioned())
def test_matches_linalg_inv(case: tuple[torch.Tensor, float]) -> None:
    matrix, scale = case
    expected = torch.linalg.inv(matrix.double())
    with applied(["inverse"]) as record:
        results = [torch.inverse(matrix), torch.linalg.inv(matrix), matrix.inverse()]
    assert [(c.action, c.count) for c in record.calls] == [("replaced", 3)]
    for result in results:
        assert result.dtype == matrix.dtype
        tolerance = TOLERANCE[matrix.dtype]
        torch.testing.assert_close(result.double() * scale, expected * scale, atol=tolerance, rtol=tolerance)


def test_invalid_input_raises_torchs_own_error() -> None:
    for bad in (torch.randn(3, 2), torch.ones(2, 2, dtype=torch.int64)):
        with pytest.raises(RuntimeError) as original:
            torch.linalg.inv(bad)
        with pytest.raises(RuntimeError) as replaced, applied(["inverse"]):
            torch.linalg.inv(bad)
        assert str(replaced.value) == str(original.value)


def test_six_by_six_is_refused_naming_n_and_call_site() -> None:
    with pytest.raises(ReplacementUnsupported) as raised, applied(["inverse"]):
        torch.inverse(torch.eye(6))
    message = str(raised.value)
    assert "6x6" in message and "inverse" in message
    assert re.search(
        r"test_replace_inverse\.py:\d+ in test_six_by_six_is_refused_naming_n_and_call_site", message
    )


class Solver(torch.nn.Module):
    def forward(self, matrices: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        return torch.linalg.inv(matrices) @ vectors + matrices.inverse().sum(-1, keepdim=True)


def _diagonally_dominant(batch: int) -> torch.Tensor:
    return torch.rand(batch, 4, 4) * 2 - 1 + 6 * torch.eye(4)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_original_inverse_does_not_export(exporter: str) -> None:
    with pytest.raises(Exception, match="linalg_inv|Failed to convert"):
        export_onnx(Solver(), (_diagonally_dominant(2), torch.randn(2, 4, 1)), exporter, [[0], [0]])


def test_replaced_inverse_exports_and_follows_dynamic_batch() -> None:
    # torch.export-based exporter: test_replace_framework's export of all replacements
    model = Solver()
    replaced, record = export_onnx(
        model, (_diagonally_dominant(2), torch.randn(2, 4, 1)), "torchscript", [[0], [0]], ["inverse"]
    )
    assert {"MatMul", "Div"} <= op_types(replaced)
    assert sum(c.count for c in record.calls) == 2
    assert_runs_like_torch(replaced, model, (_diagonally_dominant(5), torch.randn(5, 4, 1)), 1e-5)
