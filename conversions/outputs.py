"""A model's outputs as every stage names them, and the recipe's declared contract for them.

Flattening: a model may return a tensor, or lists, tuples and dicts of them nested to any depth (a
detector's `[{boxes, scores}, ...]`). Both torch.onnx exporters flatten such a value with
`torch.utils._pytree` (dicts in insertion order), and the ONNX graph's outputs are those leaves in
that order; the Torch backend flattens with the same function, so position i is the same tensor on
every backend. A leaf's derived name is its key path joined by dots (`0.boxes`, `1.scores`; a single
tensor is `output`), used when the recipe names no outputs.

Naming against the recipe: when the derived names are the recipe's names (in any order), or their
last keys are (each once: `0.boxes` is `boxes` for a one-image list of dicts), the Torch side keeps
those, its true names, so a recipe listing them in another order than the model returns
them shows up as an ordering mismatch (the export labels by position); otherwise the leaves are
labelled by position with the recipe's names.

The contract: a recipe may declare each output's shape (dynamic dims by name, shared with the
inputs' dims) and dtype, as it does for inputs. `check_outputs` matches what a stage or backend
produced against it: an output carrying the shape or dtype declared for another output is an
ordering mismatch (returned as findings, exit 3 naming both); any other violation is an error
naming the output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trt_harness.models.core.errors import HarnessError
from trt_harness.models.recipe import Recipe, TensorSpec

SINGLE_OUTPUT = "output"  # the derived name of a model that returns one tensor

# a dimension as a stage knows it: an int, a symbolic name from a file (any size), or None (unknown)
KnownDim = int | str | None


def flatten_outputs(out: Any) -> list[tuple[str, Any]]:
    """(derived name, tensor) for every tensor leaf of `out`, in the exporter's (pytree) order."""
    # torch only where a model's outputs are flattened (the export and the Torch backend)
    import torch
    import torch.utils._pytree as pytree

    leaves, _ = pytree.tree_flatten_with_path(out)
    named = []
    for path, leaf in leaves:
        if not isinstance(leaf, torch.Tensor):
            continue  # the exporters drop non-tensor leaves (None, ints) from the graph's outputs
        parts = [str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key)))) for key in path]
        named.append((".".join(parts) or SINGLE_OUTPUT, leaf))
    return named


def _last_key(name: str) -> str:
    return name.rpartition(".")[2]


def name_outputs(out: Any, output_names: Sequence[str]) -> dict[str, Any]:
    """The model's outputs keyed by name (see the module doc for which names)."""
    leaves = flatten_outputs(out)
    derived = [name for name, _ in leaves]
    if not output_names or sorted(derived) == sorted(output_names):
        return dict(leaves)
    last_keys = [_last_key(name) for name in derived]
    if len(set(last_keys)) == len(last_keys) and sorted(last_keys) == sorted(output_names):
        # the keys of one dict nested in a list (a one-image detector's [{boxes, scores, labels}])
        return {key: value for key, (_, value) in zip(last_keys, leaves, strict=True)}
    if len(leaves) != len(output_names):
        raise HarnessError(
            f"the model returned {len(leaves)} outputs ({', '.join(derived)}) but the recipe names "
            f"{len(output_names)}: {list(output_names)}; list one name per tensor, in the order the model "
            "returns them (nested lists and dicts flattened depth first), or leave output_names empty"
        )
    return dict(zip(output_names, (value for _, value in leaves), strict=True))


def derived_output_names(out: Any) -> tuple[str, ...]:
    return tuple(name for name, _ in flatten_outputs(out))


# --- the declared contract -------------------------------------------------------------------------


@dataclass(frozen=True)
class Produced:
    """One output as a stage or backend produced it: shape (dims it cannot know as None/str) and dtype."""

    shape: tuple[KnownDim, ...]
    dtype: str | None  # None: unknown (not checked)


def _spec_text(spec: TensorSpec) -> str:
    return f"{spec.dtype}({', '.join(map(str, spec.shape))})"


def _produced_text(produced: Produced) -> str:
    dims = ", ".join("?" if d is None else str(d) for d in produced.shape)
    return f"{produced.dtype or '?'}({dims})"


def _fits(spec: TensorSpec, produced: Produced, bound: Mapping[str, int]) -> dict[str, int] | None:
    """The dims `produced` binds if it fits `spec` given the dims bound so far; None if it does not fit."""
    if len(spec.shape) != len(produced.shape):
        return None
    if produced.dtype is not None and produced.dtype != spec.dtype:
        return None
    binds: dict[str, int] = {}
    for declared, actual in zip(spec.shape, produced.shape, strict=True):
        if not isinstance(actual, int):
            continue  # a dim the producer does not know (a symbolic ONNX dim, -1 in an engine) fits
        if isinstance(declared, int):
            if declared != actual:
                return None
            continue
        size = binds.get(declared, bound.get(declared))
        if size is not None and size != actual:
            return None
        binds[declared] = actual
    return binds


def input_dims(inputs: Sequence[TensorSpec], feed: Mapping[str, Any] | None) -> dict[str, int]:
    """The sizes of the named dims in one feed (e.g. batch=2, seq=7); {} without a feed."""
    sizes: dict[str, int] = {}
    for spec in inputs:
        if feed is None or spec.name not in feed:
            continue
        for axis, dim in spec.dynamic_axes.items():
            sizes.setdefault(dim, int(feed[spec.name].shape[axis]))
    return sizes


def check_outputs(
    recipe: Recipe,
    produced: Mapping[str, Produced],
    where: str,
    feed: Mapping[str, Any] | None = None,
) -> tuple[str, ...]:
    """Check `produced` (name -> what `where` produced under that name) against the recipe's declared
    outputs. Returns the ordering findings; raises for any other violation. Undeclared outputs pass."""
    declared: dict[str, TensorSpec] = recipe.declared_outputs
    if not declared:
        return ()
    bound = input_dims(recipe.inputs, feed)
    wrong: list[str] = []
    for name, out in produced.items():
        spec = declared.get(name)
        if spec is None:
            continue
        binds = _fits(spec, out, bound)
        if binds is None:
            wrong.append(name)
        else:
            bound.update(binds)
    findings = []
    for name in wrong:
        out = produced[name]
        # another declared output this one fits: it carries that output's values, by its shape
        others = [
            other for other, spec in declared.items() if other != name and _fits(spec, out, bound) is not None
        ]
        if not others:
            raise HarnessError(
                f"{where} output '{name}' is {_produced_text(out)}, the recipe declares "
                f"{_spec_text(declared[name])}; fix the model or the recipe's declared outputs"
            )
        findings.append(
            f"ordering mismatch: {where} '{name}' has the shape declared for '{others[0]}' "
            f"({_produced_text(out)}; '{name}' is declared {_spec_text(declared[name])}, "
            f"'{others[0]}' {_spec_text(declared[others[0]])})"
        )
    return tuple(findings)


def produced_from_arrays(
    arrays: Mapping[str, Any], dtypes: Mapping[str, str] | None = None
) -> dict[str, Produced]:
    """What a backend returned, as `Produced` (its own dtype names win, e.g. Torch's before conversion)."""
    return {
        name: Produced(tuple(int(d) for d in value.shape), (dtypes or {}).get(name, str(value.dtype)))
        for name, value in arrays.items()
    }
