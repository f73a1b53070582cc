"""Layer-wise comparison, Torch against ONNX Runtime: where in the model the outputs start to diverge.

Torch's intermediates come from forward hooks on the modules of the module map
(`conversions.module_map`); ONNX Runtime's from the same model with the mapped tensors exposed as
extra graph outputs. Memory stays bounded: the mapped tensors are split into chunks of at most
`chunk_bytes` (of one sample's values); each chunk gets its own session and its own Torch pass with
hooks on its modules only, and samples go one at a time. Nothing is written to disk. Another candidate
that gives the tensors by name (`Intermediates`: a TensorRT engine with them marked as outputs,
`harness.localize_tensorrt`) takes ONNX Runtime's place.

A layer's tolerance is the failing output's, scaled: atol x (typical |ref| of the layer / typical |ref|
of the output, the median over nonzero elements), rtol unchanged, judged by the same streaming statistics as the outputs
(`harness.comparison.OutputAccumulator`). The first divergence is the first module in topological
order whose output is out of its scaled tolerance while the modules feeding it are within theirs.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from trt_harness.conversions.ort_session import OrtSettings, session_of_model
from trt_harness.conversions.outputs import name_outputs
from trt_harness.harness.comparison import OutputAccumulator
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.recipe import Feed, Tolerance
from trt_harness.models.results.localize import (
    LayerCurve,
    LayerError,
    ModuleBoundary,
    ModuleMap,
    NotCompared,
)

if TYPE_CHECKING:
    import onnx
    import torch

DEFAULT_CHUNK_BYTES = 256 << 20  # one chunk's intermediates of one sample, each side


class Intermediates(Protocol):
    """A candidate other than ONNX Runtime that gives the mapped tensors by name (e.g. a TensorRT engine
    with them marked as outputs: `harness.localize_tensorrt.TrtIntermediates`)."""

    candidate: str  # the backend name the curve records

    def provides(self, tensor: str) -> bool:
        """Whether `values` can give this tensor."""
        ...

    def values(self, tensors: Sequence[str], feed: Feed) -> dict[str, np.ndarray]:
        """The tensors of one feed, by name, each an array of its own."""
        ...


@dataclasses.dataclass
class _Graph:
    """Who produces and who reads each tensor of the candidate graph, and the position of each node."""

    proto: onnx.ModelProto
    producer: dict[str, int]
    node_inputs: list[tuple[str, ...]]
    node_index: dict[str, int]
    stops: set[str]  # graph inputs and initializers: the walk upstream ends there

    @classmethod
    def of(cls, proto: onnx.ModelProto) -> _Graph:
        graph = proto.graph
        producer = {name: i for i, node in enumerate(graph.node) for name in node.output if name}
        return cls(
            proto,
            producer,
            [tuple(n for n in node.input if n) for node in graph.node],
            {node.name: i for i, node in enumerate(graph.node)},
            {i.name for i in graph.input} | {t.name for t in graph.initializer},
        )

    def span_inputs(self, boundary: ModuleBoundary) -> tuple[str, ...]:
        """The tensors the module's nodes (those still in this graph) read from outside them."""
        span = {self.node_index[n] for n in boundary.nodes if n in self.node_index}
        if not span:
            return boundary.inputs
        return tuple(
            dict.fromkeys(
                t
                for i in sorted(span)
                for t in self.node_inputs[i]
                if self.producer.get(t) not in span and t not in self.stops
            )
        )

    def upstream(self, tensors: Iterable[str], compared: Mapping[str, str], own: str) -> tuple[str, ...]:
        """The compared modules whose outputs reach `tensors` without passing another compared tensor."""
        found: dict[str, None] = {}
        seen: set[str] = set()
        stack = [t for t in tensors if t != own]
        while stack:
            tensor = stack.pop()
            if tensor in seen or tensor in self.stops:
                continue
            seen.add(tensor)
            if tensor in compared:
                found[compared[tensor]] = None
                continue
            index = self.producer.get(tensor)
            if index is not None:
                stack.extend(self.node_inputs[index])
        return tuple(found)


