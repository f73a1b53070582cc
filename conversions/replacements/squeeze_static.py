"""`squeeze` -> `view` to the shape without the squeezed dims, so no `If` reaches the graph.

With dynamic axes the TorchScript exporter cannot always prove that a squeezed dim is 1 (after
a reshape to a computed shape, for instance) and emits Shape -> Gather -> Equal -> If, whose
branches have different ranks: TensorRT rejects that unless it can fold the condition.

A dim whose size is 1 in the trace is taken to stay 1, the assumption the traced graph makes
everywhere. The result is a `view` whose target shape is read from the tensor itself (every dim
but the squeezed ones), so other dynamic dims stay dynamic and no condition is needed. A dim
that is not 1 in the trace is left alone, as squeeze does. If a squeezed dim is not 1 at run
time after all, the Reshape fails loudly instead of the If silently changing the rank.

`unsqueeze` exports as Unsqueeze with constant axes and needs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trt_harness.conversions.replacements._registry import ReplacementFunctions, register_replacement
from trt_harness.conversions.replacements._sizes import trace_value

if TYPE_CHECKING:
    import torch
    from trt_harness.conversions.replacements._context import ReplacementContext

TARGETS = ("torch.squeeze", "torch.Tensor.squeeze")


@register_replacement(
    "squeeze_static",
    targets=TARGETS,
    summary="torch.squeeze / Tensor.squeeze -> view to the shape without the size-1 dims (no If)",
)
def build(context: ReplacementContext) -> ReplacementFunctions:
    def make(target: str) -> Any:
        def squeeze(input: torch.Tensor, dim: Any = None) -> torch.Tensor:
            rank = input.dim()
            dims = list(range(rank)) if dim is None else [dim] if isinstance(dim, int) else list(dim)
            bound = max(rank, 1)  # a 0-D tensor accepts dim 0 and -1
            in_range = all(isinstance(d, int) and -bound <= d < bound for d in dims)
            if not in_range or len({d % bound for d in dims}) != len(dims):
                context.reject(
                    target, f"dim={dim!r} for a {rank}-D tensor", input, *(() if dim is None else (dim,))
                )
            dropped = {d % rank for d in dims if rank and trace_value(input.shape[d]) == 1}
            if not dropped:
                return input.view_as(input)
            return input.view([size for i, size in enumerate(input.shape) if i not in dropped])

        return squeeze

    return {target: make(target) for target in TARGETS}
