"""The ledger: one typed entry per stage, with what it wrote (artifacts) and what it found (details).

Each stage's details are one dataclass here, tagged with the stage's name, so `results.json` is read
back into the same types that were written (see `models.core.serde`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from trt_harness.models.core.artifacts import Artifact
from trt_harness.models.core.serde import tag, tagged
from trt_harness.models.recipe import ShapeRange
from trt_harness.models.results.comparisons import (
    ComparisonGroup,
    CrossMatch,
    ErrorMap,
    MissingOutput,
    OutputComparison,
    PairNotCompared,
)
from trt_harness.models.results.detections import DetectionsReport
from trt_harness.models.results.shards import Shard

Status = Literal["ok", "cached", "failed", "skipped", "interrupted"]
DONE: tuple[str, ...] = ("ok", "cached")  # statuses whose details hold results


@tagged("stage")
@dataclass(frozen=True)
class StageDetails:
    """What one stage found; each stage has its own subclass."""


# --- samples ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleSet:
    """Feeds of one sample set, saved one file per sample under `folder` of the samples artifact."""

    folder: str
    samples: int
    # each input's shape, per sample (samples of a set may differ, e.g. sequence lengths)
    shapes: tuple[Mapping[str, tuple[int, ...]], ...]
    label: str = ""  # how the report names it, e.g. "at images 8x3x320x320"


@tag("samples")
@dataclass(frozen=True)
class SamplesDetails(StageDetails):
    sets: Mapping[str, SampleSet]
    # the slice of the recipe's samples this run judged (`--shard i/n`); None: all of them
    shard: Shard | None = None


# --- scan and export ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """Calls of one problem op at one place in the model, and the replacement that fixes it (None: none known)."""

    op: str
    reason: str
    replacement: str | None
    location: str
    count: int
    fixed_by_recipe: bool = False


@tag("scan")
@dataclass(frozen=True)
class ScanDetails(StageDetails):
    findings: tuple[Finding, ...]

    @property
    def unfixed_ops(self) -> tuple[str, ...]:
        return tuple(sorted({f.op for f in self.findings if not f.fixed_by_recipe}))


@dataclass(frozen=True)
class ReplacementCall:
    """Calls of one replacement at one call site, with what the replacement did about them."""

    replacement: str
    location: str
    action: Literal["replaced", "kept original"]
    detail: str
    count: int


@tag("export")
@dataclass(frozen=True)
class ExportDetails(StageDetails):
    onnx: str  # file name in the run folder
    exporter: str
    opset: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    replacements: tuple[str, ...]
    torch: str
    # which calls each replacement rewrote, where; and requested replacements that saw no call
    replacement_calls: tuple[ReplacementCall, ...] = ()
    unused_replacements: tuple[str, ...] = ()
    op_counts: Mapping[str, int] = field(default_factory=dict)
    # graph outputs carrying the shape or dtype the recipe declares for another output (exit 3)
    ordering_mismatches: tuple[str, ...] = ()


# --- surgery and precision ------------------------------------------------------------------------


@dataclass(frozen=True)
class PassReport:
    """What one graph-surgery pass did to the model."""

    name: str
    modified: bool
    changes: tuple[str, ...]
    op_counts_before: Mapping[str, int]
    op_counts_after: Mapping[str, int]
    duration_s: float
    # ONNX Runtime outputs after vs before this pass; None when no feeds were checked
    max_abs_diff: float | None


@tag("surgery")
@dataclass(frozen=True)
class SurgeryDetails(StageDetails):
    passes: tuple[PassReport, ...]

    @property
    def op_counts_before(self) -> Mapping[str, int] | None:
        return self.passes[0].op_counts_before if self.passes else None

    @property
    def op_counts_after(self) -> Mapping[str, int] | None:
        return self.passes[-1].op_counts_after if self.passes else None

    @property
    def max_abs_diff(self) -> float:
        return max((p.max_abs_diff or 0.0 for p in self.passes), default=0.0)


@dataclass(frozen=True)
class Fp16Thresholds:
    overflow_above: float  # FP16's largest finite value
    min_normal: float  # FP16's smallest normal value
    min_subnormal: float  # below this FP16 rounds to 0
    underflow_fraction: float  # flagged when more than this share of nonzeros is below min_normal


@dataclass(frozen=True)
class TensorRange:
    name: str
    producer: str | None  # node name; None for graph inputs and initializers
    op_type: str | None
    consumers: tuple[str, ...]
    max_abs: float
    elements: int  # over all feeds
    nonzero: int
    below_min_normal: int  # nonzero values with |x| < 2**-14 (FP16 subnormal)
    below_min_subnormal: int  # nonzero values with |x| < 2**-24 (lost in FP16)
    nonfinite: int  # NaN/Inf already in FP32 (not counted above)
    flags: tuple[str, ...] = ()  # "overflow", "underflow"

    @property
    def subnormal_fraction(self) -> float:
        return self.below_min_normal / self.nonzero if self.nonzero else 0.0

    @property
    def flush_fraction(self) -> float:
        return self.below_min_subnormal / self.nonzero if self.nonzero else 0.0


@dataclass(frozen=True)
class RangeReport:
    """The FP16 range check: which tensors of the FP32 model FP16 cannot hold."""

    model: str
    feeds: int
    tensors_checked: int
    thresholds: Fp16Thresholds
    flagged: tuple[TensorRange, ...]
    top: tuple[TensorRange, ...]  # the tensors with the largest max |x|, largest first
    # producers and consumers of flagged tensors, in graph order: pass to fp16_onnx(block_list=...)
    block_list: tuple[str, ...]

    @property
    def fits_fp16(self) -> bool:
        return not self.flagged


@dataclass(frozen=True)
class PrecisionVariant:
    """What one reduced-precision variant of the final model is, and what made it."""

    precision: Literal["fp16", "int8"]
    path: str  # file name in the run folder
    library: str  # the maintained library that rewrote the graph, e.g. "onnxruntime.quantization"
    library_version: str
    # node names kept in FP32 (fp16) or left unquantized (int8), as asked for
    block_list: tuple[str, ...]
    op_counts: Mapping[str, int]
    notes: tuple[str, ...] = ()


@tag("precision")
@dataclass(frozen=True)
class PrecisionDetails(StageDetails):
    variants: Mapping[str, PrecisionVariant]
    fp16_range: RangeReport | None = None


# --- build ----------------------------------------------------------------------------------------------


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

    def module(self) -> Any:
        return importlib.import_module(self.module_name)


BuildPhase = Literal["parse", "build"]
WarningSource = Literal["TensorRT", "Polygraphy"]


@dataclass(frozen=True)
class BuildWarning:
    """A warning the TensorRT parser/builder (through its logger) or Polygraphy gave while building."""

    phase: BuildPhase
    source: WarningSource
    message: str


@dataclass(frozen=True)
class EngineRecord:
    """One precision's TensorRT engine, or the builder's refusal of it (`built` False, with its messages)."""

    precision: str
    built: bool
    engine: str | None = None  # file name in the run folder
    targets: tuple[str, ...] = ()
    network_layers: int | None = None
    plan_size_bytes: int | None = None
    build_seconds: float | None = None
    workspace_bytes: int | None = None
    network_io: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # "inputs"/"outputs"
    profile: Mapping[str, ShapeRange] = field(default_factory=dict)
    warnings: tuple[BuildWarning, ...] = ()  # the parser's and builder's warnings, in order
    phase: str | None = None  # where a refusal happened: "parse" or "build"
    messages: tuple[str, ...] = ()
    reason: str | None = None
    # the node the ONNX parser refused, as its message names it (None: it named none)
    failing_node: str | None = None
    failing_op: str | None = None


@tag("build")
@dataclass(frozen=True)
class BuildDetails(StageDetails):
    flavor: TensorRTFlavor
    engines: Mapping[str, EngineRecord]

    @property
    def primary(self) -> EngineRecord | None:
        """The engine of the run's first precision (the one that decides whether the stage failed)."""
        return next(iter(self.engines.values()), None)


