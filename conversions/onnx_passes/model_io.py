"""Save a model atomically, and run it on ONNX Runtime's CPU provider, whatever its size."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from conversions.onnx_files import fits_single_file, save_onnx
from models.core.errors import HarnessError

if TYPE_CHECKING:
    import onnxruntime


def save_model(model: onnx.ModelProto, out_path: Path) -> list[Path]:
    """Check and write `model` to `out_path` under the project's one ONNX file policy (`onnx_files`)."""
    return list(save_onnx(model, out_path, check=lambda staged: _check(staged, out_path)))


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
