"""einops `rearrange` / `repeat` (and the `Rearrange` layer) -> reshape, permute, unsqueeze + expand.

einops builds its reshape sizes in Python at trace time (recipe caches keyed by shape,
divisibility checks on sizes), so what reaches the exporter depends on the einops release and
the tracer. This lowering emits the plain torch ops directly, with every size taken from the
tensor itself, so dynamic dims stay dynamic and no einops code runs inside the trace.

The pattern grammar is einops': axis names, one level of parentheses, `()` and `1` for unit
axes, one `...` (parenthesized only on the right), anonymous sizes (`2`) on the right of
`repeat`, sizes as keyword arguments. Patterns einops rejects go to einops, which raises its own
error; non-torch inputs (NumPy arrays) keep the original call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from trt_harness.conversions.replacements._registry import ReplacementFunctions, register_replacement
from trt_harness.conversions.replacements._sizes import product

if TYPE_CHECKING:
    import torch
    from trt_harness.conversions.replacements._context import ReplacementContext

REARRANGE, REPEAT, LAYER = "einops.rearrange", "einops.repeat", "einops.layers.torch.Rearrange.forward"
Operation = Literal["rearrange", "repeat"]
_ELLIPSIS = "…"


class Anonymous:
    """An anonymous axis of a given size (`2` in `h w -> h w 2`); every occurrence is its own axis."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __repr__(self) -> str:
        return str(self.size)


Axis = str | Anonymous


# a dim of the pattern: a group of axes, or the bare string _ELLIPSIS for a top-level `...`
Group = tuple[Axis, ...] | str


@dataclass(frozen=True)
class Side:
    """One side of a pattern; `(...)` is the group (_ELLIPSIS,), a top-level `...` is _ELLIPSIS itself."""

    groups: tuple[Group, ...]
    has_ellipsis: bool
    ellipsis_grouped: bool

    @property
    def axes(self) -> set[Axis]:
        return {axis for group in self.groups if group != _ELLIPSIS for axis in group}

    @property
    def names(self) -> set[str]:
        named = {axis for axis in self.axes if isinstance(axis, str)}
        return named | ({_ELLIPSIS} if self.has_ellipsis else set())


def _valid_name(name: str) -> bool:
    return name.isidentifier() and not name.startswith("_") and not name.endswith("_")


def parse_side(text: str) -> Side | str:
    """One side of an einops pattern, or why einops would reject it."""
    if "." in text:
        if text.count("...") != 1 or text.count(".") != 3:
            return f"'{text}' may contain dots only in a single '...'"
        text = text.replace("...", _ELLIPSIS)
    groups: list[Group] = []
    open_group: list[Axis] | None = None
    seen: set[str] = set()
    ellipsis_grouped = False

    def add(token: str) -> str | None:
        nonlocal ellipsis_grouped
        if token.isdecimal():
            size = int(token)
            if size == 1:
                if open_group is None:
                    groups.append(())
                return None
            if size == 0:
                return f"anonymous axis '{token}' must be positive"
            axis: Axis = Anonymous(size)
        elif token == _ELLIPSIS or _valid_name(token):
            if token in seen:
                return f"'{text}' repeats axis '{token}'"
            seen.add(token)
            axis = token
            ellipsis_grouped = ellipsis_grouped or (token == _ELLIPSIS and open_group is not None)
        else:
            return f"invalid axis name '{token}'"
        if open_group is None:
            groups.append(axis if axis == _ELLIPSIS else (axis,))
        else:
            open_group.append(axis)
        return None

    token = ""
    for char in text + " ":
        if char.isalnum() or char in ("_", _ELLIPSIS):
            token += char
            continue
        if token:
            problem = add(token)
            if problem:
                return problem
            token = ""
        if char == "(":
            if open_group is not None:
                return "parentheses cannot be nested"
            open_group = []
        elif char == ")":
            if open_group is None:
                return "unbalanced parentheses"
            groups.append(tuple(open_group))
            open_group = None
        elif char != " ":
            return f"unknown character '{char}'"
    if open_group is not None:
        return "unbalanced parentheses"
    return Side(tuple(groups), _ELLIPSIS in seen, ellipsis_grouped)


@dataclass(frozen=True)
class Pattern:
    left: Side
    right: Side


def parse_pattern(pattern: str, operation: Operation, axes_lengths: Mapping[str, Any]) -> Pattern | str:
    """Both sides of `pattern`, checked like einops checks them for `operation`."""
    if pattern.count("->") != 1:
        return f"pattern '{pattern}' needs exactly one '->'"
    left_text, right_text = pattern.split("->")
    left, right = parse_side(left_text), parse_side(right_text)
    if isinstance(left, str) or isinstance(right, str):
        return left if isinstance(left, str) else str(right)
    if right.has_ellipsis and not left.has_ellipsis:
        return "'...' on the right needs '...' on the left"
    if left.ellipsis_grouped:
        return "'...' cannot be parenthesized on the left"
    left_anonymous = any(isinstance(axis, Anonymous) for axis in left.axes)
    if operation == "rearrange":
        if left_anonymous or any(isinstance(axis, Anonymous) for axis in right.axes):
            return "rearrange takes no anonymous axes other than 1"
        if left.names != right.names:
            return f"axes {sorted(left.names ^ right.names)} appear on one side only"
    else:
        if left_anonymous or not left.names <= right.names:
            return "repeat cannot drop axes from the left side"
        unsized = right.names - left.names - set(axes_lengths)
        if unsized:
            return f"repeat needs sizes for new axes {sorted(unsized)}"
    for name in axes_lengths:
        if not _valid_name(name) or name not in left.names | right.names:
            return f"size given for '{name}', which the pattern does not use"
    return Pattern(left, right)


