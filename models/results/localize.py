"""Where a model diverges: the map from ONNX tensors to Torch modules, the per-layer error curve of a
candidate (ORT at some precision) against the Torch reference, the first divergence, and the FP16
triage (the nodes to keep in FP32) and the INT8 triage (the nodes to leave unquantized).

The module map is written by the export stage (`module_map.json`); the localization is written by
`harness localize` / `harness convert --localize` into `results.json` (`Results.localization`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from trt_harness.models.core.artifacts import write_text_atomic
from trt_harness.models.core.errors import UsageError
from trt_harness.models.core.serde import SchemaError, from_json, to_json

MODULE_MAP_FILE = "module_map.json"

# where `ModuleBoundary.source` comes from: the exporter's stack trace (the line of the module's own
# forward that computes its output) or, without one (TorchScript), the line its forward is defined on
SourceKind = Literal["stack trace", "forward definition"]


@dataclass(frozen=True)
class ModuleBoundary:
    """One Torch module as the exported graph holds it."""

    path: str  # as `model.named_modules()` names it, e.g. "model.24.m.0"
    class_name: str  # qualified, e.g. "models.common.Bottleneck"
    source: str | None  # "file.py:123"
    source_kind: SourceKind | None
    nodes: tuple[str, ...]  # the ONNX nodes it covers, in graph order
    op_types: Mapping[str, int]  # of those nodes
    # the last produced tensor of its nodes that something outside them (or the graph output) reads
    output: str | None
    inputs: tuple[str, ...]  # tensors its nodes read from outside them (initializers excluded)
    depth: int  # 1 for a child of the root module


@dataclass(frozen=True)
class ModuleMap:
    onnx: str  # the file it was built from (the exported model)
    exporter: str
    modules: tuple[ModuleBoundary, ...]  # in the order their outputs are produced

    def by_path(self) -> dict[str, ModuleBoundary]:
        return {m.path: m for m in self.modules}


def save_module_map(module_map: ModuleMap, path: Path) -> None:
    write_text_atomic(path, json.dumps(to_json(module_map), indent=1))


def load_module_map(path: Path) -> ModuleMap:
    try:
        return from_json(ModuleMap, json.loads(Path(path).read_text(encoding="utf-8")), "module_map")
    except FileNotFoundError:
        raise UsageError(f"{path} not found: re-run `harness convert` (the export stage writes it)") from None
    except (json.JSONDecodeError, SchemaError) as e:
        raise UsageError(f"{path} is damaged or was edited ({e}); re-run `harness convert`") from e


@dataclass(frozen=True)
class LayerError:
    """The error of one module's output, candidate against reference, over the samples compared."""

    module: str
    class_name: str
    source: str | None
    op_types: tuple[str, ...]
    tensor: str  # the ONNX tensor compared with the module's Torch output
    position: int  # index of the tensor's producer in the candidate graph (topological order)
    max_abs_err: float
    mean_abs_err: float
    ref_scale: float  # median |ref| over nonzero elements: the scale the tolerance was scaled by
    scaled_atol: float
    rtol: float
    # the worst element's |cand - ref| / (scaled atol + rtol |ref|): above 1 is out of tolerance
    error_ratio: float
    passed: bool  # judged by the streaming statistics at the scaled tolerance
    upstream: tuple[str, ...] = ()  # the compared modules whose outputs feed it
    # how much the error ratio grew here: its own minus the largest of its upstream modules'
    jump: float = 0.0


@dataclass(frozen=True)
class NotCompared:
    module: str
    reason: str


@dataclass(frozen=True)
class LayerCurve:
    """One candidate against the reference, layer by layer in topological order."""

    reference: str  # "torch"
    candidate: str  # "onnxrt"
    precision: str
    model: str  # the ONNX file the candidate ran
    output: str  # the graph output whose tolerance was scaled per layer
    samples: tuple[int, ...]  # indexes in the samples set
    layers: tuple[LayerError, ...]
    first_divergence: str | None  # module path; None: every compared layer is within tolerance
    not_compared: tuple[NotCompared, ...] = ()
    chunks: int = 1  # ORT sessions made, each exposing a slice of the mapped tensors
    duration_s: float = 0.0

    def layer(self, module: str) -> LayerError | None:
        return next((layer for layer in self.layers if layer.module == module), None)

    @property
    def divergence(self) -> LayerError | None:
        return self.layer(self.first_divergence) if self.first_divergence else None

    def largest_jumps(self, count: int = 10) -> tuple[LayerError, ...]:
        return tuple(sorted(self.layers, key=lambda layer: -layer.jump)[:count])


