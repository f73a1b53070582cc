"""Run a list of passes over an ONNX file, proving on ONNX Runtime that no pass changed the outputs."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from conversions.onnx_files import op_counts
from conversions.onnx_passes.model_io import ort_outputs, ort_session, save_model
from conversions.onnx_passes.registry import PassContext, get_pass
from models.core.errors import HarnessError, UsageError
from models.results.stages import PassReport

Feed = dict[str, np.ndarray]
Outputs = list[dict[str, np.ndarray]]


def run_passes(
    model_path: Path,
    out_path: Path,
    pass_names: Sequence[str],
    *,
    static_dims: Mapping[str, Mapping[int, int]] | None = None,
    check_feeds: Sequence[Feed] | None = None,
    rtol: float = 1e-6,
    atol: float = 0.0,
) -> list[PassReport]:
    """Apply `pass_names` in order to the model at `model_path` and write the result to `out_path`.

    With `check_feeds`, every pass is followed by an ONNX Runtime run whose outputs must match the
    run before it within |after - before| <= atol + rtol * |before|; a mismatch raises HarnessError
    naming the pass and the output. Graph input and output names never change.
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

    graph = gs.import_onnx(model)
    before = ort_outputs(ort_session(model, "before the passes"), feeds, "before the passes") if feeds else []
    current = model
    reports = []
    for name, graph_pass in passes:
        counts_before = op_counts(current)
        started = time.perf_counter()
        try:
            outcome = graph_pass(graph, context)
            duration = time.perf_counter() - started
            current = _export(graph, like=model)
        except HarnessError:
            raise
        except Exception as e:  # a pass is a plugin: whatever it raises, say which pass on which model
            raise HarnessError(
                f"ONNX pass '{name}' failed on {model_path}: {type(e).__name__}: {e}; "
                "drop it from the recipe's surgery_passes or fix the pass"
            ) from e
        if _interface(current) != interface:
            raise HarnessError(
                f"ONNX pass '{name}' changed the graph's inputs/outputs from {interface} to "
                f"{_interface(current)}; passes must keep them, so fix the pass"
            )
        max_abs_diff = None
        if feeds:
            stage = f"after pass '{name}'"
            after = ort_outputs(ort_session(current, stage), feeds, stage)
            max_abs_diff = _max_abs_diff(before, after, name, rtol=rtol, atol=atol)
            before = after
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
    save_model(current, out_path)
    return reports


def _export(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    exported = gs.export_onnx(graph)
    exported.model_version = like.model_version
    exported.domain = like.domain
    exported.doc_string = like.doc_string
    exported.metadata_props.extend(like.metadata_props)
    return exported


def _interface(model: onnx.ModelProto) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Names of the graph's inputs and outputs, in order."""
    # IR < 4 lists initializers among the inputs; they are weights, not part of the interface
    weights = {init.name for init in model.graph.initializer}
    inputs = tuple(i.name for i in model.graph.input if i.name not in weights)
    return inputs, tuple(o.name for o in model.graph.output)


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
    expected = set(_interface(model)[0])
    for index, feed in enumerate(feeds):
        if set(feed) != expected:
            raise UsageError(
                f"check feed #{index} has inputs {sorted(feed)} but the model takes {sorted(expected)}; "
                "give one array per model input"
            )


def _max_abs_diff(before: Outputs, after: Outputs, pass_name: str, *, rtol: float, atol: float) -> float:
    worst = 0.0
    for index, (expected, actual) in enumerate(zip(before, after, strict=True)):
        for output, reference in expected.items():
            result = actual[output]
            if result.shape != reference.shape or result.dtype != reference.dtype:
                raise HarnessError(
                    f"ONNX pass '{pass_name}' changed output '{output}' from {reference.dtype}{list(reference.shape)} "
                    f"to {result.dtype}{list(result.shape)} (check feed #{index}); fix the pass or drop it"
                )
            diff, within = _compare(reference, result, rtol=rtol, atol=atol)
            if not within:
                raise HarnessError(
                    f"ONNX pass '{pass_name}' changed output '{output}' (check feed #{index}): "
                    f"max |after - before| = {diff:.6g}, allowed atol={atol:g} + rtol={rtol:g}·|before|; "
                    "fix the pass or drop it from the recipe's surgery_passes"
                )
            worst = max(worst, diff)
    return worst


def _compare(reference: np.ndarray, result: np.ndarray, *, rtol: float, atol: float) -> tuple[float, bool]:
    """Max |result - reference| (NaN and Inf only match themselves) and whether every element is within tolerance."""
    if reference.size == 0:
        return 0.0, True
    ref = reference.astype(np.float64)
    got = result.astype(np.float64)
    same = (ref == got) | (np.isnan(ref) & np.isnan(got))
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(got - ref))
    diff = np.where(np.isnan(diff), np.inf, diff)
    bound = atol + rtol * np.where(np.isfinite(ref), np.abs(ref), 0.0)
    return float(diff.max()), bool(np.all(diff <= bound))
