"""Load and save model weights with a strict key and shape check that names everything wrong.

Accepted files: `.pt` / `.pth` (read with `torch.load(weights_only=True)`; a plain state_dict, or a
dict whose 'model' or 'state_dict' entry is one) and `.safetensors`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trt_harness.models.core.artifacts import atomic_path
from trt_harness.models.core.errors import UsageError

if TYPE_CHECKING:
    import torch

TORCH_SUFFIXES = (".pt", ".pth")
SAFETENSORS_SUFFIX = ".safetensors"
_WRAPPER_KEYS = ("model", "state_dict")
_MAX_LISTED = 20  # per category in a mismatch message; the rest are counted


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load `path` into `model`; raise UsageError unless keys and shapes match exactly."""
    path = Path(path)
    state_dict = _read_state_dict(path)
    expected = model.state_dict()
    problems = _mismatches(expected, state_dict)
    if problems:
        raise UsageError(
            f"weights file {path} does not match {type(model).__name__}: "
            + "; ".join(problems)
            + ". Export the state_dict of the same architecture (and number of classes)."
        )
    model.load_state_dict(state_dict, strict=True)


def weighted(
    model: torch.nn.Module, weights: Path | None, seeded_init: Callable[[torch.nn.Module], Any]
) -> torch.nn.Module:
    """`model` with the user's weights file when given, else its seeded deterministic init; in eval mode."""
    if weights is None:
        seeded_init(model)
    else:
        load_weights(model, weights)
    return model.eval()


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Write `model`'s state_dict to `path` (.pt, .pth or .safetensors) atomically."""
    import torch

    path = Path(path)
    suffix = _checked_suffix(path)
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        if suffix == SAFETENSORS_SUFFIX:
            from safetensors.torch import save_file

            save_file(state_dict, str(tmp))
        else:
            torch.save(state_dict, tmp)


def _checked_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (*TORCH_SUFFIXES, SAFETENSORS_SUFFIX):
        accepted = ", ".join((*TORCH_SUFFIXES, SAFETENSORS_SUFFIX))
        raise UsageError(f"weights file {path} has suffix '{path.suffix}'; use one of {accepted}")
    return suffix


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    suffix = _checked_suffix(path)
    if not path.is_file():
        raise UsageError(f"weights file {path} does not exist")
    if suffix == SAFETENSORS_SUFFIX:
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # any reader failure means a bad file, reported in one line
            raise UsageError(
                f"cannot read weights file {path}: not a valid safetensors file ({_one_line(e)})"
            ) from e
    import torch

    try:
        with warnings.catch_warnings():  # torch's own advice (weights_only=False) is not for this file
            warnings.simplefilter("ignore")
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any reader failure means a bad file, reported in one line
        raise UsageError(f"cannot read weights file {path}: {_torch_load_reason(e)}") from e
    return _unwrap(content, path)


def _unwrap(content: Any, path: Path) -> Mapping[str, torch.Tensor]:
    import torch

    if isinstance(content, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(content.get(key), Mapping):
                content = content[key]
                break
        if content and all(isinstance(v, torch.Tensor) for v in content.values()):
            return content
    raise UsageError(
        f"weights file {path} holds a {type(content).__name__}, not a state_dict (a mapping of names to "
        f"tensors, optionally under a 'model' or 'state_dict' key); save `model.state_dict()` instead"
    )


def _mismatches(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> list[str]:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    misshaped = [
        f"{k}: expected {tuple(v.shape)} vs file {tuple(found[k].shape)}"
        for k, v in expected.items()
        if k in found and tuple(found[k].shape) != tuple(v.shape)
    ]
    # a cast across kinds loses values silently: integers load as all-zero float weights (when
    # rounded), complex numbers drop their imaginary part
    lossy = [
        f"{k}: file {found[k].dtype} vs model {v.dtype}"
        for k, v in expected.items()
        if k in found and _kind(found[k]) != _kind(v)
    ]
    return [
        f"{label} ({len(items)}): {_listed(items)}"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("mis-shaped keys", misshaped),
            ("keys of a dtype that cannot be cast without loss", lossy),
        )
        if items
    ]


def _kind(tensor: torch.Tensor) -> str:
    if tensor.is_complex():
        return "complex"
    if tensor.is_floating_point():
        return "float"
    return "bool" if str(tensor.dtype) == "torch.bool" else "integer"


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown if len(items) <= _MAX_LISTED else f"{shown}, ... and {len(items) - _MAX_LISTED} more"


def _one_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else 'no details'}"


def _torch_load_reason(error: Exception) -> str:
    text = str(error)
    # weights_only=True refuses pickled objects, e.g. a full Ultralytics checkpoint holding the module
    pickled = re.search(r"Unsupported global: GLOBAL (\S+)", text) or re.search(
        r"unsupported GLOBAL (\S+) whose module \S+ is blocked", text
    )
    if pickled:
        return (
            f"it pickles a {pickled[1]} object, not only tensors; re-save just the weights, e.g. "
            "torch.save(ckpt['model'].float().state_dict(), 'weights.pt')"
        )
    unpickler = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", text, re.DOTALL)
    detail = f"UnpicklingError: {unpickler[1]}" if unpickler else _one_line(error)
    return f"not a valid torch.save file ({detail})"
