"""The one place ONNX Runtime sessions are configured: the run's ORT backend and the surgery checks.

The surgery stage must prove the final model loads in the session the run stage will create, so
both build it here from the same `OrtSettings` (providers and graph-optimization level). A session
ORT refuses raises HarnessError naming the ORT version and the optimization level, with the remedy.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxruntime as ort
from trt_harness.conversions.onnx_files import fits_single_file
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.recipe import ORT_OPTIMIZATIONS, OrtOptimization

LEVELS: dict[str, ort.GraphOptimizationLevel] = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
assert set(LEVELS) == set(ORT_OPTIMIZATIONS)

PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
CPU_ONLY = ("CPUExecutionProvider",)


def run_providers() -> tuple[str, ...]:
    """The providers the run stage uses: CUDA when this ORT build has it, then CPU."""
    available = ort.get_available_providers()
    return tuple(p for p in PREFERRED_PROVIDERS if p in available)


@dataclass(frozen=True)
class OrtSettings:
    """How a session is made. `threads` None: ORT's default intra-op pool (one thread per core)."""

    optimization: OrtOptimization = "all"
    providers: tuple[str, ...] = CPU_ONLY
    threads: int | None = None

    @classmethod
    def for_run(cls, optimization: OrtOptimization = "all") -> OrtSettings:
        """The session of the run stage's ORT backend, at the recipe's `ort_optimization`."""
        return cls(optimization, run_providers())

    @classmethod
    def as_written(cls, threads: int | None = 1) -> OrtSettings:
        """CPU, ORT's own graph rewrites off, one thread: the graph runs as written, deterministically,
        so a difference between two models comes from their graphs alone (and no idle thread pool
        spins between the many small sessions a check creates)."""
        return cls("disable", CPU_ONLY, threads=threads)

    def session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.graph_optimization_level = LEVELS[self.optimization]
        options.log_severity_level = 3
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = self.threads
        return options

    def describe(self) -> str:
        level = LEVELS[self.optimization].name
        return f"onnxruntime {ort.__version__}, graph optimization {level}, providers {', '.join(self.providers)}"


def create_session(source: Path | bytes, settings: OrtSettings, what: str) -> ort.InferenceSession:
    """A session of the model file or serialized model `source`; `what` names the model in errors."""
    try:
        return ort.InferenceSession(
            source if isinstance(source, bytes) else str(source),
            settings.session_options(),
            providers=list(settings.providers),
        )
    except Exception as e:  # ORT's exception types (Fail, InvalidGraph, ...) share no base below Exception
        raise HarnessError(
            f"ONNX Runtime cannot load {what} ({settings.describe()}): {e}{_remedy(settings)}"
        ) from e


def session_of_model(model: onnx.ModelProto, settings: OrtSettings, what: str) -> ort.InferenceSession:
    """A session of an in-memory model, whatever its size (a model over 2 GiB goes through a staged file)."""
    if fits_single_file(model):
        return create_session(model.SerializeToString(), settings, what)
    with tempfile.TemporaryDirectory(prefix="ort_session_") as workdir:
        path = Path(workdir) / "model.onnx"
        copy = onnx.ModelProto()
        copy.CopyFrom(model)  # saving with external data strips the weights out of the proto it saves
        onnx.save_model(copy, path, save_as_external_data=True, location="model.onnx.data")
        return create_session(path, settings, what)  # the session holds the weights once created


def _remedy(settings: OrtSettings) -> str:
    if settings.optimization == "disable":
        return ""
    lower = ORT_OPTIMIZATIONS[: ORT_OPTIMIZATIONS.index(settings.optimization)]
    return (
        f". If the model is valid this is ONNX Runtime's graph optimizer failing on it: upgrade "
        f"onnxruntime, or lower the level the run uses with the recipe option ort_optimization, one of "
        f"{', '.join(reversed(lower))} (e.g. `-p ort_optimization={lower[-1]}`; `-p ort_optimization=disable` "
        f"runs the graph as the surgery checks ran it); the level is recorded in the results"
    )


def run_feeds(
    session: ort.InferenceSession, feeds: Sequence[dict[str, object]], what: str
) -> list[dict[str, object]]:
    """Every output of `session` on each feed, by name in graph order."""
    names = [output.name for output in session.get_outputs()]
    results = []
    for index, feed in enumerate(feeds):
        try:
            values = session.run(names, feed)
        except Exception as e:  # ORT's exception types share no base below Exception
            raise HarnessError(f"ONNX Runtime fails on check feed #{index} {what}: {e}") from e
        results.append(dict(zip(names, values, strict=True)))
    return results
