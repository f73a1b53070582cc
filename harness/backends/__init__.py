"""Backends that run a recipe's samples and return outputs keyed by name. One module each.

Importing this package registers every backend module in it (see `base.register_backend`).
"""

from __future__ import annotations

import importlib
import pkgutil

from harness.backends.base import Backend, BackendContext, backend_names, get_backend

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Backend", "BackendContext", "backend_names", "get_backend"]
