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
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class TensorRTFlavor:
    module_name: str  # "tensorrt" or "tensorrt_rtx"
    display_name: str  # "TensorRT" or "TensorRT for RTX"
    version: str

    @property
    def slug(self) -> str:
        """Short tag used in engine file names, e.g. 'trt-10.13.0.35' or 'trtrtx-1.7.1.116'."""
        return f"{'trtrtx' if self.is_rtx else 'trt'}-{self.version}"

    @property
    def is_rtx(self) -> bool:
        return self.module_name == "tensorrt_rtx"

    @property
    def strongly_typed(self) -> bool:
        """Precision comes from the model (FP16 tensors, Q/DQ nodes), not from builder flags:
        TensorRT for RTX, and TensorRT from 11 on."""
        return self.is_rtx or int(self.version.split(".")[0]) >= 11

    def module(self) -> ModuleType:
        return importlib.import_module(self.module_name)

    def to_json(self) -> dict[str, str]:
        return {"module": self.module_name, "name": self.display_name, "version": self.version}


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
