"""The recipe: the only place that knows a model, as typed values (inputs, outputs, tolerances, options).

Recipes are found by name through the registry in `models.recipes`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from trt_harness.models.checks import Check
from trt_harness.models.core.errors import UsageError
from trt_harness.models.detection import DetectionTolerance

if TYPE_CHECKING:
    import numpy as np
    import torch

Dim = int | str  # an int is static; a str names a dynamic dimension
Shape = tuple[int, ...]
Feed = dict[str, "np.ndarray"]

ErrorStat = Literal["elemwise", "max", "mean", "median", "quantile"]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}


@dataclass(frozen=True)
class ShapeRange:
    """Min/opt/max shapes of one dynamic input: a TensorRT optimization profile entry."""

    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        shapes = {"min": self.min, "opt": self.opt, "max": self.max}
        ranks = {len(shape) for shape in shapes.values()}
        if len(ranks) != 1:
            raise UsageError(f"shape range min/opt/max {list(shapes.values())} have different ranks")
        if any(
            not isinstance(d, int) or isinstance(d, bool) or d < 1 for shape in shapes.values() for d in shape
        ):
            raise UsageError(
                f"shape range min/opt/max {list(shapes.values())}: every dimension must be an integer >= 1"
            )
        if not all(lo <= mid <= hi for lo, mid, hi in zip(self.min, self.opt, self.max, strict=True)):
            raise UsageError(
                f"shape range needs min <= opt <= max in every dimension, got {list(shapes.values())}"
            )


@dataclass(frozen=True)
class Tolerance:
    """Pass criterion for one output.

    `check="elemwise"` (default): every element satisfies |a - b| <= atol + rtol * |ref|.
    Otherwise the output passes when the chosen statistic of |a - b| is <= atol OR the same
    statistic of the relative error is <= rtol (Polygraphy's --check-error-stat semantics);
    `quantile` uses `quantile`.
    A NaN or Inf where the reference has none fails regardless.
    """

    atol: float = 1e-5
    rtol: float = 1e-5
    check: ErrorStat = "elemwise"
    quantile: float = 0.99
    # for class-score outputs (see Recipe.class_axes): also require this fraction of equal argmaxes
    min_argmax_agreement: float | None = None
    # a reference with no signal (all zero, within atol of zero, or a trivially satisfied argmax
    # agreement) fails the output unless this is set: say in the recipe why that is expected
    accept_no_signal: bool = False


@dataclass(frozen=True)
class ExportOptions:
    exporter: Literal["dynamo", "torchscript"] = "dynamo"
    opset: int = 18
    # names registered in conversions.replacements; applied only while exporting
    replacements: tuple[str, ...] = ()
    # dims (input name -> axis -> size) the recipe promises are static; used by replacements/passes
    static_dims: Mapping[str, Mapping[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildOptions:
    workspace_bytes: int = 1 << 30
    # TensorRT for RTX on a machine without a GPU builds ahead of time for these targets
    compute_capabilities: tuple[tuple[int, int], ...] = ((8, 6), (8, 9), (12, 0))


# ONNX Runtime's graph-optimization level in the run stage (ORT_DISABLE_ALL ... ORT_ENABLE_ALL), lowest first
OrtOptimization = Literal["disable", "basic", "extended", "all"]
ORT_OPTIMIZATIONS: tuple[str, ...] = ("disable", "basic", "extended", "all")
# recipe fields any recipe takes as a parameter (`-p ort_optimization=basic`), besides its factory's own
FIELD_PARAMS: tuple[str, ...] = ("ort_optimization", "int8_exclude_nodes")
# of those, the ones holding names: `-p int8_exclude_nodes=a,b` gives ("a", "b")
NAME_LIST_PARAMS: tuple[str, ...] = ("int8_exclude_nodes",)

# `harness convert --baseline DIR`: how much a gated error may grow over the baseline run's, and the
# absolute error at or below which growth is float noise, never a regression (see models.results.diff)
DEFAULT_BASELINE_FACTOR = 2.0
DEFAULT_BASELINE_FLOOR = 1e-6

Precision = Literal["fp32", "tf32", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "fp16", "int8")


DetectionLayout = Literal["yolov5", "anchor_free", "postprocessed"]
DETECTION_LAYOUTS: tuple[str, ...] = ("yolov5", "anchor_free", "postprocessed")


@dataclass(frozen=True)
class DetectionSpec:
    """How to read boxes from a detector's output, and when two backends' detections agree.

    `layout` "yolov5": (N, anchors, 5 + classes) rows with objectness; "anchor_free": YOLOv8-style
    (N, 4 + classes, anchors); both are decoded here (confidence filter, class-aware NMS, `max_det`).
    "postprocessed": the model did that itself (torchvision detectors, an NMS in the graph) and returns
    per image `boxes` (K, 4) xyxy pixels, `scores` (K,) and `labels` (K,), optionally `masks`
    (K, [1,] H, W) probabilities and `keypoints` (K, P, 2 or 3, x y [visibility]). `output` then names
    the boxes and `scores_output`/`labels_output`/`masks_output`/`keypoints_output` the others; an
    image's outputs are found either by those names exactly, batched (N, K, ...) or one image (K, ...),
    with `count_output` (N,) the number of valid rows of each padded image if the model pads, or as
    `<i>.<name>` (the derived names of a model returning a list of dicts, image i; see
    conversions.outputs). Boxes scoring at most `conf_thres` are dropped (padding included); set it to
    the model's own score threshold or above, and `max_det` to its own cap.

    Detections are compared as sets (matched by class and IoU, one to one), whatever their order.
    Boxes narrower or lower than `min_wh` pixels are dropped before NMS (YOLOv5 up to v5.0 did so
    with 2 px): the IoU of a box a fraction of a pixel wide swings between 0 and 1 under float
    noise, so such a box cannot be matched between backends. Scores are ranked on a grid of
    `score_resolution` (ties broken by row, identically on both sides), so float noise among equal
    scores (a saturated detector's 1.0s) cannot change which boxes NMS and `max_det` keep. Pairs of
    runners at a precision in `gated_precisions` decide the verdict; the others are reported only.
    """

    output: str
    layout: DetectionLayout
    conf_thres: float = 0.25
    iou_thres: float = 0.45
    max_det: int = 300
    iou_match: float = 0.5
    class_names: tuple[str, ...] = ()
    tolerance: DetectionTolerance = DetectionTolerance()
    gated_precisions: tuple[str, ...] = ("fp32",)
    min_wh: float = 0.0
    score_resolution: float = 1e-5
    # layout "postprocessed": the outputs besides the boxes (`output`), by name or dict key
    scores_output: str = "scores"
    labels_output: str = "labels"
    masks_output: str | None = None
    keypoints_output: str | None = None
    count_output: str | None = None

    def __post_init__(self) -> None:
        if self.layout not in DETECTION_LAYOUTS:
            raise UsageError(
                f"DetectionSpec layout '{self.layout}' is unknown; use one of {list(DETECTION_LAYOUTS)}"
            )
        unknown = sorted(set(self.gated_precisions) - set(PRECISIONS))
        if unknown:
            raise UsageError(
                f"DetectionSpec gated_precisions {unknown} are not precisions; use some of {list(PRECISIONS)}"
            )
        if not 0 <= self.score_resolution < 1:
            raise UsageError(
                f"DetectionSpec score_resolution must lie in [0, 1) (0: exact scores), got {self.score_resolution}"
            )

    @property
    def postprocessed_outputs(self) -> dict[str, str]:
        """Layout "postprocessed": field (boxes, scores, labels, masks, keypoints, count) -> output name."""
        named = {
            "boxes": self.output,
            "scores": self.scores_output,
            "labels": self.labels_output,
            "masks": self.masks_output,
            "keypoints": self.keypoints_output,
            "count": self.count_output,
        }
        return {field_name: name for field_name, name in named.items() if name}


RecipeSource = Literal["built-in", "file", "module", "entry point"]


@dataclass(frozen=True)
class RecipeOrigin:
    """Where a recipe came from (`harness list`, results.json): kind, where, and its file's SHA-256."""

    kind: RecipeSource
    location: str  # the module (built-in), the file's path, `module:factory`, or `dist version (value)`
    module: str = ""  # the Python module the factory lives in: its code joins the stages' code keys
    file: str | None = None  # the source file of that module
    sha256: str | None = None  # of that file, as loaded
    # the installed distribution providing it ("acme-recipes 1.2.3"): its version joins the cache keys,
    # as the code of an installed library is not followed into
    distribution: str | None = None


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    build_model: Callable[[Path | None], torch.nn.Module]
    # Each call returns the sample feeds (one dict per inference), deterministic.
    sample_inputs: Callable[[], list[Feed]]
    inputs: tuple[TensorSpec, ...]
    # the outputs' names in the order the model returns them, nested lists/tuples/dicts flattened as
    # the exporter does (conversions.outputs); () takes the names of `outputs`, or with neither given
    # names derived from the returned structure (`0.boxes`, `0.scores`, ...)
    output_names: tuple[str, ...] = ()
    shape_ranges: Mapping[str, ShapeRange] = field(default_factory=dict)
    export: ExportOptions = ExportOptions()
    surgery_passes: tuple[str, ...] = ("fold_constants", "cleanup", "toposort")
    build: BuildOptions = BuildOptions()
    default_tolerance: Tolerance = Tolerance()
    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    # outputs holding class scores: output name -> class axis, for the argmax-agreement statistic
    class_axes: Mapping[str, int] = field(default_factory=dict)
    # precisions built and compared by default (`--precision` overrides), and the tolerance of each
    # reduced precision against the FP32 Torch reference (every output; per-output values win for fp32)
    precisions: tuple[Precision, ...] = ("fp32",)
    precision_tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    # ONNX nodes the FP16 variant keeps in FP32, besides those the range check finds; `harness localize`
    # proposes such a list for a failing FP16 run
    fp16_block_list: tuple[str, ...] = ()
    # ONNX nodes the INT8 variant leaves unquantized (ORT's `nodes_to_exclude`); `harness localize`
    # proposes such a set for a failing INT8 run; `-p int8_exclude_nodes=a,b` on the command line
    int8_exclude_nodes: tuple[str, ...] = ()
    # also compare at the profile rows (every dynamic dim at its min/opt/max, see make_input), one row each
    compare_profile_shapes: bool = True
    # outputs that are images: output name -> (height axis, width axis), for the error heatmap
    spatial_axes: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    # what the report calls those two axes (default "height", "width"), e.g. ("sequence", "hidden")
    spatial_axis_names: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # detectors: how to post-process an output into boxes, compared per image between backends
    detection: DetectionSpec | None = None
    # the ORT backend's graph optimization; lower it where an onnxruntime's optimizer fails on the model
    ort_optimization: OrtOptimization = "all"
    # `--baseline DIR` gate: no output's p99/max abs error may grow beyond `baseline_factor` x the
    # baseline run's (growth to at most `baseline_floor` never counts); `--baseline-factor` overrides
    baseline_factor: float = DEFAULT_BASELINE_FACTOR
    baseline_floor: float = DEFAULT_BASELINE_FLOOR
    params: Mapping[str, Any] = field(default_factory=dict)
    # acceptance checks of the recipe's own (models.checks): output name -> checks, gated like tolerances
    checks: Mapping[str, tuple[Check, ...]] = field(default_factory=dict)
    # declared outputs, in return order: a TensorSpec (shape with dynamic dims named as the inputs'
    # dims, dtype) is checked on the export and every backend, a plain name is not checked
    outputs: tuple[TensorSpec | str, ...] = ()
    # how to make a valid input of a given shape for the profile rows (see harness.stages.samples):
    # (input name, shape, seeded rng) -> an array of exactly that shape and the input's dtype, with
    # values the model accepts (token ids inside the vocabulary, masks of 0/1), or None to take that
    # input from the samples. None (no make_input): rows the samples cannot be tiled into are skipped
    make_input: Callable[[str, Shape, np.random.Generator], np.ndarray | None] | None = None
    # set by `models.recipes.get_recipe`, not by the recipe: where it was loaded from
    origin: RecipeOrigin | None = None
    # where the model's weights come from when no `--weights FILE` is given, as the report shows it:
    # e.g. "seeded random initialisation (seed 0)" or "loaded by the recipe from hf:prajjwal1/bert-tiny";
    # "" says nothing, and the report then says that the recipe does not say
    weights_source: str = ""

    def __post_init__(self) -> None:
        self._outputs_agree()
        unknown = sorted(set(self.checks) - set(self.output_names)) if self.output_names else []
        if unknown:  # before anything is built (names derived at export are checked when comparing)
            raise UsageError(
                f"recipe '{self.name}' declares checks for output(s) {unknown}, which it does not have; "
                f"key Recipe.checks by one of {list(self.output_names)}"
            )

    def _outputs_agree(self) -> None:
        if not self.outputs:
            return
        names = tuple(o.name if isinstance(o, TensorSpec) else o for o in self.outputs)
        if not self.output_names:
            object.__setattr__(self, "output_names", names)
        elif tuple(self.output_names) != names:
            raise UsageError(
                f"recipe '{self.name}': output_names {list(self.output_names)} differ from the names of "
                f"its outputs {list(names)}; give one of the two"
            )

    @property
    def declared_outputs(self) -> dict[str, TensorSpec]:
        """The outputs whose shape and dtype the recipe declares, by name."""
        return {o.name: o for o in self.outputs if isinstance(o, TensorSpec)}

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    def tolerance_for(self, output: str, precision: str = "fp32") -> Tolerance:
        if precision in self.precision_tolerances:
            return self.precision_tolerances[precision]
        return self.tolerances.get(output, self.default_tolerance)
