"""What CUDA GPUs this machine has: the driver query lives in `conversions.cuda_driver`, below the engine
build that needs it too (full TensorRT builds for the GPU present); the harness layer uses it from here."""

from __future__ import annotations

from trt_harness.conversions.cuda_driver import CudaDevice, cuda_devices

__all__ = ["CudaDevice", "cuda_devices"]
