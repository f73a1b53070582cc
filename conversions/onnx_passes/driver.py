"""Run a list of passes over an ONNX file, proving on ONNX Runtime that no pass changed the outputs."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
from trt_harness.conversions.onnx_files import op_counts
from trt_harness.conversions.onnx_passes.model_io import GraphRoundTrip, save_model
from trt_harness.conversions.onnx_passes.output_check import Mismatch, describe, max_difference
from trt_harness.conversions.onnx_passes.registry import PassContext, get_pass
from trt_harness.conversions.ort_session import OrtSettings, run_feeds, session_of_model
from trt_harness.models.core.errors import HarnessError, UsageError
from trt_harness.models.results.stages import PassReport

Feed = dict[str, object]  # input name -> numpy array (a list for a sequence input)
Outputs = list[dict[str, object]]
Interface = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]


def run_passes(
    model_path: Path,
    out_path: Path,
    pass_names: Sequence[str],
    *,
    static_dims: Mapping[str, Mapping[int, int]] | None = None,
    check_feeds: Sequence[Feed] | None = None,
    rtol: float = 1e-6,
    atol: float = 0.0,
    check_settings: OrtSettings | None = None,
    run_settings: OrtSettings | None = None,
) -> list[PassReport]:
    """Apply `pass_names` in order to the model at `model_path` and write the result to `out_path`.

    With `check_feeds`, every pass is followed by an ONNX Runtime run (`check_settings`, default: the
    graph as written, `OrtSettings.as_written()`) whose outputs must match the run before it: floats
    within |after - before| <= atol + rtol * |before|, everything else (integers, bools, strings,
    sequences, optionals) equal; a mismatch raises HarnessError naming the pass and the output. Graph
    input and output names and types never change. With `run_settings` (the session the run stage
    will create), the final model must load in that session too, and run on the first feed.
    """
    passes = [(name, get_pass(name)) for name in pass_names]
    model_path, out_path = Path(model_path), Path(out_path)
    if not model_path.is_file():
        raise UsageError(f"ONNX model {model_path} does not exist; export the model first")
    model = onnx.load(model_path)
    context = PassContext(_validated_static_dims(model, static_dims or {}))
    feeds = list(check_feeds or [])
    _check_feed_names(model, feeds)
    interface = _interface(model)
    check = check_settings or OrtSettings.as_written()

    try:
        graph, trip = GraphRoundTrip.import_model(model)
        current = trip.export_model(graph, like=model)
    except Exception as e:  # graphsurgeon's errors have no common type
        raise HarnessError(
            f"onnx-graphsurgeon cannot import and export {model_path} unchanged (before any pass ran): "
            f"{type(e).__name__}: {e}; drop the recipe's surgery_passes, or report the model's pattern"
        ) from e
    before = _outputs(model, feeds, check, "before the passes") if feeds else []
    round_trip, checked = current, current.SerializeToString()
    reports = []
    for name, graph_pass in passes:
        counts_before = op_counts(current)
        started = time.perf_counter()
        try:
            outcome = graph_pass(graph, context)
            duration = time.perf_counter() - started
            current = trip.export_model(graph, like=model)
        except HarnessError:
            raise
        except Exception as e:  # a pass is a plugin: whatever it raises, say which pass on which model
            raise HarnessError(
                f"ONNX pass '{name}' failed on {model_path}: {type(e).__name__}: {e}; "
                "drop it from the recipe's surgery_passes or fix the pass"
            ) from e
        if _interface(current) != interface:
            raise HarnessError(
                f"ONNX pass '{name}' changed the graph's inputs/outputs from {_text(interface)} to "
                f"{_text(_interface(current))}; passes must keep them, so fix the pass"
            )
        max_abs_diff = None
        if feeds:
            serialized = current.SerializeToString()
            if serialized != checked:  # a model unchanged byte for byte computes what it computed
                try:
                    after = _outputs(current, feeds, check, f"after pass '{name}'")
                    max_abs_diff = _max_abs_diff(before, after, f"ONNX pass '{name}'", rtol=rtol, atol=atol)
                except HarnessError:
                    if round_trip is not None:  # the first change: it may be graphsurgeon's own
                        _check_round_trip(round_trip, before, feeds, check, rtol=rtol, atol=atol)
                    raise
                before, checked, round_trip = after, serialized, None
            else:
                max_abs_diff = 0.0
        reports.append(
            PassReport(
                name=name,
                modified=outcome.modified,
                changes=tuple(outcome.changes),
                op_counts_before=counts_before,
                op_counts_after=op_counts(current),
                duration_s=duration,
                max_abs_diff=max_abs_diff,
            )
        )
    if run_settings is not None:
        _check_run_session(current, run_settings, feeds[:1], out_path)
    save_model(current, out_path, source=model_path)
    return reports


def _outputs(model: onnx.ModelProto, feeds: Sequence[Feed], settings: OrtSettings, stage: str) -> Outputs:
    what = f"the model {stage}"
    return run_feeds(session_of_model(model, settings, what), feeds, stage)


def _check_round_trip(
    round_trip: onnx.ModelProto,
    before: Outputs,
    feeds: Sequence[Feed],
    check: OrtSettings,
    *,
    rtol: float,
    atol: float,
) -> None:
    """Raise if onnx-graphsurgeon's import/export alone already changed the model (before any pass)."""
    culprit = "onnx-graphsurgeon's import and export of the model (before any pass ran)"
    after = _outputs(round_trip, feeds, check, f"after {culprit}")
    _max_abs_diff(before, after, culprit, rtol=rtol, atol=atol)