@dataclass(frozen=True)
class BlockedNode:
    node: str
    op_type: str
    module: str | None  # the deepest mapped module covering it


@dataclass(frozen=True)
class Fp16Triage:
    """The smallest set of nodes found to keep in FP32 so that every output is within the FP16
    tolerance, and its re-validation by a real ONNX Runtime run of the model it makes."""

    tolerance_ratio_before: float  # worst output error / tolerance with the stage's FP16 model
    tolerance_ratio_after: float  # with the proposed block list, measured
    fixed: bool
    block_list: tuple[BlockedNode, ...]
    candidates_tried: int
    recipe_option: str  # what to put into the recipe
    polygraphy_option: str  # the same for `polygraphy run --layer-precisions`
    note: str = ""


# how a TensorRT build of the final ONNX exposes the mapped module outputs: not at all, as debug
# tensors (`INetworkDefinition.mark_debug`), or as extra engine outputs (`mark_output`)
Marking = Literal["none", "debug", "output"]


@dataclass(frozen=True)
class MarkedBuild:
    """One ahead-of-time build of the final ONNX with the mapped tensors marked one way. Every count is
    read from the network or from the builder's own detailed layer list: nothing here ran the engine."""

    marking: Marking
    built: bool
    marked: int = 0  # tensors the network accepted as marked
    network_layers: int | None = None
    network_outputs: tuple[str, ...] = ()  # after marking: what an engine of it returns by name
    # the layers of the engine as the builder lists them (profiling verbosity DETAILED); None: not listed
    engine_layers: int | None = None
    # the marked tensors the builder's layer list names as a layer output (materialized in the engine)
    marked_in_engine: tuple[str, ...] = ()
    engine: str | None = None  # file name in the run folder; None: not written (unmarked) or not built
    plan_size_bytes: int | None = None
    build_seconds: float | None = None
    reason: str | None = None  # why it was not built or what the flavor lacks


@dataclass(frozen=True)
class TensorRTMarking:
    """The TensorRT side of the layer-wise comparison: the marked builds (ahead of time) and, only where
    a GPU the engine runs on exists, the Torch-vs-TensorRT curve; else why it was not executed."""

    flavor: str  # "TensorRT for RTX 1.7.1.116"
    model: str  # the ONNX file built
    tensors: tuple[str, ...] = ()  # the mapped module outputs asked to be marked
    not_in_network: tuple[str, ...] = ()  # of those, the ones the parsed network has no tensor for
    supports_debug: bool = False  # the flavor's network has `mark_debug`
    builds: tuple[MarkedBuild, ...] = ()
    targets: tuple[str, ...] = ()
    not_built: str | None = None  # why no marked build was attempted (no TensorRT that builds here)
    curve: LayerCurve | None = None  # Torch vs the output-marked engine; None: not executed
    not_executed: str | None = None  # why the TensorRT side did not run

    def build(self, marking: Marking) -> MarkedBuild | None:
        return next((b for b in self.builds if b.marking == marking), None)


@dataclass(frozen=True)
class Int8Triage:
    """The smallest set of nodes found to leave unquantized so that every output is within the INT8
    tolerance, and its re-validation by a real ONNX Runtime run of the Q/DQ model it makes."""

    tolerance_ratio_before: float  # worst output's error / tolerance, as its check judges it
    tolerance_ratio_after: float  # with the proposed exclusion set, measured
    fixed: bool
    excluded: tuple[BlockedNode, ...]  # ONNX node, op, deepest module
    modules: tuple[str, ...]  # the module paths of the nodes found
    quantizable_nodes: int  # of the FP32 model (Conv, ConvTranspose, Gemm, MatMul): what excluding all is
    candidates_tried: int
    samples: int  # the feeds every candidate was judged on
    recipe_option: str  # `int8_exclude_nodes=(...)` in the recipe
    cli_option: str  # `-p int8_exclude_nodes=a,b`
    ort_option: str  # `nodes_to_exclude=[...]` for onnxruntime.quantization.quantize_static
    polygraphy_option: str  # `--layer-precisions` for an implicitly quantized TensorRT build
    note: str = ""


@dataclass(frozen=True)
class Localization:
    curves: tuple[LayerCurve, ...]
    fp16_triage: Fp16Triage | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    int8_triage: Int8Triage | None = None
    tensorrt_marking: TensorRTMarking | None = None
