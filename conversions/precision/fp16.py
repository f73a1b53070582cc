"""FP16 variant of an ONNX model, for strongly typed TensorRT (no FP16 builder flag any more).

The rewrite is ONNX Runtime's maintained converter, `onnxruntime.transformers.float16`.
onnxconverter-common's `float16` (1.16) was tried first and rejected: it leaves `Cast(to=FLOAT)` nodes
of the source model unchanged while marking their outputs FP16, so TorchScript exports with such casts
(YOLO's grid decode) fail to load (microsoft/onnxconverter-common#320, fix still unmerged), and it
clamps weights to +-1e4 by default.

Two fixes follow the converter, both about block-listed nodes:
- it appends its Cast nodes at the end of the graph; TensorRT's parser needs topological order;
- between two block-listed nodes it leaves FP32 -> FP16 -> FP32 casts, which would still overflow;
  those round trips are removed, so a block-listed chain stays FP32 throughout.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs
from trt_harness.conversions.onnx_files import op_counts
from trt_harness.conversions.onnx_passes.graph_edit import replace_uses
from trt_harness.conversions.precision.model_file import load_model, require_nodes, save_checked
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.results.stages import PrecisionVariant

_LIBRARY = "onnxruntime.transformers.float16"


def fp16_onnx(
    src: Path, dst: Path, *, block_list: Sequence[str] = (), keep_io_types: bool = True
) -> PrecisionVariant:
    """Write an FP16 copy of `src` to `dst`; nodes named in `block_list` stay FP32.

    With `keep_io_types` the graph inputs and outputs stay FP32 (a Cast follows each input and precedes
    each output), so callers feed and compare FP32 arrays as for the source model.
    """
    import onnxruntime
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    src, dst = Path(src), Path(dst)
    model = load_model(src)
    blocked = require_nodes(
        model, block_list, src, "the FP16 block list", "fp16_range_check or `harness localize`"
    )
    source_names = {node.name for node in model.graph.node}
    converter_log = logging.getLogger("onnxruntime.transformers.float16")
    level = converter_log.level
    converter_log.setLevel(logging.ERROR)  # it logs every shared initializer at INFO/WARNING
    try:
        converted = convert_float_to_float16(
            model,
            keep_io_types=keep_io_types,
            node_block_list=list(blocked),
            # ops ONNX defines without FP16 (Range, CumSum, ...) or that ORT lacks FP16 kernels for
            op_block_list=DEFAULT_OP_BLOCK_LIST,
        )
    except Exception as e:  # the converter raises AssertionError/ValueError/onnx errors alike
        raise HarnessError(f"FP16 conversion of {src} failed in {_LIBRARY}: {e}") from e
    finally:
        converter_log.setLevel(level)
    added_casts = {node.name for node in converted.graph.node} - source_names
    converted, removed = _tidy(converted, added_casts)
    save_checked(converted, dst, "FP16")

    notes = []
    if blocked:
        notes.append(f"{len(blocked)} node(s) kept in FP32 by the block list")
    if removed:
        notes.append(f"removed {removed} FP32->FP16->FP32 cast round trip(s) between FP32 nodes")
    default_blocked = sorted({n.op_type for n in model.graph.node if n.op_type in DEFAULT_OP_BLOCK_LIST})
    if default_blocked:
        notes.append(f"op types the converter never makes FP16 (no FP16 form): {', '.join(default_blocked)}")
    return PrecisionVariant(
        precision="fp16",
        path=Path(dst).name,
        library=_LIBRARY,
        library_version=f"onnxruntime {onnxruntime.__version__}",
        block_list=blocked,
        op_counts=op_counts(converted),
        notes=tuple(notes),
    )


def _tidy(model: onnx.ModelProto, added_casts: set[str]) -> tuple[onnx.ModelProto, int]:
    """Drop the converter's FP32->FP16->FP32 cast round trips and put the nodes in topological order."""
    graph = gs.import_onnx(model)
    bypassed: dict[str, gs.Tensor] = {}  # FP16 tensor name -> the FP32 tensor now read instead
    for to_fp32 in [n for n in graph.nodes if n.name in added_casts and _casts_to(n, onnx.TensorProto.FLOAT)]:
        half = to_fp32.inputs[0]
        to_fp16 = half.inputs[0] if half.inputs else None
        if (
            to_fp16 is None
            or to_fp16.name not in added_casts
            or not _casts_to(to_fp16, onnx.TensorProto.FLOAT16)
        ):
            continue
        full, restored = to_fp16.inputs[0], to_fp32.outputs[0]
        if any(restored is out for out in graph.outputs):
            to_fp32.inputs[0] = full  # now FP32 -> FP32: keeps the graph output's name
        else:
            replace_uses(restored, full)
            to_fp32.outputs.clear()
        bypassed[half.name] = full
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    # where the FP16 copy is gone, the FP32 tensor takes back the source model's name
    remaining = graph.tensors()
    for name, full in bypassed.items():
        if name not in remaining:
            full.name = name
    return gs.export_onnx(graph), len(bypassed)


def _casts_to(node: gs.Node, dtype: int) -> bool:
    return node.op == "Cast" and node.attrs.get("to") == dtype
