"""INT8 variant of an ONNX model as explicit Q/DQ nodes, for strongly typed TensorRT (no INT8 flag any more).

ONNX Runtime's static quantizer places the Q/DQ pairs, calibrated on the given feeds. The settings
follow TensorRT's explicit-quantization rules rather than ORT's CPU defaults:
- symmetric signed INT8 (zero point 0) for activations and weights: TensorRT supports nothing else;
- per-channel weight scales (output channel);
- only the inputs of weighted ops (Conv, ConvTranspose, Gemm, MatMul) are quantized, not their outputs
  and not elementwise/data-movement ops: TensorRT fuses the Q/DQ around them itself, and a Q/DQ on
  e.g. a detector's final Concat of pixel boxes and 0..1 scores would share one scale and zero every score;
- biases stay float (TensorRT folds them into the kernel; INT32 bias Q/DQ is an ORT CPU concern).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from trt_harness.conversions.onnx_files import op_counts
from trt_harness.conversions.precision.model_file import load_model, require_nodes, save_checked
from trt_harness.models.core.errors import HarnessError, UsageError
from trt_harness.models.results.stages import PrecisionVariant

_LIBRARY = "onnxruntime.quantization"
QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Percentile clips the rarest 0.001% of |x|; MinMax takes the extremes, so its scale coarsens as the
# calibration set grows and meets outliers. (ORT's Entropy is not offered: quantize_static cannot pass it
# a bin count, and with its default 128 bins for 128 quantized bins it can only return the MinMax range.)
CalibrationMethod = Literal["percentile", "minmax"]
PERCENTILE = 99.999


def int8_qdq_onnx(
    src: Path,
    dst: Path,
    calibration_feeds: Sequence[dict[str, np.ndarray]],
    *,
    exclude_nodes: Sequence[str] = (),
    method: CalibrationMethod = "percentile",
    calibration_cache: Path | None = None,
) -> PrecisionVariant:
    """Write a Q/DQ INT8 copy of `src` to `dst`, calibrated on `calibration_feeds`.

    Nodes named in `exclude_nodes` stay unquantized. The same inputs give a byte-identical file.
    `calibration_cache`: a JSON file of the tensor ranges; written by the first call, read (no
    calibration run) by later ones. The ranges depend on `src`, the feeds and `method` only, not on
    `exclude_nodes`, so one cache serves every exclusion set of one model and feed set.
    """
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod as OrtMethod
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    methods = {"percentile": OrtMethod.Percentile, "minmax": OrtMethod.MinMax}
    if method not in methods:
        raise UsageError(f"unknown INT8 calibration method '{method}'; use one of {', '.join(methods)}")
    src, dst = Path(src), Path(dst)
    if not calibration_feeds:
        raise UsageError(
            f"INT8 calibration of {src} needs at least one feed; pass the recipe's sample inputs"
        )
    model = load_model(src)
    excluded = require_nodes(
        model, exclude_nodes, src, "int8_exclude_nodes", "`harness localize` of a failing INT8 run"
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    root_log = logging.getLogger()
    level = root_log.level
    # quantize_static advises pre-processing through the root logger and the calibrators print progress
    root_log.setLevel(logging.ERROR)
    try:
        with (
            tempfile.TemporaryDirectory(prefix=".int8-", dir=dst.parent) as workdir,
            contextlib.redirect_stdout(io.StringIO()),
        ):
            staged = Path(workdir) / dst.name
            quantize_static(
                model,
                staged,
                _FeedReader(calibration_feeds),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OPS),
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(excluded),
                calibrate_method=methods[method],
                **_cache_option(quantize_static, calibration_cache),
                extra_options={
                    "ActivationSymmetric": True,
                    "WeightSymmetric": True,
                    "CalibTensorRangeSymmetric": True,
                    "CalibPercentile": PERCENTILE,
                    "QuantizeBias": False,
                    "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
                },
            )
            quantized = onnx.load(staged)
    except Exception as e:  # quantize_static raises ValueError/RuntimeError/ORT errors alike
        raise HarnessError(f"INT8 quantization of {src} failed in {_LIBRARY}: {e}") from e
    finally:
        root_log.setLevel(level)
    save_checked(quantized, dst, "INT8 Q/DQ")
    calibration = f"percentile {PERCENTILE}" if method == "percentile" else method
    return PrecisionVariant(
        precision="int8",
        path=Path(dst).name,
        library=_LIBRARY,
        library_version=f"onnxruntime {onnxruntime.__version__}",
        block_list=excluded,
        op_counts=op_counts(quantized),
        notes=(
            f"calibration: {calibration} of |x| over {len(calibration_feeds)} feed(s)",
            f"quantized inputs of {', '.join(QUANTIZED_OPS)}; symmetric INT8, per-channel weights, float bias",
        ),
    )


def _cache_option(quantize_static: Any, cache: Path | None) -> dict[str, Any]:
    # onnxruntime < 1.32 has no calibration cache: it then calibrates on every call, the same ranges
    if cache is None or "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        return {}
    return {"calibration_cache_path": str(cache)}


class _FeedReader:
    """The calibration feeds as an ORT CalibrationDataReader (which accepts any class with `get_next`)."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._feeds = feeds
        self._next: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._next, None)

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next = iter(self._feeds[start_index:end_index])
