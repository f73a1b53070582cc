"""Where in the model a replaced op was called: the first stack frame that is model code."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import FrameType

_CONVERSIONS_DIR = str(Path(__file__).resolve().parents[1]) + os.sep


def _package_dir(module_name: str) -> str | None:
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    return os.path.dirname(os.path.realpath(file)) + os.sep if file else None


def _library_dirs() -> tuple[str, ...]:
    # frames of these are plumbing between the model and the replaced op (nn.Module.__call__,
    # torch's function dispatch, einops layers, this package), never the place a user would edit
    dirs = [_CONVERSIONS_DIR]
    dirs.extend(d for d in (_package_dir("torch"), _package_dir("einops")) if d)
    return tuple(dirs)


def torch_internal_caller(frame: FrameType) -> bool:
    """True for torch's own machinery (decompositions, exporters), False for torch.nn and user code.

    torch.nn counts as model code: nn.Upsample calls F.interpolate on the model's behalf.
    """
    torch_dir = _package_dir("torch")
    if torch_dir is None:
        return False
    path = os.path.realpath(frame.f_code.co_filename)
    return path.startswith(torch_dir) and not path.startswith(os.path.join(torch_dir, "nn") + os.sep)


def describe_frame(frame: FrameType) -> str:
    path = os.path.realpath(frame.f_code.co_filename)
    try:
        shown = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        shown = path
    if shown.startswith(".."):
        shown = path
    return f"{shown}:{frame.f_lineno} in {frame.f_code.co_name}"


def call_site() -> str:
    """`file:line in function` of the innermost frame outside conversions/, torch and einops."""
    skipped = _library_dirs()
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        path = os.path.realpath(frame.f_code.co_filename)
        if not path.startswith(skipped):
            return describe_frame(frame)
        frame = frame.f_back
    return "<unknown location>"
