"""`torch.einsum` -> permute / reshape / MatMul / ReduceSum, for any equation (no ONNX Einsum).

TensorRT 8.x builds Einsum without ellipsis, diagonals or broadcasting and only for FP32/FP16;
MatMul and reductions build everywhere. The lowering is general, not a table of equations:

* operands are contracted pairwise, left to right (torch's order without opt_einsum); each pair
  becomes one batched MatMul: shared labels still needed later are batch dims, shared labels not
  needed are contracted, the rest become the M and N dims;
* labels found in only one operand and not needed later are summed away first;
* a label repeated inside one operand (`ii`, `bii`) takes the diagonal with one Gather;
* size-1 dims broadcast like torch's einsum, including contracted labels (one side is summed);
* implicit output (`ij,jk`): ellipsis dims first, then the labels seen once, in ASCII order;
* the sublist form `einsum(a, [0, 1], b, [1, 2])` and a list of operands are accepted.

Integer and bool operands keep the original op (exact, and TensorRT has no integer MatMul).
Malformed equations go to torch, which raises its own error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trt_harness.conversions.replacements._registry import ReplacementFunctions, register_replacement
from trt_harness.conversions.replacements._sizes import trace_value

if TYPE_CHECKING:
    import torch
    from trt_harness.conversions.replacements._context import ReplacementContext

TARGETS = ("torch.einsum", "torch.functional.einsum")
_ELLIPSIS = "…"  # prefix of the labels that stand for ellipsis dims: "…0", "…1", ...


@dataclass(frozen=True)
class Equation:
    """An einsum equation with the ellipsis expanded into one label per (right-aligned) dim."""

    inputs: tuple[tuple[str, ...], ...]
    output: tuple[str, ...]


def _split_term(term: str) -> tuple[str, str, bool] | str:
    """(labels before '...', labels after, has ellipsis), or why the term is malformed."""
    if "." in term:
        if term.count(".") != 3 or "..." not in term:
            return f"'{term}' has dots outside a single '...'"
        before, _, after = term.partition("...")
        has_ellipsis = True
    else:
        before, after, has_ellipsis = term, "", False
    bad = [c for c in before + after if not (c.isascii() and c.isalpha())]
    if bad:
        return f"'{term}' has invalid subscript(s) {bad}; use letters a-z, A-Z"
    return before, after, has_ellipsis


def parse_equation(equation: str, ndims: Sequence[int]) -> Equation | str:
    """Parse `equation` for operands of ranks `ndims`; a string result says why it is invalid."""
    lhs, arrow, rhs = equation.replace(" ", "").partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ndims):
        return f"{len(terms)} operand subscripts for {len(ndims)} operands"
    parts = []
    for term, ndim in zip(terms, ndims, strict=True):
        split = _split_term(term)
        if isinstance(split, str):
            return split
        before, after, has_ellipsis = split
        n_ellipsis = ndim - len(before) - len(after)
        if n_ellipsis < 0 or (n_ellipsis and not has_ellipsis):
            return f"'{term}' does not match a {ndim}-D operand"
        parts.append((before, after, n_ellipsis))
    width = max((n for _, _, n in parts), default=0)
    inputs = tuple(
        (*before, *(f"{_ELLIPSIS}{width - n + j}" for j in range(n)), *after) for before, after, n in parts
    )
    ellipsis_labels = tuple(f"{_ELLIPSIS}{j}" for j in range(width))
    seen = Counter(label for labels in inputs for label in labels)
    if not arrow:
        once = sorted(
            label for label, count in seen.items() if count == 1 and not label.startswith(_ELLIPSIS)
        )
        return Equation(inputs, (*ellipsis_labels, *once))
    split = _split_term(rhs)
    if isinstance(split, str):
        return split
    before, after, has_ellipsis = split
    output = (*before, *(ellipsis_labels if has_ellipsis else ()), *after)
    if len(set(before + after)) != len(before + after):
        return f"output '{rhs}' repeats a subscript"
    missing = [label for label in before + after if label not in seen]
    if missing:
        return f"output subscript(s) {missing} appear in no operand"
    return Equation(inputs, output)


def _sublist_equation(args: Sequence[Any]) -> tuple[str, list[Any]]:
    """torch's `einsum(op, [0, 1], op, [1, 2], [0, 2])` form, as an equation and its operands."""

    def letters(sublist: Sequence[Any]) -> str:
        return "".join(
            "..." if s is Ellipsis else chr(ord("A") + s) if s < 26 else chr(ord("a") + s - 26)
            for s in sublist
        )

    equation = ",".join(letters(s) for s in args[1::2])
    if len(args) % 2:
        equation += "->" + letters(args[-1])
    return equation, list(args[0:-1:2] if len(args) % 2 else args[::2])


def _is_one(size: Any) -> bool:
    return trace_value(size) == 1


def _diagonals(t: torch.Tensor, labels: list[str]) -> tuple[torch.Tensor, list[str]]:
    """Take the diagonal for every label repeated within one operand (`ii` -> `i`)."""
    import torch

    for label in [label for label, count in Counter(labels).items() if count > 1]:
        dims = [i for i, here in enumerate(labels) if here == label]
        others = [i for i in range(t.dim()) if i not in dims]
        n = t.shape[dims[0]]
        t = t.permute(*others, *dims).flatten(len(others))
        # in the flattened n**r block the diagonal sits at multiples of 1 + n + ... + n**(r-1)
        step: Any = 1
        for _ in range(len(dims) - 1):
            step = step * n + 1
        t = t.index_select(-1, torch.arange(n, device=t.device) * step)
        labels = [labels[i] for i in others] + [label]
    return t, labels


