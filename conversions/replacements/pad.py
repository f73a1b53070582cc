"""`F.pad` -> Slice, Gather and Concat, so the exported graph holds no ONNX Pad.

TensorRT before 8.4 pads only with constant zeros (older releases only the two spatial dims of
4-D tensors), and the TorchScript exporter computes the pads at run time through a
Shape/Concat subgraph. Slices and concatenations build everywhere.

All four modes, any number of padded trailing dims, and negative pads (cropping), with torch's
order of cropping and padding: circular crops first, the other modes pad first. The side pieces
come from slices with static bounds and Gathers with constant indices, so dynamic dims stay
dynamic. Arguments torch rejects are passed to torch, which raises its own error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trt_harness.conversions.replacements._registry import ReplacementFunctions, register_replacement
from trt_harness.conversions.replacements._sizes import trace_value

if TYPE_CHECKING:
    import torch
    from trt_harness.conversions.replacements._context import ReplacementContext

TARGET = "torch.nn.functional.pad"
_MODES = ("constant", "reflect", "replicate", "circular")


def _along(x: torch.Tensor, dim: int, index: slice) -> torch.Tensor:
    return x[(slice(None),) * dim + (index,)]


def _gather(x: torch.Tensor, dim: int, indices: list[int]) -> torch.Tensor:
    import torch

    return x.index_select(dim, torch.tensor(indices, dtype=torch.int64, device=x.device))


def _crop(x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    if before >= 0 and after >= 0:
        return x
    return _along(x, dim, slice(-before if before < 0 else None, after if after < 0 else None))


def _side_pieces(
    x: torch.Tensor, dim: int, before: int, after: int, mode: str, value: float
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if mode == "constant":

        def block(width: int) -> torch.Tensor:
            shape = list(x.shape)
            shape[dim] = width
            return x.new_full(shape, value)

        return (block(before) if before else None), (block(after) if after else None)
    if mode == "reflect":
        left = _gather(x, dim, list(range(before, 0, -1))) if before else None
        right = (
            _gather(_along(x, dim, slice(-after - 1, -1)), dim, list(range(after - 1, -1, -1)))
            if after
            else None
        )
        return left, right
    if mode == "replicate":
        left = _gather(x, dim, [0] * before) if before else None
        right = _gather(_along(x, dim, slice(-1, None)), dim, [0] * after) if after else None
        return left, right
    # circular
    return (_along(x, dim, slice(-before, None)) if before else None), (
        _along(x, dim, slice(None, after)) if after else None
    )


def _extend(x: torch.Tensor, dim: int, before: int, after: int, mode: str, value: float) -> torch.Tensor:
    import torch

    if before <= 0 and after <= 0:
        return x
    left, right = _side_pieces(x, dim, max(before, 0), max(after, 0), mode, value)
    return torch.cat([piece for piece in (left, x, right) if piece is not None], dim)


def _invalid(x: torch.Tensor, pads: list[int], mode: str, value: Any) -> str | None:
    """Why torch would reject these arguments (checked on the sizes of this trace), or None."""
    pairs = len(pads) // 2
    if len(pads) % 2 or pairs > x.dim():
        return f"pad {pads} must have an even length of at most 2 * {x.dim()}"
    if mode not in _MODES:
        return f"mode={mode!r} is not one of {_MODES}"
    sizes = [trace_value(x.shape[x.dim() - 1 - i]) for i in range(pairs)]
    pads_first = mode in ("reflect", "replicate")  # these crop the padded tensor, the others the input
    for i, size in enumerate(sizes):
        before, after = pads[2 * i], pads[2 * i + 1]
        kept, out = size + min(before, 0) + min(after, 0), size + before + after
        if (pads_first and out < 1) or (not pads_first and min(kept, out) < 0):
            return f"pads {before, after} crop more than a dim of size {size} holds"
    if mode == "constant":
        return None
    if value not in (None, 0):
        return f"mode={mode!r} takes no value"
    if pairs not in (1, 2, 3) or x.dim() not in (pairs + 1, pairs + 2):
        return (
            f"mode={mode!r} pads 1-3 trailing dims of a (batched) tensor, got {len(pads)} pads on {x.dim()}-D"
        )
    if x.numel() == 0:
        return f"mode={mode!r} needs a non-empty input"
    for i, size in enumerate(sizes):
        before, after = pads[2 * i], pads[2 * i + 1]
        kept = size + min(before, 0) + min(after, 0)
        if mode == "reflect" and max(before, after) >= size:
            return f"mode='reflect' cannot pad {before, after} on a dim of size {size}"
        if mode == "circular" and max(before, after) > kept:
            # torch checks against the uncropped size and then copies from memory it has not written yet
            return f"mode='circular' cannot wrap {before, after} around a dim of {kept} after cropping"
    return None


@register_replacement(
    "pad",
    targets=(TARGET,),
    summary="F.pad (constant/reflect/replicate/circular, negative pads) -> Slice/Gather/Concat, no ONNX Pad",
)
def build(context: ReplacementContext) -> ReplacementFunctions:
    def pad(
        input: torch.Tensor, pad: Any, mode: str = "constant", value: float | None = None
    ) -> torch.Tensor:
        pads = list(pad)
        if not all(isinstance(p, int) for p in pads):
            # pads computed from dynamic sizes: slices would freeze them, ONNX Pad keeps them exact
            return context.keep_original(TARGET, "pads depend on dynamic sizes", input, pad, mode, value)
        problem = _invalid(input, pads, mode, value)
        if problem is not None:
            context.reject(TARGET, problem, input, pad, mode, value)
        fill = 0 if value is None else value
        x = input
        for i in range(len(pads) // 2):
            dim = input.dim() - 1 - i
            before, after = pads[2 * i], pads[2 * i + 1]
            if mode == "circular":
                x = _extend(_crop(x, dim, before, after), dim, before, after, mode, fill)
            else:
                x = _crop(_extend(x, dim, before, after, mode, fill), dim, before, after)
        # torch returns a new tensor; a pure crop here would still be a view of the input
        return x if any(p > 0 for p in pads) else x.clone()

    return {TARGET: pad}
