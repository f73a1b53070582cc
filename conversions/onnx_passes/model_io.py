"""Save a model atomically, and run it on ONNX Runtime's CPU provider, whatever its size."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import external_data_helper

from harness.artifacts import atomic_path
from harness.errors import HarnessError

if TYPE_CHECKING:
    import onnxruntime

# A protobuf message cannot exceed 2 GiB; larger models keep their weights in `<model>.data`.
_SINGLE_FILE_LIMIT = onnx.checker.MAXIMUM_PROTOBUF
# Small tensors stay inline even in a model with external data, as the exporters do.
_EXTERNAL_MIN_BYTES = 1024


def fits_single_file(model: onnx.ModelProto) -> bool:
    return model.ByteSize() < _SINGLE_FILE_LIMIT


def save_model(model: onnx.ModelProto, out_path: Path) -> list[Path]:
    """Check and write `model` to `out_path` (weights inline, or in `<name>.data` if over 2 GiB).

    Returns the files written. The model file is renamed into place only after everything was written
    and the checker passed, so a failure leaves an earlier model untouched. A model over 2 GiB has its
    tensors' raw data moved out of `model` into the data file.
    """
    out_path = Path(out_path)
    if fits_single_file(model):
        with atomic_path(out_path) as staged:
            onnx.save_model(model, staged, format="protobuf")
            _check(staged, out_path)
        return [out_path]
    data_path = out_path.with_name(f"{out_path.name}.data")
    with atomic_path(out_path) as staged, tempfile.TemporaryDirectory(dir=out_path.parent) as staging:
        external_data_helper.convert_model_to_external_data(
            model, all_tensors_to_one_file=True, location=data_path.name, size_threshold=_EXTERNAL_MIN_BYTES
        )
        external_data_helper.write_external_data_tensors(model, staging)
        checked = Path(staging) / out_path.name  # beside its data, where the checker looks for it
        onnx.save_model(model, checked, format="protobuf")
        _check(checked, out_path)
        os.replace(checked, staged)
        os.replace(Path(staging) / data_path.name, data_path)
    return [out_path, data_path]


def _check(staged: Path, final: Path) -> None:
    try:
        onnx.checker.check_model(str(staged))
    except onnx.checker.ValidationError as e:
        raise HarnessError(
            f"the model after the ONNX passes fails onnx.checker, so {final} was not written: {e}; "
            "run the passes one at a time to find the one that broke it"
        ) from e


def ort_session(model: onnx.ModelProto, stage: str) -> onnxruntime.InferenceSession:
    """A CPU session that runs the graph as written (ORT's own rewrites off, so only our edits count)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3

    def load(source: bytes | str) -> onnxruntime.InferenceSession:
        try:
            return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except (
            Exception
        ) as e:  # ORT's exception types (Fail, InvalidGraph, ...) share no base below Exception
            raise HarnessError(f"ONNX Runtime cannot load the model {stage}: {e}") from e

    if fits_single_file(model):
        return load(model.SerializeToString())
    with tempfile.TemporaryDirectory(prefix="onnx_passes_") as workdir:
        path = Path(workdir) / "model.onnx"
        copy = onnx.ModelProto()
        copy.CopyFrom(model)  # saving with external data strips the weights out of the proto it saves
        onnx.save_model(copy, path, save_as_external_data=True, location="model.onnx.data")
        return load(str(path))  # the session holds the weights once created


def ort_outputs(
    session: onnxruntime.InferenceSession, feeds: Sequence[dict[str, np.ndarray]], stage: str
) -> list[dict[str, np.ndarray]]:
    names = [output.name for output in session.get_outputs()]
    results = []
    for index, feed in enumerate(feeds):
        try:
            values = session.run(names, feed)
        except Exception as e:  # ORT's exception types share no base below Exception
            raise HarnessError(f"ONNX Runtime fails on check feed #{index} {stage}: {e}") from e
        results.append(dict(zip(names, values, strict=True)))
    return results
