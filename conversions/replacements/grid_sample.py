"""`F.grid_sample` -> Gather-based bilinear / nearest sampling (no ONNX GridSample).

ONNX GridSample needs opset 16 (5-D: opset 20), the TorchScript exporter rejects 5-D input,
TensorRT's GridSample importer takes 4-D input only and TensorRT 8.2 and older have none.
Gather, Floor, Round and elementwise math build everywhere.

Covered: 4-D and 5-D input, mode bilinear (trilinear for 5-D) and nearest, padding_mode zeros,
border and reflection, align_corners True/False. The coordinate arithmetic follows torch's CPU
kernels operation by operation (the vectorised 2-D kernel for 4-D input, the scalar 3-D kernel
for 5-D input), so nearest-neighbour ties round the same way as the reference: round half to
even. CUDA computes the same coordinates in another order (last-bit differences). A NaN grid
coordinate reads pixel 0 under border/reflection padding, as in torch's 2-D CPU kernel.

mode='bicubic' is refused with the call site.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trt_harness.conversions.replacements._registry import ReplacementFunctions, register_replacement
from trt_harness.conversions.replacements._sizes import product, trace_value

if TYPE_CHECKING:
    import torch
    from trt_harness.conversions.replacements._context import ReplacementContext

TARGET = "torch.nn.functional.grid_sample"
_MODES = ("bilinear", "nearest")
_PADDINGS = ("zeros", "border", "reflection")


def _clip(coord: torch.Tensor, size: Any) -> torch.Tensor:
    import torch

    # where() rather than clamp: a NaN fails both tests and becomes 0, as in torch's CPU kernel
    low = torch.where(coord > 0, coord, torch.zeros_like(coord))
    return torch.where(low < size - 1, low, torch.zeros_like(low) + (size - 1))


def _coords_2d_kernel(g: torch.Tensor, size: Any, padding: str, align_corners: bool) -> torch.Tensor:
    """Source coordinates as in torch's vectorised CPU kernel (ComputeLocation, GridSamplerKernel.cpp)."""
    import torch

    coord = (g + 1) * ((size - 1) / 2) if align_corners else (g + 1) * (size / 2) - 0.5
    if padding == "border":
        return _clip(coord, size)
    if padding == "reflection":
        if align_corners and trace_value(size) <= 1:
            return torch.zeros_like(coord)
        low, twice_span = (0.0, (size - 1) * 2) if align_corners else (-0.5, size * 2)
        distance = (coord - low).abs()
        extra = distance - (distance / twice_span).floor() * twice_span
        return _clip(torch.minimum(extra, twice_span - extra) + low, size)
    return coord


def _coords_3d_kernel(g: torch.Tensor, size: Any, padding: str, align_corners: bool) -> torch.Tensor:
    """Source coordinates as in torch's scalar kernel (grid_sampler_compute_source_index, GridSampler.h)."""
    import torch

    coord = ((g + 1) / 2) * (size - 1) if align_corners else ((g + 1) * size - 1) / 2
    if padding == "border":
        return _clip(coord, size)
    if padding == "reflection":
        twice_low, twice_high = (0, 2 * (size - 1)) if align_corners else (-1, 2 * size - 1)
        if align_corners and trace_value(size) <= 1:
            return torch.zeros_like(coord)
        lowest, span = twice_low / 2, (twice_high - twice_low) / 2
        distance = (coord - lowest).abs()
        extra = torch.fmod(distance, span)
        flips = (distance / span).floor()
        even = (flips * 0.5).floor() * 2 == flips
        return _clip(torch.where(even, extra + lowest, span - extra + lowest), size)
    return coord


