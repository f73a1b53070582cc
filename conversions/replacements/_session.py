"""Replacements in force for one export: patch the targets, record each rewritten call, restore everything."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from trt_harness.conversions.replacements._callsite import torch_internal_caller
from trt_harness.conversions.replacements._context import (
    AppliedReplacements,
    ReplacementContext,
    ReplacementUnsupported,
)
from trt_harness.conversions.replacements._patching import Patcher, resolve
from trt_harness.conversions.replacements._registry import get_replacement
from trt_harness.models.core.errors import HarnessError, UsageError


def _stand_in(
    context: ReplacementContext, original: Callable[..., Any], function: Callable[..., Any]
) -> Callable[..., Any]:
    def stand_in(*args: Any, **kwargs: Any) -> Any:
        if torch_internal_caller(sys._getframe(1)):
            return original(*args, **kwargs)
        handed_back = context.session.handed_back
        result = function(*args, **kwargs)
        if context.session.handed_back == handed_back:
            context.session.record(context.name, "replaced")
        return result

    # name and docstring only: a __wrapped__ would let unwrapping code reach the original
    stand_in.__name__ = getattr(original, "__name__", stand_in.__name__)
    stand_in.__doc__ = getattr(original, "__doc__", None)
    return stand_in


def _checked_static_dims(static_dims: Mapping[str, Mapping[int, int]] | None) -> dict[str, dict[int, int]]:
    checked: dict[str, dict[int, int]] = {}
    for name, axes in (static_dims or {}).items():
        if not isinstance(name, str) or not isinstance(axes, Mapping):
            raise UsageError(f"static_dims must map input names to {{axis: size}}, got {name!r}: {axes!r}")
        for axis, size in axes.items():
            valid = all(isinstance(v, int) and not isinstance(v, bool) for v in (axis, size))
            if not valid or axis < 0 or size < 1:
                raise UsageError(
                    f"static_dims['{name}'] must map axis (int >= 0) to size (int >= 1), got {axis!r}: {size!r}"
                )
        checked[name] = dict(axes)
    return checked


@contextlib.contextmanager
def applied(
    names: Sequence[str], static_dims: Mapping[str, Mapping[int, int]] | None = None
) -> Iterator[AppliedReplacements]:
    """Swap in the named replacements for the duration of the block; restore all originals afterwards.

    Patched: each replacement's targets (e.g. `torch.nn.functional.pad`, `torch.Tensor.squeeze`) and
    every module-level alias of them outside torch/onnx (what `from einops import rearrange` or
    `from torch.nn.functional import grid_sample` bound at import time). Calls from torch's own
    internals (not torch.nn) still reach the original op. The originals come back when the block
    ends, also on error. If a replacement refused a call and the exporter wrapped that error in its
    own, the replacement's error is raised instead, so its message reaches the user.

    `static_dims` (input name -> axis -> size) is validated and recorded in the result; the
    replacements read sizes from the traced tensors themselves.
    """
    if isinstance(names, str):
        raise UsageError(f"replacements must be a list of names, got the string {names!r}")
    replacements = [get_replacement(name) for name in dict.fromkeys(names)]
    session = AppliedReplacements(tuple(r.name for r in replacements), _checked_static_dims(static_dims))
    patcher = Patcher()
    try:
        for replacement in replacements:
            found = {target: resolve(target) for target in replacement.targets}
            session.unavailable_targets.extend(t for t, place in found.items() if place is None)
            places = {t: place for t, place in found.items() if place is not None}
            originals = {t: getattr(owner, attribute) for t, (owner, attribute) in places.items()}
            context = ReplacementContext(replacement.name, originals, session)
            functions = replacement.build(context)
            for target, (owner, attribute) in places.items():
                patcher.swap(owner, attribute, _stand_in(context, originals[target], functions[target]))
        patcher.swap_aliases()
        yield session
    except HarnessError:
        raise
    except Exception as error:
        if session.errors:
            # a fresh error: re-raising the recorded one would close a cycle in the __cause__ chain
            raise ReplacementUnsupported(str(session.errors[0])) from error
        raise
    else:
        if session.errors:
            # the exporter caught the refusal and retried another way (torch.export's strict mode
            # does not see Python-level patches), so whatever it produced still has the original op
            raise ReplacementUnsupported(str(session.errors[0]))
    finally:
        patcher.restore()
