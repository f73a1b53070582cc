"""The one policy for ONNX files, for every stage that writes a model (export, surgery, precision).

A model is one file while it fits a protobuf message (2 GiB); a larger one keeps all its weights in
one sidecar beside it, `<model file>.<token>.data` (small tensors stay inline, as the exporters do).
The token is new at every write, so a write interrupted between the two renames leaves the earlier
model with its own sidecar, never with another's. The sidecar is part of the model's artifact:
hashed, cached and restored with it.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import onnx
from onnx import external_data_helper
from trt_harness.models.core.artifacts import Artifact, atomic_path

# A protobuf message cannot exceed 2 GiB. Tests lower this to exercise the sidecar path.
SINGLE_FILE_LIMIT = onnx.checker.MAXIMUM_PROTOBUF
EXTERNAL_MIN_BYTES = 1024

_DEFAULT_DOMAINS = ("", "ai.onnx")

Check = Callable[[Path], None]  # raises if the staged model at the path is not fit to be written


def sidecar_name(model_path: Path) -> str:
    return f"{Path(model_path).name}.{uuid.uuid4().hex[:8]}.data"


def fits_single_file(model: onnx.ModelProto) -> bool:
    return model.ByteSize() < SINGLE_FILE_LIMIT


def external_data_files(model_path: Path) -> tuple[str, ...]:
    """Names (relative to the model's folder) of the files holding its external tensors."""
    model = onnx.load(str(model_path), load_external_data=False)
    names: dict[str, None] = {}
    for tensor in external_data_helper._get_all_tensors(model):
        if external_data_helper.uses_external_data(tensor):
            info = external_data_helper.ExternalDataInfo(tensor)
            names[info.location] = None
    return tuple(names)


def onnx_artifact(run_dir: Path, name: str) -> Artifact:
    """The artifact of the model `name` in `run_dir`, with its sidecar when it has one."""
    folder = Path(name).parent
    sidecars = [(folder / s).as_posix() for s in external_data_files(run_dir / name)]
    return Artifact.of_file(run_dir, name, sidecars=sidecars)


def save_onnx(model: onnx.ModelProto, out_path: Path, check: Check | None = None) -> tuple[Path, ...]:
    """Write `model` to `out_path` following the policy above; returns the files written.

    The model is renamed into place only after everything was written and `check` passed, so a
    failure leaves an earlier model untouched. A model over the limit has its tensors' raw data moved
    out of `model` into the sidecar.
    """
    out_path = Path(out_path)
    earlier = external_data_files(out_path) if out_path.is_file() else ()
    if fits_single_file(model):
        with atomic_path(out_path) as staged:
            onnx.save_model(model, staged, format="protobuf")
            if check is not None:
                check(staged)
        written: tuple[Path, ...] = (out_path,)
    else:
        written = _save_with_sidecar(model, out_path, check)
    for name in earlier:  # the replaced model's sidecar, now referenced by nothing
        if out_path.parent / name not in written:
            (out_path.parent / name).unlink(missing_ok=True)
    return written


def _save_with_sidecar(model: onnx.ModelProto, out_path: Path, check: Check | None) -> tuple[Path, ...]:
    data_path = out_path.with_name(sidecar_name(out_path))
    with atomic_path(out_path) as staged, tempfile.TemporaryDirectory(dir=out_path.parent) as staging:
        external_data_helper.convert_model_to_external_data(
            model, all_tensors_to_one_file=True, location=data_path.name, size_threshold=EXTERNAL_MIN_BYTES
        )
        external_data_helper.write_external_data_tensors(model, staging)
        checked = Path(staging) / out_path.name  # beside its data, where the checker looks for it
        onnx.save_model(model, checked, format="protobuf")
        if check is not None:
            check(checked)
        os.replace(checked, staged)
        os.replace(Path(staging) / data_path.name, data_path)
    return (out_path, data_path)


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Count nodes by op type, including nodes inside control-flow subgraphs (If/Loop/Scan bodies).

    Ops outside the default ONNX domain are keyed `domain::op` so custom ops stay distinguishable.
    """
    counts: Counter[str] = Counter()

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            key = node.op_type if node.domain in _DEFAULT_DOMAINS else f"{node.domain}::{node.op_type}"
            counts[key] += 1
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    visit(attribute.g)
                elif attribute.type == onnx.AttributeProto.GRAPHS:
                    for subgraph in attribute.graphs:
                        visit(subgraph)

    visit(model.graph)
    return dict(sorted(counts.items()))
