"""Which tensors of an FP32 model do not fit FP16: overflow past 65504, or heavy underflow.

The FP32 model runs on ONNX Runtime with every float tensor of the top-level graph exposed as an
output; per tensor, the largest |x| and the share of nonzero values that FP16 holds only as subnormals
(|x| < 2**-14) or cannot hold at all (|x| < 2**-24) are recorded over all feeds. Initializers are
checked too (the FP16 converter would clamp them).

A flagged tensor must stay FP32 end to end: its producer computes in FP32, and its consumers read it
in FP32, since a block-listed producer alone still hands an FP16 copy to the next node, which
overflows the same way. The suggested block list therefore holds both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from trt_harness.conversions.precision.model_file import load_model
from trt_harness.models.core.errors import HarnessError, UsageError
from trt_harness.models.results.stages import Fp16Thresholds, RangeReport, TensorRange

FP16_MAX = float(np.finfo(np.float16).max)  # 65504
FP16_MIN_NORMAL = 2.0**-14  # 6.104e-05: below this FP16 keeps fewer than 10 significant bits
FP16_MIN_SUBNORMAL = 2.0**-24  # 5.96e-08: below this FP16 rounds to 0 (or up to this value)
# A tensor with more than this share of its nonzero values below FP16_MIN_NORMAL is flagged: a few
# tiny values (a sigmoid's tail) lose nothing that matters, but when a tenth of a tensor has only
# a few significant bits left, anything that later divides by it or normalizes it is wrong.
DEFAULT_UNDERFLOW_FRACTION = 0.10


@dataclass
class _Tally:
    elements: int = 0
    nonzero: int = 0
    below_min_normal: int = 0
    below_min_subnormal: int = 0
    nonfinite: int = 0
    max_abs: float = 0.0

    def add(self, values: np.ndarray) -> None:
        magnitude = np.abs(values, dtype=np.float32).ravel()
        finite = np.isfinite(magnitude)
        self.nonfinite += int(magnitude.size - np.count_nonzero(finite))
        magnitude = magnitude[finite]
        self.elements += int(values.size)
        if magnitude.size:
            self.max_abs = max(self.max_abs, float(magnitude.max()))
        nonzero = magnitude[magnitude > 0]
        self.nonzero += int(nonzero.size)
        self.below_min_normal += int(np.count_nonzero(nonzero < FP16_MIN_NORMAL))
        self.below_min_subnormal += int(np.count_nonzero(nonzero < FP16_MIN_SUBNORMAL))


def fp16_range_check(
    src: Path,
    feeds: Sequence[dict[str, np.ndarray]],
    *,
    underflow_fraction: float = DEFAULT_UNDERFLOW_FRACTION,
    top_n: int = 10,
) -> RangeReport:
    """Run the FP32 model on `feeds` and report the tensors FP16 cannot hold, with a block list."""
    if not feeds:
        raise UsageError(
            f"fp16_range_check of {src} needs at least one feed; pass the recipe's sample inputs"
        )
    if not 0.0 < underflow_fraction <= 1.0:
        raise UsageError(f"underflow_fraction must be in (0, 1], got {underflow_fraction}")
    model = load_model(Path(src))
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output if out}
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in dict.fromkeys(node.input):
            if name and node.name:
                consumers.setdefault(name, []).append(node.name)

    tallies: dict[str, _Tally] = {}
    initializer_names = {init.name for init in graph.initializer}
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            tallies.setdefault(init.name, _Tally()).add(numpy_helper.to_array(init))

    probed = _probe_outputs(model, initializer_names)
    session = _session(probed, Path(src))
    names = [output.name for output in session.get_outputs()]
    for index, feed in enumerate(feeds):
        try:
            values = session.run(names, feed)
        except Exception as e:  # ORT raises its own untyped exceptions for every run failure
            raise HarnessError(
                f"ONNX Runtime fails on feed #{index} of the FP16 range check of {src}: {e}"
            ) from e
        # graph inputs are checked from the feeds: FP16 casts them on the way in
        for name, value in {**feed, **dict(zip(names, values, strict=True))}.items():
            if isinstance(value, np.ndarray) and value.dtype == np.float32:
                tallies.setdefault(name, _Tally()).add(value)

    ranges = []
    for name, tally in tallies.items():
        producer = producers.get(name)
        flags = []
        if tally.max_abs > FP16_MAX:
            flags.append("overflow")
        if tally.nonzero and tally.below_min_normal / tally.nonzero > underflow_fraction:
            flags.append("underflow")
        ranges.append(
            TensorRange(
                name=name,
                producer=producer.name if producer is not None else None,
                op_type=producer.op_type if producer is not None else None,
                consumers=tuple(consumers.get(name, ())),
                max_abs=tally.max_abs,
                elements=tally.elements,
                nonzero=tally.nonzero,
                below_min_normal=tally.below_min_normal,
                below_min_subnormal=tally.below_min_subnormal,
                nonfinite=tally.nonfinite,
                flags=tuple(flags),
            )
        )
    flagged = tuple(r for r in ranges if r.flags)
    blocked = {r.producer for r in flagged if r.producer} | {c for r in flagged for c in r.consumers}
    return RangeReport(
        model=Path(src).name,
        feeds=len(feeds),
        tensors_checked=len(ranges),
        thresholds=Fp16Thresholds(FP16_MAX, FP16_MIN_NORMAL, FP16_MIN_SUBNORMAL, underflow_fraction),
        flagged=flagged,
        top=tuple(sorted(ranges, key=lambda r: (-r.max_abs, r.name))[:top_n]),
        block_list=tuple(node.name for node in graph.node if node.name in blocked),
    )


def _probe_outputs(model: onnx.ModelProto, initializer_names: set[str]) -> onnx.ModelProto:
    """A copy of `model` whose outputs also include every FP32 tensor computed by a top-level node."""
    try:
        probed = onnx.shape_inference.infer_shapes(model)
    except Exception as e:  # onnx raises several error types for a model it cannot read
        raise HarnessError(
            f"ONNX shape inference fails on the model, so its tensors cannot be typed: {e}"
        ) from e
    known = {vi.name: vi for vi in [*probed.graph.value_info, *probed.graph.output, *probed.graph.input]}
    exposed = {output.name for output in probed.graph.output}
    for node in probed.graph.node:
        for name in node.output:
            if not name or name in exposed or name in initializer_names:
                continue
            info = known.get(name)
            if info is not None and info.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
                continue
            # an untyped tensor is exposed anyway (ORT types it); non-float results are skipped later
            probed.graph.output.append(info if info is not None else onnx.ValueInfoProto(name=name))
            exposed.add(name)
    return probed


def _session(model: onnx.ModelProto, src: Path):  # -> onnxruntime.InferenceSession
    import onnxruntime as ort

    options = ort.SessionOptions()
    # ORT's rewrites would change nothing observable here (every tensor is an output), so skip them
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own untyped exceptions for every load failure
        raise HarnessError(f"ONNX Runtime cannot load {src} for the FP16 range check: {e}") from e