def _expand_ellipsis(groups: Sequence[Group], labels: list[str]) -> list[tuple[Axis, ...]]:
    expanded: list[tuple[Axis, ...]] = []
    for group in groups:
        if group == _ELLIPSIS:
            expanded.extend((label,) for label in labels)
        else:
            expanded.append(tuple(a for axis in group for a in (labels if axis == _ELLIPSIS else [axis])))
    return expanded


def _lowered(x: torch.Tensor, pattern: Pattern, axes_lengths: Mapping[str, Any]) -> torch.Tensor | str:
    """The rearranged / repeated tensor, or why einops would reject this input."""
    fixed = len(pattern.left.groups) - (1 if pattern.left.has_ellipsis else 0)
    if x.dim() < fixed or (x.dim() != fixed and not pattern.left.has_ellipsis):
        return f"the pattern expects {fixed}{'+' if pattern.left.has_ellipsis else ''} dims, the tensor has {x.dim()}"
    labels = [f"{_ELLIPSIS}{i}" for i in range(x.dim() - fixed)]
    left = _expand_ellipsis(pattern.left.groups, labels)
    right = _expand_ellipsis(pattern.right.groups, labels)

    lengths: dict[Axis, Any] = {
        axis: axis.size for group in right for axis in group if isinstance(axis, Anonymous)
    }
    lengths.update(axes_lengths)
    for group, size in zip(left, x.shape, strict=True):
        unknown = [axis for axis in group if axis not in lengths]
        known = product([lengths[axis] for axis in group if axis in lengths])
        if len(unknown) > 1:
            return f"cannot infer the sizes of {unknown} from one dim"
        if isinstance(size, int) and isinstance(known, int) and (size % known if unknown else size != known):
            return f"a dim of size {size} does not split into {list(group)} with known product {known}"
        if unknown:
            lengths[unknown[0]] = size if isinstance(known, int) and known == 1 else size // known

    elementary = [axis for group in left for axis in group]
    if any(len(group) != 1 for group in left):
        x = x.reshape([lengths[axis] for axis in elementary])
    right_axes = [axis for group in right for axis in group]
    permutation = [elementary.index(axis) for axis in right_axes if axis in elementary]
    if permutation != list(range(len(permutation))):
        x = x.permute(permutation)
    new_positions = [i for i, axis in enumerate(right_axes) if axis not in elementary]
    if new_positions:
        for position in new_positions:
            x = x.unsqueeze(position)
        x = x.expand([lengths[axis] if i in new_positions else -1 for i, axis in enumerate(right_axes)])
    if any(len(group) != 1 for group in right):
        x = x.reshape([product([lengths[axis] for axis in group]) for group in right])
    return x


def make_stand_in(context: ReplacementContext, target: str, operation: Operation) -> Any:
    def stand_in(tensor: Any, pattern: str, **axes_lengths: Any) -> Any:
        import torch

        if isinstance(tensor, (list, tuple)) and tensor and all(isinstance(t, torch.Tensor) for t in tensor):
            stacked = torch.stack(list(tensor))
        elif isinstance(tensor, torch.Tensor):
            stacked = tensor
        else:
            return context.keep_original(
                target, "input is not a torch tensor", tensor, pattern, **axes_lengths
            )
        parsed = (
            parse_pattern(pattern, operation, axes_lengths)
            if isinstance(pattern, str)
            else "pattern is not a str"
        )
        result = parsed if isinstance(parsed, str) else _lowered(stacked, parsed, axes_lengths)
        if isinstance(result, str):
            context.reject(target, f"{operation} '{pattern}': {result}", tensor, pattern, **axes_lengths)
        return result

    return stand_in


@register_replacement(
    "einops",
    targets=(REARRANGE, REPEAT, LAYER),
    summary="einops rearrange/repeat and the Rearrange layer -> reshape/permute/unsqueeze/expand",
)
def build(context: ReplacementContext) -> ReplacementFunctions:
    rearrange = make_stand_in(context, REARRANGE, "rearrange")
    repeat = make_stand_in(context, REPEAT, "repeat")

    def layer_forward(self: Any, input: torch.Tensor) -> torch.Tensor:
        pattern = parse_pattern(self.pattern, "rearrange", self.axes_lengths)
        result = pattern if isinstance(pattern, str) else _lowered(input, pattern, self.axes_lengths)
        if isinstance(result, str):
            context.reject(LAYER, f"{self!r}: {result}", self, input)
        return result

    return {REARRANGE: rearrange, REPEAT: repeat, LAYER: layer_forward}