def _as_array(value: Any) -> np.ndarray:
    # a copy: a later in-place op (ReLU(inplace=True)) would change a view under us
    return np.array(value.detach().cpu().float().numpy(), copy=True)


class _Hooks:
    """Forward hooks that keep (or only measure) the output of each module of `paths`."""

    def __init__(self, model: torch.nn.Module, paths: Iterable[str], keep: bool) -> None:
        modules = dict(model.named_modules())
        self.keep = keep
        self.values: dict[str, np.ndarray] = {}
        self.nbytes: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.not_tensor: set[str] = set()
        self.handles = [modules[p].register_forward_hook(self._hook(p)) for p in paths if p in modules]

    def _hook(self, path: str) -> Callable[..., None]:
        import torch

        def hook(module: Any, args: Any, output: Any) -> None:
            self.calls[path] = self.calls.get(path, 0) + 1
            if not isinstance(output, torch.Tensor):
                self.not_tensor.add(path)
                return
            self.nbytes[path] = output.numel() * 4
            if self.keep:
                self.values[path] = _as_array(output)

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _torch_forward(model: torch.nn.Module, feed: Feed, input_names: Sequence[str]) -> Any:
    import torch

    with torch.inference_mode():
        return model(*(torch.from_numpy(np.ascontiguousarray(feed[n])) for n in input_names))


def reference_outputs(
    model: torch.nn.Module, feed: Feed, input_names: Sequence[str], output_names: Sequence[str]
) -> dict[str, np.ndarray]:
    """The Torch model's outputs on one feed, by name."""
    named = name_outputs(_torch_forward(model, feed, input_names), output_names)
    return {name: _as_array(value) for name, value in named.items()}


def _chunks(paths: Sequence[str], nbytes: Mapping[str, int], limit: int) -> list[list[str]]:
    chunks: list[list[str]] = [[]]
    used = 0
    for path in paths:
        size = nbytes.get(path, 0)
        if chunks[-1] and used + size > limit:
            chunks.append([])
            used = 0
        chunks[-1].append(path)
        used += size
    return [c for c in chunks if c]


_SCALE_SAMPLE = 1 << 20  # elements the typical magnitude is estimated from


