"""Versions of everything that can change a number, recorded with every result."""

from __future__ import annotations

import importlib.metadata
import os
import platform

from trt_harness.harness.gpu import cuda_devices
from trt_harness.models.results.document import Environment, Gpu

_DISTRIBUTIONS = (
    "torch",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnx-graphsurgeon",
    "polygraphy",
    "tensorrt",
    "tensorrt-rtx",
    "numpy",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for dist in _DISTRIBUTIONS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def environment() -> Environment:
    return Environment(
        python=platform.python_version(),
        platform=platform.platform(),
        machine=platform.machine(),
        processor_count=os.cpu_count(),
        gpus=tuple(
            Gpu(d.name, f"{d.compute_capability[0]}.{d.compute_capability[1]}") for d in cuda_devices()
        ),
        packages=package_versions(),
    )
