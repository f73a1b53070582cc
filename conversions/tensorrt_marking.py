"""Ahead-of-time TensorRT builds of the final ONNX with the mapped module outputs marked.

Three builds of the same network: unmarked, with the mapped tensors marked as debug tensors
(`INetworkDefinition.mark_debug`, where the flavor has it) and with them marked as extra outputs
(`mark_output`). Each records the network's layer count and the engine's, so the report can say what
marking costs: an output must be materialized, which stops the builder from fusing across it, while
a debug tensor is meant not to change the engine's fusions.

The engine's layers are counted from the builder's own layer list, which it logs at profiling
verbosity DETAILED once the engine is built. TensorRT's engine inspector would give the same list but
needs a deserialized engine, and deserializing needs CUDA: this works on a machine without a GPU.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from trt_harness.conversions.tensorrt_build import (
    BuildLog,
    build_target_tag,
    config_loader,
    engine_path_for,
)
from trt_harness.conversions.tensorrt_flavor import select_flavor
from trt_harness.models.core.artifacts import write_bytes_atomic
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.recipe import BuildOptions, ShapeRange
from trt_harness.models.results.localize import MarkedBuild, Marking, TensorRTMarking
from trt_harness.models.results.stages import TensorRTFlavor

MARKINGS: tuple[Marking, ...] = ("none", "debug", "output")

# the builder's detailed layer list: one VERBOSE message "Layers:" then one "Name: ..." line per layer
_LAYER_LIST = "Layers:"
_LAYER_OUTPUT = re.compile(r"\{ Name: (?P<name>[^,]+),")


def _layer_list(message: str) -> list[tuple[str, list[str]]]:
    """(layer name, its output tensor names) for each layer of a logged layer list."""
    layers = []
    for line in message.splitlines():
        if not line.startswith("Name:"):
            continue
        name = line[len("Name:") :].split(",", 1)[0].strip()
        outputs = line.split("Outputs: [", 1)[1] if "Outputs: [" in line else ""
        layers.append((name, [m["name"].strip() for m in _LAYER_OUTPUT.finditer(outputs)]))
    return layers


@contextlib.contextmanager
def _layer_lists() -> Iterator[list[str]]:
    """Keep each layer list the TensorRT logger is given (on top of `BuildLog.capture`, which forwards)."""
    from polygraphy.backend.trt.util import get_trt_logger

    logger_type = type(get_trt_logger())
    forward = logger_type.log
    kept: list[str] = []  # "Layers:" messages, in the order logged

    def keep(logger: Any, severity: Any, message: str) -> None:
        if message.startswith(_LAYER_LIST):
            kept.append(message)
        forward(logger, severity, message)

    logger_type.log = keep
    try:
        yield kept
    finally:
        logger_type.log = forward


def has_mark_debug(trt: Any) -> bool:
    """Whether the flavor's networks can mark debug tensors (TensorRT 10 and TensorRT for RTX have it)."""
    return hasattr(trt.INetworkDefinition, "mark_debug")


def _tensors_of(network: Any) -> dict[str, Any]:
    found = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            tensor = layer.get_output(j)
            found.setdefault(tensor.name, tensor)
    return found


def _mark(network: Any, tensors: Sequence[Any], marking: Marking) -> int:
    """Mark the tensors that are not graph outputs already; how many the network accepted."""
    outputs = {network.get_output(i).name for i in range(network.num_outputs)}
    fresh = [t for t in tensors if t.name not in outputs]
    if marking == "debug":
        return sum(bool(network.mark_debug(t)) for t in fresh)
    if marking == "output":
        for tensor in fresh:
            network.mark_output(tensor)
        return len(fresh)
    return 0


