"""`torch.inverse` / `torch.linalg.inv` / `Tensor.inverse` -> closed-form adjugate for n <= 4.

Neither exporter lowers aten::linalg_inv (ONNX has no matrix inverse). For n <= 4 the inverse is
the adjugate over the determinant, built from cofactors with Mul/Sub/Add only, batched over any
leading dims. The matrix is first divided by its largest magnitude (and the inverse by it
afterwards), so a well-scaled, well-conditioned matrix of any magnitude neither overflows nor
underflows in float32; the error then grows like cond(A) * eps, as for any direct method.

Differences from torch: a singular matrix gives inf/NaN instead of an error (a traced graph
cannot raise), and there is no pivoting, so ill-conditioned matrices lose more accuracy than
LU would. n > 4 is refused with the call site; integer inputs go to torch, which rejects them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trt_harness.conversions.replacements._registry import ReplacementFunctions, register_replacement
from trt_harness.conversions.replacements._sizes import trace_value

if TYPE_CHECKING:
    import torch
    from trt_harness.conversions.replacements._context import ReplacementContext

TARGETS = ("torch.inverse", "torch.linalg.inv", "torch.Tensor.inverse")
MAX_N = 4


def _determinant(entries: list[list[Any]], rows: tuple[int, ...], cols: tuple[int, ...], memo: dict) -> Any:
    """Laplace expansion along the first row; sub-determinants are shared through `memo`."""
    key = (rows, cols)
    if key not in memo:
        if len(rows) == 1:
            memo[key] = entries[rows[0]][cols[0]]
        else:
            total: Any = None
            for k, col in enumerate(cols):
                minor = _determinant(entries, rows[1:], cols[:k] + cols[k + 1 :], memo)
                term = entries[rows[0]][col] * minor
                total = term if total is None else (total - term if k % 2 else total + term)
            memo[key] = total
    return memo[key]


def closed_form_inverse(a: torch.Tensor) -> torch.Tensor:
    """Inverse of the (..., n, n) batch `a` for 1 <= n <= 4 via cofactors; exportable, no pivoting."""
    import torch

    n = trace_value(a.shape[-1])
    if n == 1:
        return a.reciprocal()
    scale = a.abs().amax(dim=(-2, -1), keepdim=True)
    scaled = a / scale
    entries = [[scaled[..., i, j] for j in range(n)] for i in range(n)]
    memo: dict = {}

    def cofactor(i: int, j: int) -> Any:
        rows = tuple(r for r in range(n) if r != i)
        cols = tuple(c for c in range(n) if c != j)
        minor = _determinant(entries, rows, cols, memo)
        return -minor if (i + j) % 2 else minor

    cofactors = [[cofactor(i, j) for j in range(n)] for i in range(n)]
    determinant = entries[0][0] * cofactors[0][0]
    for j in range(1, n):
        determinant = determinant + entries[0][j] * cofactors[0][j]
    # adj(A) is the transposed cofactor matrix: row i of the inverse holds the cofactors C[j][i]
    adjugate = torch.stack(
        [torch.stack([cofactors[j][i] for j in range(n)], dim=-1) for i in range(n)], dim=-2
    )
    return adjugate / (determinant[..., None, None] * scale)


def _refusal(target: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
    import torch

    matrix = args[0] if args else kwargs.get("input", kwargs.get("A"))
    if not isinstance(matrix, torch.Tensor) or matrix.dim() < 2:
        return None
    n = trace_value(matrix.shape[-1])
    if n > MAX_N:
        return f"the matrices are {n}x{n}; the closed form covers n <= {MAX_N}"
    return None


@register_replacement(
    "inverse",
    targets=TARGETS,
    summary="torch.inverse / linalg.inv / Tensor.inverse (n <= 4) -> closed-form adjugate with Mul/Sub/Div",
    refuses=_refusal,
)
def build(context: ReplacementContext) -> ReplacementFunctions:
    def make(target: str) -> Any:
        def inverse(*args: Any, **kwargs: Any) -> torch.Tensor:
            import torch

            matrix = args[0] if args else kwargs.get("input", kwargs.get("A"))
            valid = (
                isinstance(matrix, torch.Tensor)
                and len(args) + len(kwargs) == 1
                and matrix.dim() >= 2
                and trace_value(matrix.shape[-1]) == trace_value(matrix.shape[-2])
                and (matrix.dtype.is_floating_point or matrix.dtype.is_complex)
            )
            if not valid:
                context.reject(
                    target, "expects one batch of square float matrices and no out=", *args, **kwargs
                )
            refusal = _refusal(target, args, kwargs)
            if refusal is not None:
                context.fail(
                    f"{target}: {refusal}",
                    "neither exporter can lower a matrix inverse, so compute it outside the exported model "
                    "(pass it in as an input) or restructure the model to invert blocks of at most 4x4",
                )
            if trace_value(matrix.shape[-1]) == 0:
                return matrix.clone()
            return closed_form_inverse(matrix)

        return inverse

    return {target: make(target) for target in TARGETS}