def _sample(
    input: torch.Tensor, grid: torch.Tensor, mode: str, padding: str, align_corners: bool
) -> torch.Tensor:
    import torch

    spatial = list(input.shape[2:])  # (H, W) or (D, H, W)
    n_spatial = len(spatial)
    channels = input.shape[1]
    batch = input.shape[0]
    out_spatial = list(grid.shape[1:-1])
    compute = _coords_2d_kernel if n_spatial == 2 else _coords_3d_kernel
    # grid[..., 0] indexes the last input dim (x -> W), grid[..., 1] the one before (y -> H), ...
    coords = [
        compute(grid[..., n_spatial - 1 - d], spatial[d], padding, align_corners) for d in range(n_spatial)
    ]

    rows = input.permute(0, *range(2, 2 + n_spatial), 1).reshape(-1, channels)  # one row per (n, pixel)
    first_row = torch.arange(batch, device=input.device).view(-1, *[1] * n_spatial) * product(spatial)

    def gather(corner: list[torch.Tensor]) -> torch.Tensor:
        inside = None
        flat: Any = first_row
        stride: Any = 1
        for d in reversed(range(n_spatial)):
            ok = (corner[d] >= 0) & (corner[d] <= spatial[d] - 1)
            inside = ok if inside is None else inside & ok
            flat = flat + corner[d].to(torch.int64) * stride
            stride = stride * spatial[d]
        flat = torch.where(inside, flat, torch.zeros_like(flat))
        values = rows.index_select(0, flat.reshape(-1))
        return torch.where(inside.reshape(-1, 1), values, torch.zeros_like(values))

    if mode == "nearest":
        result = gather([c.round() for c in coords])
    else:
        floors = [c.floor() for c in coords]
        result = None
        # torch adds the corners with the innermost dim (x) changing fastest: nw, ne, sw, se, ...
        for offsets in itertools.product((0, 1), repeat=n_spatial):
            weight = None
            # factor order as in torch: y * x in the 2-D kernel, x * y * z in the 3-D one
            for d in range(n_spatial) if n_spatial == 2 else reversed(range(n_spatial)):
                part = _corner_weight(coords[d], floors[d], offsets[d], n_spatial)
                weight = part if weight is None else weight * part
            term = gather([f + o for f, o in zip(floors, offsets, strict=True)]) * weight.reshape(-1, 1)
            result = term if result is None else result + term
    return result.reshape(batch, *out_spatial, channels).permute(0, n_spatial + 1, *range(1, n_spatial + 1))


def _corner_weight(coord: torch.Tensor, floor: torch.Tensor, offset: int, n_spatial: int) -> torch.Tensor:
    if n_spatial == 2:  # vectorised kernel: w = x - floor(x), e = 1 - w
        fraction = coord - floor
        return fraction if offset else 1 - fraction
    # scalar 3-D kernel: (x_upper - x) and (x - x_lower)
    return coord - floor if offset else (floor + 1) - coord


def _refusal(target: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
    names = ("input", "grid", "mode", "padding_mode", "align_corners")
    bound = dict(zip(names, args, strict=False)) | dict(kwargs)
    mode = bound.get("mode", "bilinear")
    if mode not in _MODES:
        return f"mode={mode!r} is not supported (the replacement covers {', '.join(map(repr, _MODES))})"
    return None


@register_replacement(
    "grid_sample",
    targets=(TARGET,),
    summary="F.grid_sample (4-D/5-D, bilinear/nearest, zeros/border/reflection) -> Gather + elementwise math",
    refuses=_refusal,
)
def build(context: ReplacementContext) -> ReplacementFunctions:
    def grid_sample(
        input: torch.Tensor,
        grid: torch.Tensor,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        align_corners: bool | None = None,
    ) -> torch.Tensor:
        arguments = (input, grid, mode, padding_mode, align_corners)
        refusal = _refusal(TARGET, arguments, {})
        if refusal is not None and mode == "bicubic":
            context.fail(
                f"F.grid_sample {refusal}",
                "use mode='bilinear' or 'nearest' in the model, or remove 'grid_sample' from the recipe's "
                "export replacements (TensorRT builds a 4-D bicubic GridSample itself)",
            )
        valid = (
            refusal is None
            and padding_mode in _PADDINGS
            and input.dim() in (4, 5)
            and grid.dim() == input.dim()
            and trace_value(grid.shape[-1]) == input.dim() - 2
            and trace_value(grid.shape[0]) == trace_value(input.shape[0])
            and input.dtype == grid.dtype
            and input.dtype.is_floating_point
        )
        if not valid:
            context.reject(TARGET, "arguments outside what grid_sample accepts", *arguments)
        return _sample(input, grid, mode, padding_mode, bool(align_corners))

    return {TARGET: grid_sample}
