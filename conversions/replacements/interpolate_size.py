"""`F.interpolate(size=...)` -> the same call with `scale_factor`, where that is exact.

A `size=` given as Python ints is frozen into the exported graph (the TorchScript exporter builds
Resize `sizes` from a Shape/Slice/Concat subgraph around it): with dynamic spatial axes the
output keeps the traced size. The scale_factor form exports a Resize with constant scales that
follows its input, which is what a size computed from the input at trace time meant.

Converted: every spatial output size is an integer multiple k >= 1 of the traced input size.
For every mode torch computes bit-identical results for `size=k*n` and `scale_factor=k` (the
tests sweep this), and ONNX Resize computes floor(n * k) = k*n exactly. At the traced shape
nothing changes. With dynamic spatial axes the converted call gives k times its input, which is
the point of opting in; a size= meant to stay fixed while the input varies must not be
converted, so leave interpolate_size out of such a recipe.

Kept as the original call, recorded as "kept original" with the reason (the original exports
fine, it only stays fixed-size):
* downscaling or a non-integer ratio: scale 1/k is not exact in float32, so output sizes and
  sampling positions could differ;
* a size computed from tensor shapes (SymInt / traced values): it already follows the input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trt_harness.conversions.replacements._registry import ReplacementFunctions, register_replacement
from trt_harness.conversions.replacements._sizes import trace_value

if TYPE_CHECKING:
    import torch
    from trt_harness.conversions.replacements._context import ReplacementContext

TARGET = "torch.nn.functional.interpolate"
_PARAMETERS = (
    "input",
    "size",
    "scale_factor",
    "mode",
    "align_corners",
    "recompute_scale_factor",
    "antialias",
)
_DEFAULTS: dict[str, Any] = {
    "size": None,
    "scale_factor": None,
    "mode": "nearest",
    "align_corners": None,
    "recompute_scale_factor": None,
    "antialias": False,
}


def _bound(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {**_DEFAULTS, **dict(zip(_PARAMETERS, args, strict=False)), **kwargs}


def integer_factors(call: Mapping[str, Any]) -> list[int] | str:
    """Per spatial dim the integer upscale factor of a size= call, or why there is none."""
    input, size = call["input"], call["size"]
    spatial = list(input.shape[2:])
    sizes = list(size) if isinstance(size, (list, tuple)) else [size] * len(spatial)
    if not all(isinstance(s, int) for s in sizes):
        return "size is computed from tensor shapes, so it already follows the input"
    traced = [trace_value(s) for s in spatial]
    if len(sizes) != len(traced) or any(i < 1 or o < i or o % i for o, i in zip(sizes, traced, strict=True)):
        return f"output size {sizes} is not an integer multiple of the input size {traced}"
    return [o // i for o, i in zip(sizes, traced, strict=True)]


def _refusal(target: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
    call = _bound(args, kwargs)
    if call["size"] is None:
        return None
    factors = integer_factors(call)
    return factors if isinstance(factors, str) else None


@register_replacement(
    "interpolate_size",
    targets=(TARGET,),
    summary="F.interpolate(size=k*n) -> F.interpolate(scale_factor=k): constant-scale Resize that follows its input",
    refuses=_refusal,
)
def build(context: ReplacementContext) -> ReplacementFunctions:
    original = context.original(TARGET)

    def interpolate(*args: Any, **kwargs: Any) -> torch.Tensor:
        import torch

        call = _bound(args, kwargs)
        not_size_call = (
            call["size"] is None or call["scale_factor"] is not None or call["recompute_scale_factor"]
        )
        if not_size_call or not isinstance(call["input"], torch.Tensor):
            return context.untouched(TARGET, *args, **kwargs)
        factors = integer_factors(call)
        if isinstance(factors, str):
            return context.keep_original(TARGET, factors, *args, **kwargs)
        return original(
            call["input"],
            scale_factor=[float(k) for k in factors],
            mode=call["mode"],
            align_corners=call["align_corners"],
            antialias=call["antialias"],
        )

    return {TARGET: interpolate}
