"""Precision variants of an ONNX model for strongly typed TensorRT, where precision lives in the model.

TensorRT 11 and TensorRT for RTX dropped the FP16/INT8 builder flags: an FP16 engine comes from an
ONNX model whose tensors are FP16 (`fp16_onnx`), an INT8 engine from one with explicit Q/DQ nodes
(`int8_qdq_onnx`). `fp16_range_check` finds the tensors FP16 cannot hold and suggests the nodes to
keep in FP32. One module per variant; what each returns is a value of the results contract.
"""

from __future__ import annotations

from trt_harness.conversions.precision.fp16 import fp16_onnx
from trt_harness.conversions.precision.int8 import int8_qdq_onnx
from trt_harness.conversions.precision.range_check import fp16_range_check

__all__ = [
    "fp16_onnx",
    "fp16_range_check",
    "int8_qdq_onnx",
]
