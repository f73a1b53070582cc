"""Which TensorRT is installed: full TensorRT (`tensorrt`) or TensorRT for RTX (`tensorrt_rtx`).

One TensorRT leg serves both. Polygraphy picks its module when `polygraphy.backend.trt` is first
imported, from POLYGRAPHY_USE_TENSORRT_RTX, so `select_flavor()` must run before that import.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys

from trt_harness.models.results.stages import TensorRTFlavor


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@functools.cache
def select_flavor() -> TensorRTFlavor | None:
    """The installed TensorRT flavor (full TensorRT preferred), or None if neither is installed."""
    for module_name, display in (("tensorrt", "TensorRT"), ("tensorrt_rtx", "TensorRT for RTX")):
        if not _importable(module_name):
            continue
        try:
            module = importlib.import_module(module_name)
        except (ImportError, OSError):
            # e.g. the `tensorrt` download stub, or libraries that don't load on this machine
            continue
        if module_name == "tensorrt_rtx":
            if "polygraphy.backend.trt" in sys.modules and not _polygraphy_uses_rtx():
                raise RuntimeError(
                    "polygraphy.backend.trt was imported before the TensorRT flavor was selected; "
                    "call conversions.tensorrt_flavor.select_flavor() first"
                )
            os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1"
            if "polygraphy.config" in sys.modules:
                sys.modules["polygraphy.config"].USE_TENSORRT_RTX = True
        return TensorRTFlavor(module_name, display, module.__version__)
    return None


def _polygraphy_uses_rtx() -> bool:
    return bool(getattr(sys.modules.get("polygraphy.config"), "USE_TENSORRT_RTX", False))