# --- run ----------------------------------------------------------------------------------------------

# "build failed": what the runner runs from (a TensorRT engine) could not be made; the others still run
RunnerState = Literal["executed", "built, not executed", "not executed", "build failed"]


@dataclass(frozen=True)
class IOOrder:
    """Positional order of inputs and outputs as one stage or backend sees them."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class RunnerRecord:
    """One backend at one precision: whether and where it ran, and where its outputs are."""

    backend: str
    precision: str
    display_name: str
    reference: bool  # the backend the others are judged against
    state: RunnerState
    reason: str | None = None  # why it did not execute
    outputs: str | None = None  # artifact name of its saved outputs
    sample_sets: tuple[str, ...] = ()
    samples: int = 0
    io_order: IOOrder | None = None
    io_source: str = ""  # where the order was read: "returned order", "session", "engine", ...
    median_latency_s: float | None = None
    inference_s: float = 0.0  # time inside the backend's infer calls, all samples
    setup_s: float = 0.0  # loading the model, creating the session or engine context
    device: Mapping[str, str] = field(default_factory=dict)  # where it ran (device, providers, versions)
    # outputs carrying the shape or dtype the recipe declares for another output (exit 3)
    ordering_mismatches: tuple[str, ...] = ()

    @property
    def executed(self) -> bool:
        return self.state == "executed"


@tag("run")
@dataclass(frozen=True)
class RunDetails(StageDetails):
    runners: Mapping[str, RunnerRecord]

    def executed(self) -> dict[str, RunnerRecord]:
        return {name: r for name, r in self.runners.items() if r.executed}


# --- compare --------------------------------------------------------------------------------------


@tag("compare")
@dataclass(frozen=True)
class CompareDetails(StageDetails):
    groups: tuple[ComparisonGroup, ...]
    comparisons: tuple[OutputComparison, ...]
    missing: tuple[MissingOutput, ...] = ()
    crossmatch: tuple[CrossMatch, ...] = ()
    error_maps: tuple[ErrorMap, ...] = ()
    detections: DetectionsReport | None = None
    not_compared: tuple[PairNotCompared, ...] = ()

    @property
    def passed(self) -> bool:
        return all(self.comparisons) and not self.missing

    @property
    def mismatches(self) -> tuple[str, ...]:
        return tuple(m for cm in self.crossmatch for m in cm.mismatches)


# --- the ledger entry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StageRecord:
    name: str
    status: Status
    duration_s: float = 0.0
    reason: str | None = None
    artifacts: Mapping[str, Artifact] = field(default_factory=dict)
    details: StageDetails | None = None
    traceback: str | None = None  # an unexpected error's, for the bug report

    @property
    def done(self) -> bool:
        return self.status in DONE
