"""Op scanner: run a model once and list the calls the chosen exporter or TensorRT will reject or mishandle.

Torch functions are seen through a TorchFunctionMode (F.grid_sample, torch.einsum, F.pad,
Tensor.squeeze, ... whether called by the model or by an nn.Module on its behalf); einops
functions are wrapped for the duration of the scan. Each finding names the replacement that
fixes it, or None when no replacement covers the call (the replacement's own refusal check
decides, so the scanner never promises a fix the replacement would not deliver).
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from trt_harness.conversions.replacements import get_replacement
from trt_harness.conversions.replacements._callsite import call_site
from trt_harness.conversions.replacements._patching import Patcher, resolve
from trt_harness.models.core.errors import UsageError
from trt_harness.models.results.stages import Finding

if TYPE_CHECKING:
    import torch

Exporter = Literal["dynamo", "torchscript"]
EXPORTERS: tuple[Exporter, ...] = ("dynamo", "torchscript")


@dataclass(frozen=True)
class ProblemOp:
    """One known problem op: the callables that reach it, why it is a problem, and its fix."""

    op: str
    functions: tuple[str, ...]
    reason: str
    replacement: str | None
    exporters: tuple[Exporter, ...] = EXPORTERS
    # the call is harmless when every named argument has one of the listed values
    harmless_when: Mapping[str, tuple[Any, ...]] = field(default_factory=lambda: MappingProxyType({}))
    # watched only when this package is already imported (the model uses it): importing it for the
    # scan would be slow, and torchvision's CUDA-only wheel does not even import next to the CPU torch
    only_if_loaded: str | None = None


_TV_DETECTION = "torchvision.models.detection"
# measured on torchvision 0.28 / torch 2.13 (issue 16): what stops its detectors, and where
_TV_DYNAMIC = (
    "filters candidates with torch.where(scores > threshold) and runs batched_nms on what is left: "
    "variable-length tensors that export as NonZero, which TensorRT for RTX 1.7 cannot parse ('NonZero "
    "plugin creator ... not found'), and data-dependent guards in torchvision/ops/boxes.py "
    "(boxes.numel() > 4000, == 0) that stop the torch.export-based exporter"
)
_TORCHVISION_OPS: tuple[ProblemOp, ...] = (
    # the replacements export with both exporters (RetinaNet's recipe model with torch.export: 573 s,
    # against 20 s with TorchScript; FCOS and SSD measured on small configs in their tests)
    ProblemOp(
        op="torchvision RetinaNet.postprocess_detections",
        functions=(f"{_TV_DETECTION}.retinanet.RetinaNet.postprocess_detections",),
        reason=_TV_DYNAMIC,
        replacement="tv_retinanet_postprocess",
        only_if_loaded="torchvision",
    ),
    ProblemOp(
        op="torchvision SSD.postprocess_detections",
        functions=(f"{_TV_DETECTION}.ssd.SSD.postprocess_detections",),
        reason=_TV_DYNAMIC,
        replacement="tv_ssd_postprocess",
        only_if_loaded="torchvision",
    ),
    ProblemOp(
        op="torchvision FCOS.postprocess_detections",
        functions=(f"{_TV_DETECTION}.fcos.FCOS.postprocess_detections",),
        reason=_TV_DYNAMIC,
        replacement="tv_fcos_postprocess",
        only_if_loaded="torchvision",
    ),
    *(
        entry
        for op, path, reason in (
            (
                "torchvision RegionProposalNetwork.filter_proposals",
                f"{_TV_DETECTION}.rpn.RegionProposalNetwork.filter_proposals",
                _TV_DYNAMIC.replace("filters candidates", "(Faster/Mask/Keypoint R-CNN) filters proposals")
                + "; the RoI heads then pool that data-dependent number of proposals",
            ),
            (
                "torchvision MultiScaleRoIAlign",
                "torchvision.ops.poolers._multiscale_roi_align",
                "with several feature levels, gathers the proposals of each level with "
                "torch.where(levels == level) and merges the pooled rows back by those indices: NonZero, "
                "variable-length tensors (one level pools all proposals at once and is harmless)",
            ),
            (
                "torchvision RoIHeads.postprocess_detections",
                f"{_TV_DETECTION}.roi_heads.RoIHeads.postprocess_detections",
                _TV_DYNAMIC.replace("filters candidates", "filters per-class boxes (and removes small ones)"),
            ),
        )
        for entry in (
            ProblemOp(
                op=op,
                functions=(path,),
                reason=reason,
                replacement="tv_rcnn_postprocess",
                exporters=("torchscript",),
                only_if_loaded="torchvision",
            ),
            ProblemOp(
                op=op,
                functions=(path,),
                reason=reason + "; the 'tv_rcnn_postprocess' replacement is proven with the TorchScript "
                "exporter only: export with exporter='torchscript'",
                replacement=None,
                exporters=("dynamo",),
                only_if_loaded="torchvision",
            ),
        )
    ),
    ProblemOp(
        op="torchvision keypointrcnn_inference",
        functions=(f"{_TV_DETECTION}.roi_heads.keypointrcnn_inference",),
        reason="Keypoint R-CNN's heatmaps_to_keypoints upsamples each detection's heatmaps (bicubic) to "
        "that detection's own box size, ceil(width) x ceil(height), and takes the argmax there: a loop "
        "over the detections (scripted while tracing, _onnx_heatmaps_to_keypoints_loop) whose shapes "
        "depend on the data, so no static graph; no replacement (tv_rcnn_postprocess covers the boxes "
        "only)",
        replacement=None,
        only_if_loaded="torchvision",
    ),
    ProblemOp(
        op="torchvision paste_masks_in_image",
        functions=(f"{_TV_DETECTION}.roi_heads.paste_masks_in_image",),
        reason="Mask R-CNN pastes each detection's mask in a Python loop over the detections, each at "
        "its own box size: shapes that depend on the data, so no static graph; no replacement",
        replacement=None,
        only_if_loaded="torchvision",
    ),
)


PROBLEM_OPS: tuple[ProblemOp, ...] = (
    ProblemOp(
        op="torch.nn.functional.grid_sample",
        functions=("torch.nn.functional.grid_sample",),
        reason="ONNX GridSample needs opset 16 (5-D input: opset 20); the TorchScript exporter rejects 5-D "
        "input, TensorRT's GridSample importer takes 4-D input only, and TensorRT 8.2 and older have none",
        replacement="grid_sample",
    ),
    ProblemOp(
        op="torch.einsum",
        functions=("torch.functional.einsum",),
        reason="exports as ONNX Einsum, which TensorRT 8.x builds only without ellipsis, diagonals and "
        "broadcasting between inputs, and only for FP32/FP16",
        replacement="einsum",
    ),
    ProblemOp(
        op="einops.rearrange/repeat",
        functions=("einops.rearrange", "einops.repeat", "einops.layers.torch.Rearrange.forward"),
        reason="einops computes the reshape sizes in Python while tracing (recipe caches keyed by shape, "
        "divisibility checks on sizes), so whether dynamic axes survive depends on the einops release and "
        "the tracer (einops 0.8 traces correctly with both exporters of torch 2.13)",
        replacement="einops",
    ),
    ProblemOp(
        op="torch.linalg.inv",
        functions=("torch.inverse", "torch.linalg.inv", "torch.Tensor.inverse"),
        reason="neither exporter lowers aten::linalg_inv (ONNX has no matrix inverse), so the export fails",
        replacement="inverse",
    ),
    ProblemOp(
        op="torch.nn.functional.pad",
        functions=("torch.nn.functional.pad",),
        reason="exports as ONNX Pad with a reflect/replicate/circular mode or a non-zero value, which "
        "TensorRT before 8.4 rejects ('This version of TensorRT only supports constant 0 padding!'); the "
        "TorchScript exporter also computes the pads at run time through a Shape/Concat subgraph",
        replacement="pad",
        harmless_when=MappingProxyType({"mode": ("constant",), "value": (None, 0)}),
    ),
    ProblemOp(
        op="torch.squeeze",
        functions=("torch.squeeze", "torch.Tensor.squeeze"),
        reason="the TorchScript exporter emits Shape->Gather->Equal->If when ONNX shape inference cannot "
        "prove the squeezed dim is 1 (dynamic axes); the If branches differ in rank, which TensorRT "
        "rejects unless it can fold the condition",
        replacement="squeeze_static",
        exporters=("torchscript",),
    ),
    ProblemOp(
        op="torch.nn.functional.interpolate(size=...)",
        functions=("torch.nn.functional.interpolate",),
        reason="a size= given as Python ints is frozen into the graph, so with dynamic spatial axes the "
        "output keeps the traced size (the TorchScript exporter builds Resize 'sizes' from a "
        "Shape/Slice/Concat subgraph around it)",
        replacement="interpolate_size",
        harmless_when=MappingProxyType({"size": (None,)}),
    ),
    ProblemOp(
        op="torch.nn.functional.interpolate(antialias=True)",
        functions=("torch.nn.functional.interpolate",),
        reason="the TorchScript exporter has no lowering for the antialiased upsample kernels, and "
        "TensorRT's Resize importer rejects antialias=1",
        replacement=None,
        harmless_when=MappingProxyType({"antialias": (False,)}),
    ),
    ProblemOp(
        op="torch.linalg.det",
        functions=("torch.det", "torch.linalg.det", "torch.Tensor.det"),
        reason="exports as ONNX Det, which TensorRT's ONNX parser does not support",
        replacement=None,
    ),
    ProblemOp(
        op="torch.unique",
        functions=("torch.unique", "torch.Tensor.unique"),
        reason="exports as ONNX Unique, which TensorRT's ONNX parser does not support",
        replacement=None,
    ),
    ProblemOp(
        op="torch.fft",
        functions=tuple(
            f"torch.fft.{kind}{name}" for kind in ("", "i", "r", "ir") for name in ("fft", "fft2", "fftn")
        ),
        reason="the TorchScript exporter rejects aten::fft_*; the torch.export-based exporter emits ONNX "
        "DFT, which TensorRT's ONNX parser does not support",
        replacement=None,
    ),
    *_TORCHVISION_OPS,
)


def _matches(value: Any, allowed: tuple[Any, ...]) -> bool:
    try:
        return any(value is a or value == a for a in allowed)
    except (TypeError, RuntimeError):  # e.g. a multi-element tensor compared with 0
        return False


def _harmless(
    problem: ProblemOp, function: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping
) -> bool:
    if not problem.harmless_when:
        return False
    try:
        bound = inspect.signature(function).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return False
    bound.apply_defaults()
    return all(
        _matches(bound.arguments.get(name), allowed) for name, allowed in problem.harmless_when.items()
    )


@dataclass
class _Watched:
    path: str
    owner: Any
    attribute: str
    function: Callable[..., Any]
    problems: list[ProblemOp]


class _Scanner:
    def __init__(self, exporter: Exporter) -> None:
        self.counts: dict[tuple[str, str, str | None, str], int] = {}
        self.watched: dict[int, _Watched] = {}  # by id() of the callable
        for problem in PROBLEM_OPS:
            if exporter not in problem.exporters:
                continue
            if problem.only_if_loaded and problem.only_if_loaded not in sys.modules:
                continue
            for path in problem.functions:
                place = resolve(path)
                if place is None:
                    continue  # optional package (einops) not installed
                function = getattr(*place)
                watched = self.watched.setdefault(id(function), _Watched(path, *place, function, []))
                watched.problems.append(problem)

    def note(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        watched = self.watched[id(function)]
        path = watched.path
        for problem in watched.problems:
            if _harmless(problem, watched.function, args, kwargs):
                continue
            replacement, reason = problem.replacement, problem.reason
            if replacement is not None:
                refusal = get_replacement(replacement).refusal(path, args, kwargs)
                if refusal is not None:
                    reason = f"{reason}; the '{replacement}' replacement does not cover this call: {refusal}"
                    replacement = None
            key = (problem.op, reason, replacement, call_site())
            self.counts[key] = self.counts.get(key, 0) + 1

    def findings(self) -> list[Finding]:
        return [Finding(*key, count) for key, count in self.counts.items()]


def _torch_function_mode(scanner: _Scanner) -> Any:
    from torch.overrides import TorchFunctionMode

    class _Observe(TorchFunctionMode):
        def __torch_function__(
            self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
        ) -> Any:
            kwargs = kwargs or {}
            if id(func) in scanner.watched:
                scanner.note(func, args, kwargs)
            return func(*args, **kwargs)

    return _Observe()


@contextlib.contextmanager
def _wrapped_outside_torch(scanner: _Scanner) -> Iterator[None]:
    """Callables that torch's dispatch does not see (einops) are wrapped to report their calls."""
    patcher = Patcher()

    def reporting(function: Callable[..., Any]) -> Callable[..., Any]:
        def report(*args: Any, **kwargs: Any) -> Any:
            scanner.note(function, args, kwargs)
            return function(*args, **kwargs)

        return report

    try:
        for watched in list(scanner.watched.values()):
            if not watched.path.startswith("torch."):
                patcher.swap(watched.owner, watched.attribute, reporting(watched.function))
        patcher.swap_aliases()
        yield
    finally:
        patcher.restore()


def scan_module(model: torch.nn.Module, args: tuple[Any, ...], exporter: Exporter) -> list[Finding]:
    """Run `model(*args)` once and list the problem ops it calls for `exporter`, with their fixes."""
    import torch

    if exporter not in EXPORTERS:
        raise UsageError(f"unknown exporter '{exporter}'; choose one of {', '.join(EXPORTERS)}")
    scanner = _Scanner(exporter)
    with torch.no_grad(), _wrapped_outside_torch(scanner), _torch_function_mode(scanner):
        model(*args)
    return scanner.findings()