def typical_magnitude(values: np.ndarray) -> float:
    """The median |x| over the nonzero finite elements (of an even sample of at most 2**20 of them).

    Not the maximum: an output such as YOLO's mixes pixel coordinates (hundreds) with scores (< 1), and
    float noise in a layer grows with the size of the values summed into it, not with one element's."""
    flat = np.asarray(values).reshape(-1)
    if flat.size > _SCALE_SAMPLE:
        flat = flat[:: flat.size // _SCALE_SAMPLE]
    magnitudes = np.abs(flat[np.isfinite(flat) & (flat != 0)])
    return float(np.median(magnitudes)) if magnitudes.size else 0.0


def _scaled(tolerance: Tolerance, layer_scale: float, output_scale: float) -> Tolerance:
    factor = layer_scale / output_scale if output_scale > 0 and layer_scale > 0 else 1.0
    return dataclasses.replace(tolerance, atol=tolerance.atol * factor, min_argmax_agreement=None)


def _error_ratio(ref: np.ndarray, cand: np.ndarray, tolerance: Tolerance) -> float:
    ref64, cand64 = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
    if not ref64.size:
        return 0.0
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        err = np.abs(cand64 - ref64)
        both_nan = np.isnan(ref64) & np.isnan(cand64)
        same_inf = np.isinf(ref64) & (ref64 == cand64)
        err[both_nan | same_inf] = 0.0
        limit = tolerance.atol + tolerance.rtol * np.abs(np.nan_to_num(ref64))
        ratio = np.where(limit > 0, err / np.maximum(limit, 1e-300), np.where(err > 0, math.inf, 0.0))
    return math.inf if np.isnan(ratio).any() else float(ratio.max())


@dataclasses.dataclass
class _Layer:
    boundary: ModuleBoundary
    position: int
    accumulator: OutputAccumulator | None = None
    tolerance: Tolerance | None = None
    ref_scale: float = 0.0
    ratio: float = 0.0


def layer_curve(
    model: torch.nn.Module,
    module_map: ModuleMap,
    onnx_path: Path,
    feeds: Sequence[tuple[int, Feed]],
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    output: str,
    tolerance: Tolerance,
    precision: str = "fp32",
    settings: OrtSettings | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    candidate: str = "onnxrt",
    intermediates: Intermediates | None = None,
) -> LayerCurve:
    """Compare every mapped module's Torch output with its ONNX tensor, on `feeds` (index, feed).

    The candidate's tensors come from ONNX Runtime sessions on `onnx_path` exposing them, or, given
    `intermediates`, from it (one pass per sample; `onnx_path` then only gives the graph's order)."""
    import onnx

    start = time.perf_counter()
    if not feeds:
        raise HarnessError("layer-wise comparison needs at least one sample; the run has none")
    settings = settings or OrtSettings()
    proto = onnx.load(str(onnx_path))
    graph = _Graph.of(proto)
    modules = dict(model.named_modules())
    not_compared: list[NotCompared] = []
    layers: dict[str, _Layer] = {}
    for boundary in module_map.modules:
        if boundary.path not in modules:
            not_compared.append(NotCompared(boundary.path, "no module of this path in the Torch model"))
        elif boundary.output is None or boundary.output not in graph.producer:
            not_compared.append(NotCompared(boundary.path, f"its tensor is not in {onnx_path.name}"))
        elif intermediates is not None and not intermediates.provides(boundary.output):
            not_compared.append(
                NotCompared(
                    boundary.path, f"its tensor is not an output of the {intermediates.candidate} engine"
                )
            )
        else:
            layers[boundary.path] = _Layer(boundary, graph.producer[boundary.output])
    ordered = sorted(layers, key=lambda p: (layers[p].position, -layers[p].boundary.depth, p))

    # one measuring pass: which outputs are single tensors, how large, and the output's scale
    first_index, first_feed = feeds[0]
    probe = _Hooks(model, ordered, keep=False)
    try:
        outputs = name_outputs(_torch_forward(model, first_feed, input_names), output_names)
    finally:
        probe.remove()
    if output not in outputs:
        raise HarnessError(f"the Torch model returns no output '{output}' (it returns {list(outputs)})")
    output_scale = typical_magnitude(_as_array(outputs[output]))
    for path in list(ordered):
        reason = None
        if path in probe.not_tensor:
            reason = "its forward returns no single tensor"
        elif probe.calls.get(path, 0) != 1:
            reason = f"called {probe.calls.get(path, 0)} times in one forward pass"
        if reason:
            not_compared.append(NotCompared(path, reason))
            ordered.remove(path)
            del layers[path]

    if intermediates is not None:
        # an engine gives all its marked tensors in each pass: chunks would only run it more often
        chunks = [ordered] if ordered else []
        candidate = intermediates.candidate
    else:
        chunks = _chunks(ordered, probe.nbytes, chunk_bytes)
    graph_outputs = [o.name for o in proto.graph.output]
    for chunk in chunks:
        tensors = list(dict.fromkeys(layers[p].boundary.output for p in chunk))
        session = None
        if intermediates is None:
            session = _session_exposing(proto, graph_outputs, tensors, settings, onnx_path.name)
        for _, feed in feeds:
            hooks = _Hooks(model, chunk, keep=True)
            try:
                _torch_forward(model, feed, input_names)
            finally:
                hooks.remove()
            if intermediates is not None:
                values = intermediates.values(tensors, feed)
            else:
                assert session is not None
                values = dict(zip(tensors, session.run(tensors, dict(feed)), strict=True))
            for path in chunk:
                _update(
                    layers[path],
                    hooks.values.pop(path),
                    values[layers[path].boundary.output],
                    tolerance,
                    output_scale,
                    not_compared,
                )
            del values, hooks
        del session
    compared = [p for p in ordered if layers[p].accumulator is not None]
    curve = _curve(layers, compared, graph)
    return LayerCurve(
        reference="torch",
        candidate=candidate,
        precision=precision,
        model=onnx_path.name,
        output=output,
        samples=tuple(i for i, _ in feeds),
        layers=curve,
        first_divergence=first_divergence(curve),
        not_compared=tuple(not_compared),
        chunks=len(chunks),
        duration_s=time.perf_counter() - start,
    )


def _session_exposing(
    proto: onnx.ModelProto, graph_outputs: list[str], tensors: list[str], settings: OrtSettings, what: str
) -> Any:
    import onnx

    del proto.graph.output[len(graph_outputs) :]
    proto.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors if t not in graph_outputs)
    try:
        return session_of_model(proto, settings, f"{what} with {len(tensors)} tensors exposed")
    finally:
        del proto.graph.output[len(graph_outputs) :]