def _build_one(
    flavor: TensorRTFlavor,
    onnx_path: Path,
    out_dir: Path,
    options: BuildOptions,
    shape_ranges: Mapping[str, ShapeRange],
    names: Sequence[str],
    marking: Marking,
    precision: str,
) -> tuple[MarkedBuild, tuple[str, ...]]:
    """One build; also the asked-for names the parsed network has no tensor for."""
    from polygraphy.backend.trt import EngineBytesFromNetwork, NetworkFromOnnxPath, PostprocessConfig

    trt = flavor.module()
    config = PostprocessConfig(
        config_loader(flavor, options, shape_ranges, precision, (), out_dir, onnx_path),
        # the builder logs its layer list only at this verbosity
        lambda builder, network, cfg: setattr(cfg, "profiling_verbosity", trt.ProfilingVerbosity.DETAILED),
    )
    typed = {"strongly_typed": True} if flavor.strongly_typed and not flavor.is_rtx else {}
    start = time.perf_counter()
    with BuildLog(trt).capture() as log, _layer_lists() as lists:
        try:
            builder, network, parser = NetworkFromOnnxPath(str(onnx_path), **typed)()
        except Exception as e:
            return MarkedBuild(marking, built=False, reason=f"ONNX parse failed: {e}"), ()
        tensors = _tensors_of(network)
        original_outputs = {network.get_output(i).name for i in range(network.num_outputs)}
        missing = tuple(n for n in names if n not in tensors)
        if marking == "debug" and not has_mark_debug(trt):
            reason = f"{flavor.display_name} {flavor.version} has no INetworkDefinition.mark_debug"
            return MarkedBuild(marking, built=False, reason=reason), missing
        marked = _mark(network, [tensors[n] for n in names if n in tensors], marking)
        network_layers = network.num_layers
        network_outputs = tuple(network.get_output(i).name for i in range(network.num_outputs))
        try:
            plan = EngineBytesFromNetwork((builder, network, parser), config=config)()
        except Exception as e:
            messages = [m for m in log.getvalue().splitlines() if m.strip()][-3:]
            reason = f"engine build failed: {'; '.join(messages) or e}"
            return MarkedBuild(marking, built=False, marked=marked, reason=reason), missing
    seconds = time.perf_counter() - start
    data = bytes(plan)
    counts = {len(_layer_list(message)) for message in lists}
    # one list per build; were there several (one per target?) of different lengths, none is "the" count
    layers = _layer_list(lists[0]) if len(counts) == 1 else None
    produced = {o for _, outputs in layers or () for o in outputs}
    engine = None
    if marking != "none":  # the unmarked engine is the build stage's
        path = engine_path_for(out_dir, onnx_path.stem, flavor, options, precision)
        path = path.with_name(path.name.replace(".engine", f".{marking}-marked.engine"))
        write_bytes_atomic(path, data)
        engine = path.name
    record = MarkedBuild(
        marking,
        built=True,
        marked=marked,
        network_layers=network_layers,
        network_outputs=network_outputs,
        engine_layers=len(layers) if layers is not None else None,
        # a tensor that already was a graph output says nothing about what marking did
        marked_in_engine=tuple(n for n in names if n in produced and n not in original_outputs),
        engine=engine,
        plan_size_bytes=len(data),
        build_seconds=seconds,
        reason=None if layers is not None else _uncounted(counts),
    )
    return record, missing


def _uncounted(counts: set[int]) -> str:
    if not counts:
        return "the builder logged no layer list: engine layers not counted"
    return f"the builder logged layer lists of {sorted(counts)} layers: engine layers not counted"


def build_marked(
    onnx_path: Path,
    out_dir: Path,
    options: BuildOptions,
    shape_ranges: Mapping[str, ShapeRange],
    tensors: Sequence[str],
    precision: str = "fp32",
    markings: Sequence[Marking] = MARKINGS,
) -> TensorRTMarking:
    """Build `onnx_path` once per marking of `tensors` (ahead of time), writing the marked engines into
    `out_dir`; where no installed TensorRT builds here, the record says why (`not_built`)."""
    flavor = select_flavor()
    names = tuple(dict.fromkeys(tensors))
    if flavor is None:
        return TensorRTMarking("", onnx_path.name, names, not_built="no TensorRT installed")
    label = f"{flavor.display_name} {flavor.version}"
    try:
        _, targets = build_target_tag(flavor, options)
    except HarnessError as e:  # full TensorRT without a GPU
        return TensorRTMarking(label, onnx_path.name, names, not_built=str(e))
    trt = flavor.module()
    builds = []
    missing: tuple[str, ...] = ()
    for marking in markings:
        build, missing_here = _build_one(
            flavor, onnx_path, out_dir, options, shape_ranges, names, marking, precision
        )
        builds.append(build)
        missing = missing or missing_here
    return TensorRTMarking(
        label,
        onnx_path.name,
        names,
        not_in_network=missing,
        supports_debug=has_mark_debug(trt),
        builds=tuple(builds),
        targets=targets,
    )
