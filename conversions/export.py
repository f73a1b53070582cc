"""Torch -> ONNX export driver: either torch.onnx exporter, the recipe's replacements, checked names."""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from trt_harness.conversions import onnx_files, replacements
from trt_harness.conversions.outputs import (
    Produced,
    check_outputs,
    derived_output_names,
    name_outputs,
)
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.recipe import Feed, Recipe
from trt_harness.models.results.stages import ExportDetails

if TYPE_CHECKING:
    import torch


class ExportFailed(HarnessError):
    """The exporter or the ONNX checker rejected the model."""


def outputs_as_tuple(model: torch.nn.Module, output_names: tuple[str, ...]) -> torch.nn.Module:
    """Wrap a model so the exporter sees a flat tuple of its output tensors, in pytree order.

    This is what torch.onnx does with nested outputs (a dict's values in insertion order, lists of
    dicts depth first) and `output_names` labels them by position (see `conversions.outputs`). A
    recipe whose names are the model's dict keys in another order therefore mislabels outputs, exactly
    as a hand-written export would; the Torch reference keeps the true names, so the compare stage's
    cross-match (and the declared outputs' check) reports it as an ordering mismatch.
    """
    import torch

    class OutputsAsTuple(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: torch.Tensor) -> Any:
            # checks the count against the names; keeps the model's own (pytree) order
            return tuple(name_outputs(self.model(*args), output_names).values())

    return OutputsAsTuple().eval()