def _sum_out(t: torch.Tensor, labels: list[str], drop: list[str]) -> tuple[torch.Tensor, list[str]]:
    if not drop:
        return t, labels
    return t.sum(dim=[labels.index(label) for label in drop]), [
        label for label in labels if label not in drop
    ]


def _arranged(t: torch.Tensor, labels: list[str], order: list[str]) -> torch.Tensor:
    permutation = [labels.index(label) for label in order]
    return t if permutation == list(range(t.dim())) else t.permute(permutation)


def _merge(t: torch.Tensor, start: int, count: int) -> torch.Tensor:
    """Dims [start, start+count) as one dim (a new size-1 dim when count is 0)."""
    if count == 0:
        return t.unsqueeze(start)
    return t if count == 1 else t.flatten(start, start + count - 1)


def _unmerge(t: torch.Tensor, dim: int, sizes: list[Any]) -> torch.Tensor:
    if not sizes:
        return t.select(dim, 0)
    return t if len(sizes) == 1 else t.unflatten(dim, sizes)


def _contract(
    a: torch.Tensor, a_labels: list[str], b: torch.Tensor, b_labels: list[str], keep: set[str]
) -> tuple[torch.Tensor, list[str]]:
    """One batched MatMul over the labels `a` and `b` share; `keep` = labels needed afterwards."""
    a, a_labels = _sum_out(a, a_labels, [x for x in a_labels if x not in b_labels and x not in keep])
    b, b_labels = _sum_out(b, b_labels, [x for x in b_labels if x not in a_labels and x not in keep])
    shared = [x for x in a_labels if x in b_labels]
    batch = [x for x in shared if x in keep]
    contracted = [x for x in shared if x not in keep]
    a_only = [x for x in a_labels if x not in b_labels]
    b_only = [x for x in b_labels if x not in a_labels]
    for label in contracted:
        # broadcasting a size-1 dim against n and summing is the same as summing the n side first
        a_size, b_size = a.shape[a_labels.index(label)], b.shape[b_labels.index(label)]
        if _is_one(a_size) and not _is_one(b_size):
            b = b.sum(dim=b_labels.index(label), keepdim=True)
        elif _is_one(b_size) and not _is_one(a_size):
            a = a.sum(dim=a_labels.index(label), keepdim=True)
    a = _arranged(a, a_labels, batch + a_only + contracted)
    b = _arranged(b, b_labels, batch + contracted + b_only)
    nb = len(batch)
    a_sizes = list(a.shape[nb : nb + len(a_only)])
    b_sizes = list(b.shape[nb + len(contracted) :])
    a = _merge(_merge(a, nb + len(a_only), len(contracted)), nb, len(a_only))
    b = _merge(_merge(b, nb + len(contracted), len(b_only)), nb, len(contracted))
    result = _unmerge(_unmerge(a @ b, nb + 1, b_sizes), nb, a_sizes)
    return result, batch + a_only + b_only


def lowered_einsum(equation: Equation, operands: Sequence[torch.Tensor]) -> torch.Tensor:
    terms = [_diagonals(t, list(labels)) for t, labels in zip(operands, equation.inputs, strict=True)]
    t, labels = terms[0]
    for i in range(1, len(terms)):
        needed = set(equation.output).union(*(set(later) for _, later in terms[i + 1 :]))
        t, labels = _contract(t, labels, *terms[i], keep=needed)
    t, labels = _sum_out(t, labels, [x for x in labels if x not in equation.output])
    return _arranged(t, labels, list(equation.output))


def _size_conflict(equation: Equation, operands: Sequence[torch.Tensor]) -> str | None:
    sizes: dict[str, int] = {}
    for index, (t, labels) in enumerate(zip(operands, equation.inputs, strict=True)):
        mine: dict[str, int] = {}
        for label, size in zip(labels, t.shape, strict=True):
            value = trace_value(size)
            if mine.setdefault(label, value) != value:
                return (
                    f"subscript {label} is repeated in operand {index} with sizes {mine[label]} and {value}"
                )
            known = sizes.setdefault(label, value)
            if known != value and 1 not in (known, value):
                return f"subscript {label} has sizes {known} and {value}, which do not broadcast"
            sizes[label] = max(known, value) if 1 in (known, value) else value
    return None


@register_replacement(
    "einsum",
    targets=TARGETS,
    summary="torch.einsum (any equation, ellipsis, broadcasting, diagonals) -> MatMul/ReduceSum/Transpose",
)
def build(context: ReplacementContext) -> ReplacementFunctions:
    def make(target: str) -> Any:
        def einsum(*args: Any) -> torch.Tensor:
            import torch

            if not args:
                context.reject(target, "einsum() needs an equation and operands", *args)
            if isinstance(args[0], str):
                equation_text, operands = args[0], list(args[1:])
                if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
                    operands = list(operands[0])
            else:
                equation_text, operands = _sublist_equation(args)
            if not operands or not all(isinstance(t, torch.Tensor) for t in operands):
                context.reject(target, "einsum() needs tensor operands", *args)
            if not all(t.dtype.is_floating_point or t.dtype.is_complex for t in operands):
                return context.keep_original(target, "integer or bool operands", *args)
            parsed = parse_equation(equation_text, [t.dim() for t in operands])
            if isinstance(parsed, str):
                context.reject(target, f"equation '{equation_text}': {parsed}", *args)
            problem = _size_conflict(parsed, operands)
            if problem is None and len({t.dtype for t in operands}) > 1:
                problem = "operands have different dtypes"
            if problem is not None:
                context.reject(target, f"equation '{equation_text}': {problem}", *args)
            return lowered_einsum(parsed, operands)

        return einsum

    return {target: make(target) for target in TARGETS}
