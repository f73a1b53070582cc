"""What CUDA GPUs this machine has, asked of the driver directly (no torch: works with a CPU-only torch, or
none, as on a target device that verifies a bundle)."""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class CudaDevice:
    index: int
    name: str
    compute_capability: tuple[int, int]

    @property
    def sm_tag(self) -> str:
        return f"sm{self.compute_capability[0]}{self.compute_capability[1]}"


@functools.cache
def cuda_devices() -> tuple[CudaDevice, ...]:
    """Devices visible through libcuda; empty when there is no driver or no GPU."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return ()
    if cuda.cuInit(0) != 0:
        return ()
    count = ctypes.c_int()
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return ()
    devices = []
    for index in range(count.value):
        handle = ctypes.c_int()
        if cuda.cuDeviceGet(ctypes.byref(handle), index) != 0:
            continue
        name = ctypes.create_string_buffer(256)
        cuda.cuDeviceGetName(name, 256, handle)
        major, minor = ctypes.c_int(), ctypes.c_int()
        # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76
        cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, handle)
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, handle)
        devices.append(CudaDevice(index, name.value.decode(errors="replace"), (major.value, minor.value)))
    return tuple(devices)
