"""The backend contract: public `activate/infer/deactivate` validate, time and copy; a backend writes `*_impl`.

A backend declares what it is: its display name, the precisions it runs, whether it is the reference
the others are judged against, what it runs from (`needs`: the Torch model, an ONNX file, an engine)
and where its I/O order comes from. Adding one is one module in this package with `@register_backend`;
no other code names it.

`infer` copies every output into an array of its own: Polygraphy's TrtRunner (and others) return
views of host buffers they reuse on the next call, so an output kept past the next `infer` would
otherwise silently take the next sample's values.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from trt_harness.conversions.outputs import Produced, check_outputs, produced_from_arrays
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.core.registry import Registry
from trt_harness.models.recipe import Feed, Recipe
from trt_harness.models.results.stages import EngineRecord, IOOrder

Needs = Literal["torch", "onnx", "engine"]


@dataclass(frozen=True)
class BackendContext:
    """What a backend may need; each takes only its own artifact."""

    recipe: Recipe
    precision: str = "fp32"
    weights: Path | None = None
    onnx_path: Path | None = None
    engine_path: Path | None = None
    engine: EngineRecord | None = None  # the build stage's record of the engine
    # the recipe's Torch model; None: build it from the recipe and weights
    model_factory: Callable[[], Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def torch_model(self) -> Any:
        return self.model_factory() if self.model_factory else self.recipe.build_model(self.weights)


class Backend(abc.ABC):
    name: ClassVar[str]
    display_name: ClassVar[str]
    rank: ClassVar[int]  # position in reports and in the default comparison pairs
    precisions: ClassVar[tuple[str, ...]]  # the precisions it runs, each as its own runner
    needs: ClassVar[Needs]
    reference: ClassVar[bool] = False  # the backend every other is judged against
    io_source: ClassVar[str] = "session"  # where io_order() reads the order from, for the report

    def __init__(self, ctx: BackendContext) -> None:
        self.ctx = ctx
        # outputs that carried the shape or dtype declared for another output, once each
        self.ordering_mismatches: dict[str, None] = {}
        self.inference_seconds: list[float] = []
        self.setup_seconds = 0.0
        self._active = False

    @classmethod
    def unavailable_reason(cls, ctx: BackendContext) -> str | None:
        """None when this backend can execute here; otherwise why not (shown in the report)."""
        return None

    @classmethod
    def planned_io_order(cls, ctx: BackendContext) -> tuple[IOOrder, str] | None:
        """The I/O order known without executing (e.g. from the build), with its source; None if unknown."""
        return None

    def activate(self) -> None:
        start = time.perf_counter()
        self.activate_impl()
        self.setup_seconds += time.perf_counter() - start
        self._active = True

    def deactivate(self) -> None:
        if self._active:
            self.deactivate_impl()
            self._active = False

    def __enter__(self) -> Backend:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def infer(self, feed: Feed) -> dict[str, np.ndarray]:
        if not self._active:
            raise HarnessError(f"{self.display_name} backend used before activate()")
        expected = set(self.ctx.recipe.input_names)
        if set(feed) != expected:
            raise HarnessError(
                f"{self.display_name}: feed has inputs {sorted(feed)}, recipe '{self.ctx.recipe.name}' "
                f"declares {sorted(expected)}"
            )
        for spec in self.ctx.recipe.inputs:
            array = feed[spec.name]
            if array.ndim != len(spec.shape) or str(array.dtype) != spec.dtype:
                raise HarnessError(
                    f"{self.display_name}: input '{spec.name}' is {array.dtype}{list(array.shape)}, recipe "
                    f"declares {spec.dtype}{list(spec.shape)}"
                )
        start = time.perf_counter()
        outputs = self.infer_impl(feed)
        self.inference_seconds.append(time.perf_counter() - start)
        # a copy per output: no backend may hand out a buffer it will overwrite (see the module doc)
        copied = {name: np.array(value, copy=True) for name, value in outputs.items()}
        self.check_declared(produced_from_arrays(copied, self.output_dtypes()), feed)
        return copied

    def check_declared(self, produced: Mapping[str, Produced], feed: Feed | None = None) -> None:
        """Check outputs against the recipe's declared outputs: a mislabel is kept as an ordering
        mismatch (exit 3), any other violation raises naming the output."""
        where = runner_display_name(type(self), self.ctx.precision)
        for finding in check_outputs(self.ctx.recipe, produced, where, feed):
            self.ordering_mismatches.setdefault(finding)

    def output_dtypes(self) -> dict[str, str]:
        """The dtype of each output of the last `infer_impl` as the model produced it, where the
        returned arrays were converted (default: the arrays' own)."""
        return {}

    @abc.abstractmethod
    def activate_impl(self) -> None: ...

    @abc.abstractmethod
    def infer_impl(self, feed: Feed) -> dict[str, np.ndarray]: ...

    def deactivate_impl(self) -> None:  # noqa: B027 - optional hook, most backends have nothing to release
        """Release resources; default: nothing to release."""

    @abc.abstractmethod
    def io_order(self) -> IOOrder: ...

    def describe(self) -> dict[str, str]:
        """Facts about where and how this backend ran (device, providers), recorded with its results."""
        return {}


BACKENDS: Registry[type[Backend]] = Registry(
    "backend", package="trt_harness.harness.backends", hint="choose with --backends"
)


def register_backend(cls: type[Backend]) -> type[Backend]:
    return BACKENDS.register(cls.name, cls)


def backend_classes() -> list[type[Backend]]:
    """Every registered backend, in rank order (the reference first)."""
    return sorted((BACKENDS.get(name) for name in BACKENDS.names()), key=lambda cls: cls.rank)


def reference_backend() -> type[Backend]:
    references = [cls for cls in backend_classes() if cls.reference]
    if len(references) != 1:
        raise HarnessError(
            f"exactly one backend must be the reference, found {[c.name for c in references]}; "
            "set `reference = True` on one backend class"
        )
    return references[0]


def runner_name(backend: type[Backend], precision: str) -> str:
    """'onnxrt' at FP32, 'onnxrt-fp16' at FP16: one runner per backend and precision."""
    return backend.name if precision == "fp32" else f"{backend.name}-{precision}"


def runner_display_name(backend: type[Backend], precision: str) -> str:
    return backend.display_name if precision == "fp32" else f"{backend.display_name} {precision.upper()}"


def display_name(runner: str) -> str:
    """A runner's name as reports say it: 'onnxrt' -> 'ORT', 'onnxrt-fp16' -> 'ORT FP16'."""
    backend, _, precision = runner.partition("-")
    if backend not in BACKENDS:
        return runner
    return runner_display_name(BACKENDS.get(backend), precision or "fp32")
