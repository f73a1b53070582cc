"""Read a source model, check node names a caller refers to, and write a variant atomically."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import onnx
from trt_harness.conversions.onnx_files import save_onnx
from trt_harness.models.core.errors import HarnessError, UsageError


def load_model(src: Path) -> onnx.ModelProto:
    """The model with its weights (external data loaded from beside `src`)."""
    src = Path(src)
    if not src.is_file():
        raise UsageError(f"ONNX model {src} does not exist; export the model first (`harness convert`)")
    try:
        return onnx.load(src)
    except Exception as e:  # protobuf and onnx raise several untyped errors for corrupt files
        raise UsageError(f"cannot read ONNX model {src}: {e}; re-export it") from e


def node_names(model: onnx.ModelProto) -> set[str]:
    """Names of the top-level nodes (the only ones a block list can name)."""
    return {node.name for node in model.graph.node if node.name}


def require_nodes(
    model: onnx.ModelProto, names: Iterable[str], src: Path, option: str, suggested_by: str
) -> tuple[str, ...]:
    """`names` in order, deduplicated, after checking every one names a node of `model`."""
    wanted = tuple(dict.fromkeys(names))
    known = node_names(model)
    unknown = [name for name in wanted if name not in known]
    if unknown:
        sample = ", ".join(sorted(known)[:8])
        raise UsageError(
            f"{option} names nodes that are not in {src}: {unknown}; use node names of the model "
            f"(e.g. {sample}), such as the ones {suggested_by} proposes"
        )
    return wanted


def save_checked(model: onnx.ModelProto, dst: Path, variant: str) -> tuple[Path, ...]:
    """Check `model` with onnx.checker and write it to `dst` (nothing is written on failure)."""

    def check(staged: Path) -> None:
        try:
            onnx.checker.check_model(str(staged), full_check=True)
        except onnx.checker.ValidationError as e:
            raise HarnessError(
                f"the {variant} model fails onnx.checker, so {dst} was not written: {e}"
            ) from e
        except onnx.shape_inference.InferenceError as e:
            raise HarnessError(
                f"the {variant} model has inconsistent types, so {dst} was not written: {e}"
            ) from e

    return save_onnx(model, dst, check)