def _update(
    layer: _Layer,
    ref: np.ndarray,
    cand: np.ndarray,
    tolerance: Tolerance,
    output_scale: float,
    not_compared: list[NotCompared],
) -> None:
    cand = np.asarray(cand)
    if ref.shape != cand.shape:
        if layer.accumulator is None and layer.tolerance is None:
            not_compared.append(
                NotCompared(layer.boundary.path, f"Torch gives shape {ref.shape}, ONNX {cand.shape}")
            )
            layer.tolerance = tolerance  # marks it as seen
        return
    if layer.tolerance is None:
        layer.ref_scale = typical_magnitude(ref)
        layer.tolerance = _scaled(tolerance, layer.ref_scale, output_scale)
        layer.accumulator = OutputAccumulator(
            layer.boundary.path, "torch", "onnxrt", layer.tolerance, worst_k=1
        )
    if layer.accumulator is None:
        return
    layer.accumulator.update(ref, cand)
    layer.ratio = max(layer.ratio, _error_ratio(ref, cand.astype(np.float32), layer.tolerance))


def _curve(layers: Mapping[str, _Layer], compared: Sequence[str], graph: _Graph) -> tuple[LayerError, ...]:
    # each tensor stands for the first (deepest) module of its output
    by_tensor: dict[str, str] = {}
    for path in compared:
        by_tensor.setdefault(layers[path].boundary.output or "", path)
    ratios = {p: layers[p].ratio for p in compared}
    curve = []
    for path in compared:
        layer = layers[path]
        boundary = layer.boundary
        assert layer.accumulator is not None and layer.tolerance is not None
        result = layer.accumulator.result()
        upstream = graph.upstream(graph.span_inputs(boundary), by_tensor, boundary.output or "")
        upstream = tuple(u for u in upstream if u != path)
        # a container's own growth is what its children did not already show
        inner = [p for p in compared if p.startswith(path + ".")]
        before = max((ratios[u] for u in (*upstream, *inner)), default=0.0)
        curve.append(
            LayerError(
                module=path,
                class_name=boundary.class_name,
                source=boundary.source,
                op_types=tuple(boundary.op_types),
                tensor=boundary.output or "",
                position=layer.position,
                max_abs_err=result.max_abs_err if result.max_abs_err is not None else math.inf,
                mean_abs_err=result.mean_abs_err if result.mean_abs_err is not None else math.inf,
                ref_scale=layer.ref_scale,
                scaled_atol=layer.tolerance.atol,
                rtol=layer.tolerance.rtol,
                error_ratio=layer.ratio,
                passed=result.passed,
                upstream=upstream,
                jump=_jump(layer.ratio, before),
            )
        )
    return tuple(curve)


def _jump(ratio: float, before: float) -> float:
    if math.isinf(ratio):  # the first non-finite value is the jump; later ones only carry it on
        return 0.0 if math.isinf(before) else math.inf
    return ratio - before


def error_ratio(ref: np.ndarray, cand: np.ndarray, tolerance: Tolerance) -> float:
    """The worst element's |cand - ref| / (atol + rtol |ref|); inf for a non-finite mismatch."""
    return _error_ratio(ref, cand, tolerance)


def first_divergence(curve: Sequence[LayerError]) -> str | None:
    """The first layer out of tolerance whose upstream layers are within it (else the first out)."""
    passed = {layer.module: layer.passed for layer in curve}
    failing = [layer for layer in curve if not layer.passed]
    for layer in failing:
        if all(passed.get(u, True) for u in layer.upstream):
            return layer.module
    return failing[0].module if failing else None