def onnx_outputs_produced(proto: Any) -> dict[str, Produced]:
    """The ONNX graph's outputs as the declared-outputs check reads them (symbolic dims fit any size)."""
    import onnx

    produced = {}
    for output in proto.graph.output:
        tensor = output.type.tensor_type
        dims: tuple[int | str | None, ...] = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim
        )
        dtype = (
            str(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
            if tensor.elem_type != onnx.TensorProto.UNDEFINED
            else None
        )
        produced[output.name] = Produced(dims if tensor.HasField("shape") else (), dtype)
    return {n: p for n, p in produced.items() if p.shape or p.dtype}


def export_args(recipe: Recipe, feed: Feed) -> tuple[np.ndarray, ...]:
    """Example inputs for tracing. A dynamic dim of size 1 is tiled to 2: the torch.export-based exporter
    specialises size-1 dims to constants, which would make the exported batch static."""
    arrays = []
    for spec in recipe.inputs:
        array = feed[spec.name]
        for axis in spec.dynamic_axes:
            if array.shape[axis] == 1:
                array = np.concatenate([array, array], axis=axis)
        arrays.append(array)
    return tuple(arrays)


def _dynamo_dynamic_shapes(recipe: Recipe) -> tuple[dict[int, Any], ...]:
    import torch

    dims: dict[str, Any] = {}
    shapes = []
    for spec in recipe.inputs:
        entry = {}
        for axis, dim_name in spec.dynamic_axes.items():
            if dim_name not in dims:
                bounds = recipe.shape_ranges.get(spec.name)
                max_size = bounds.max[axis] if bounds else None
                dims[dim_name] = (
                    torch.export.Dim(dim_name, min=1, max=max_size)
                    if max_size
                    else torch.export.Dim(dim_name)
                )
            entry[axis] = dims[dim_name]
        shapes.append(entry)
    return tuple(shapes)


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _first_line(error: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    return text.splitlines()[0] if text else "(no message)"


def _replacements_applied(recipe: Recipe) -> contextlib.AbstractContextManager[Any]:
    if not recipe.export.replacements:
        return contextlib.nullcontext()
    return replacements.applied(recipe.export.replacements, recipe.export.static_dims)


def _parameter_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def onnx_from_torch(model: torch.nn.Module, recipe: Recipe, feed: Feed, out_path: Path) -> ExportDetails:
    """Export `model` to `out_path`, check it, and check its I/O names.

    The file follows the one ONNX policy (`conversions.onnx_files`): weights inside while they fit,
    else in one sidecar beside it.
    """
    import onnx
    import torch

    options = recipe.export
    arrays = export_args(recipe, feed)
    args = tuple(torch.from_numpy(a) for a in arrays)
    output_names = recipe.output_names
    if not output_names:  # named by the returned structure: one forward pass tells
        with torch.no_grad():
            output_names = derived_output_names(model(*args))
    wrapped = outputs_as_tuple(model, output_names)
    common: dict[str, Any] = {
        "input_names": list(recipe.input_names),
        "output_names": list(output_names),
        "opset_version": options.opset,
    }
    # headroom for the graph itself: the weights alone must leave room in the 2 GiB message
    large = _parameter_bytes(model) > onnx_files.SINGLE_FILE_LIMIT * 0.9
    if options.exporter == "dynamo":
        # the wrapper's forward takes *args, so the shapes of all inputs sit in one tuple
        dynamic_shapes = (_dynamo_dynamic_shapes(recipe),)
        kwargs = {**common, "dynamo": True, "external_data": large, "dynamic_shapes": dynamic_shapes}
    else:
        dynamic_axes = {spec.name: spec.dynamic_axes for spec in recipe.inputs if spec.dynamic_axes}
        kwargs = {**common, "dynamo": False, "dynamic_axes": dynamic_axes}

    # the exporter logs one warning per torchvision op it skips; nothing a user can act on
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # the exporters write sidecars of their own naming beside their output: export into a scratch
    # folder, then write the model under our policy
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=f".{out_path.name}.") as scratch:
        staged = Path(scratch) / out_path.name
        try:
            with (
                _replacements_applied(recipe) as applied,
                torch.no_grad(),
                warnings.catch_warnings(),
                contextlib.redirect_stdout(None),
            ):
                warnings.simplefilter("ignore")
                torch.onnx.export(wrapped, args, str(staged), **kwargs)
        except HarnessError:
            raise
        except Exception as e:
            root = _root_cause(e)
            raise ExportFailed(
                f"{options.exporter} export of recipe '{recipe.name}' failed: {type(root).__name__}: "
                f"{_first_line(root)}. "
                f"Run `harness scan {recipe.name}` to list ops that need a replacement"
            ) from e
        proto = onnx.load(str(staged))

        def check(path: Path) -> None:
            try:
                onnx.checker.check_model(str(path), full_check=False)
            except onnx.checker.ValidationError as e:
                raise ExportFailed(f"exported ONNX for '{recipe.name}' fails onnx.checker: {e}") from e

        actual_inputs = tuple(i.name for i in proto.graph.input)
        actual_outputs = tuple(o.name for o in proto.graph.output)
        if actual_inputs != recipe.input_names or actual_outputs != output_names:
            raise ExportFailed(
                f"exported ONNX I/O names differ from recipe '{recipe.name}': inputs {list(actual_inputs)} "
                f"(expected {list(recipe.input_names)}), outputs {list(actual_outputs)} (expected "
                f"{list(output_names)}); the model's forward signature or return value does not match the recipe"
            )
        try:
            feed_of_args = dict(zip(recipe.input_names, arrays, strict=True))
            ordering = check_outputs(recipe, onnx_outputs_produced(proto), "ONNX graph", feed_of_args)
        except HarnessError as e:
            raise ExportFailed(str(e)) from e
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), options.opset)
        onnx_files.save_onnx(proto, out_path, check)
    return ExportDetails(
        onnx=out_path.name,
        exporter=options.exporter,
        opset=opset,
        inputs=actual_inputs,
        outputs=actual_outputs,
        replacements=options.replacements,
        torch=torch.__version__,
        replacement_calls=tuple(applied.calls) if applied is not None else (),
        unused_replacements=tuple(applied.unused) if applied is not None else (),
        ordering_mismatches=ordering,
    )