def _check_run_session(
    model: onnx.ModelProto, settings: OrtSettings, feeds: Sequence[Feed], out_path: Path
) -> None:
    """The final model loads (and runs) in the very session the run stage will create."""
    what = f"the final model {out_path.name} in the session the run stage creates"
    run_feeds(session_of_model(model, settings, what), feeds, f"of {what} ({settings.describe()})")


def _interface(model: onnx.ModelProto) -> Interface:
    """Names and types (without shapes) of the graph's inputs and outputs, in order."""
    # IR < 4 lists initializers among the inputs; they are weights, not part of the interface
    weights = {init.name for init in model.graph.initializer}
    inputs = tuple((i.name, _type_text(i.type)) for i in model.graph.input if i.name not in weights)
    return inputs, tuple((o.name, _type_text(o.type)) for o in model.graph.output)


def _type_text(value_type: onnx.TypeProto) -> str:
    """`tensor(float)`, `seq(tensor(int64))`, `optional(seq(tensor(float)))`: a type without its shape."""
    kind = value_type.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        elem = getattr(value_type, kind).elem_type
        name = onnx.TensorProto.DataType.Name(elem).lower() if elem else "undefined"
        return f"{'tensor' if kind == 'tensor_type' else 'sparse_tensor'}({name})"
    if kind == "sequence_type":
        return f"seq({_type_text(value_type.sequence_type.elem_type)})"
    if kind == "optional_type":
        return f"optional({_type_text(value_type.optional_type.elem_type)})"
    if kind == "map_type":
        key = onnx.TensorProto.DataType.Name(value_type.map_type.key_type).lower()
        return f"map({key}, {_type_text(value_type.map_type.value_type)})"
    return kind or "untyped"


def _text(interface: Interface) -> str:
    inputs, outputs = interface
    show = lambda values: ", ".join(f"{name}: {kind}" for name, kind in values)  # noqa: E731
    return f"inputs ({show(inputs)}) -> outputs ({show(outputs)})"


def _validated_static_dims(
    model: onnx.ModelProto, static_dims: Mapping[str, Mapping[int, int]]
) -> dict[str, dict[int, int]]:
    inputs = {i.name: i.type.tensor_type.shape.dim for i in model.graph.input}
    validated: dict[str, dict[int, int]] = {}
    for name, dims in static_dims.items():
        if name not in inputs:
            raise UsageError(
                f"static_dims names '{name}', which is not an input of the model (inputs: {', '.join(inputs)}); "
                "fix the recipe's export.static_dims"
            )
        declared = inputs[name]
        for axis, size in dims.items():
            if not 0 <= axis < len(declared):
                raise UsageError(
                    f"static_dims gives axis {axis} of input '{name}', which has rank {len(declared)}; "
                    "fix the recipe's export.static_dims"
                )
            if declared[axis].HasField("dim_value") and declared[axis].dim_value != size:
                raise UsageError(
                    f"static_dims says axis {axis} of input '{name}' is {size}, but the model declares "
                    f"{declared[axis].dim_value}; fix the recipe's export.static_dims"
                )
        validated[name] = dict(dims)
    return validated


def _check_feed_names(model: onnx.ModelProto, feeds: Sequence[Feed]) -> None:
    expected = {name for name, _ in _interface(model)[0]}
    for index, feed in enumerate(feeds):
        if set(feed) != expected:
            raise UsageError(
                f"check feed #{index} has inputs {sorted(feed)} but the model takes {sorted(expected)}; "
                "give one array per model input"
            )


def _max_abs_diff(before: Outputs, after: Outputs, culprit: str, *, rtol: float, atol: float) -> float:
    """The largest float difference over all outputs and feeds; raises naming `culprit` on a mismatch."""
    worst = 0.0
    for index, (expected, actual) in enumerate(zip(before, after, strict=True)):
        for output, reference in expected.items():
            diff = max_difference(reference, actual[output], rtol=rtol, atol=atol)
            if isinstance(diff, Mismatch):
                raise HarnessError(
                    f"{culprit} changed output '{output}' (check feed #{index}): {diff} "
                    f"(before: {describe(reference)}, after: {describe(actual[output])}); "
                    "fix the pass or drop it from the recipe's surgery_passes"
                )
            worst = max(worst, diff)
    return worst
