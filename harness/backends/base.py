"""The backend contract: public `activate/infer/deactivate` validate and time; a backend writes `*_impl`."""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from harness.errors import HarnessError
from models.recipe import Feed, Recipe


@dataclass
class BackendContext:
    """What a backend may need; each takes only its own artifact."""

    recipe: Recipe
    weights: Path | None = None
    onnx_path: Path | None = None
    engine_path: Path | None = None
    engine_targets: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IOOrder:
    """Positional order of inputs and outputs as this backend sees them."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def to_json(self) -> dict[str, list[str]]:
        return {"inputs": list(self.inputs), "outputs": list(self.outputs)}


class Backend(abc.ABC):
    name: ClassVar[str]
    display_name: ClassVar[str]
    rank: ClassVar[int]  # position in reports and in the default comparison pairs

    def __init__(self, ctx: BackendContext) -> None:
        self.ctx = ctx
        self.inference_seconds: list[float] = []
        self._active = False

    @classmethod
    def unavailable_reason(cls, ctx: BackendContext) -> str | None:
        """None when this backend can execute here; otherwise why not (shown in the report)."""
        return None

    def activate(self) -> None:
        self.activate_impl()
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
        return outputs

    @abc.abstractmethod
    def activate_impl(self) -> None: ...

    @abc.abstractmethod
    def infer_impl(self, feed: Feed) -> dict[str, np.ndarray]: ...

    def deactivate_impl(self) -> None:  # noqa: B027 - optional hook, most backends have nothing to release
        """Release resources; default: nothing to release."""

    @abc.abstractmethod
    def io_order(self) -> IOOrder: ...

    def describe(self) -> dict[str, Any]:
        """Facts about where and how this backend ran (device, providers), recorded with its results."""
        return {}


_BACKENDS: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    _BACKENDS[cls.name] = cls
    return cls


def backend_names() -> list[str]:
    return [name for name, _ in sorted(_BACKENDS.items(), key=lambda item: item[1].rank)]


def get_backend(name: str) -> type[Backend]:
    try:
        return _BACKENDS[name]
    except KeyError:
        from harness.errors import UsageError

        raise UsageError(f"unknown backend '{name}'; known backends: {', '.join(backend_names())}") from None


def display_name(name: str) -> str:
    """'onnxrt' -> 'ORT'; a precision variant 'onnxrt-fp16' -> 'ORT FP16'."""
    backend, _, precision = name.partition("-")
    cls = _BACKENDS.get(backend)
    if cls is None:
        return name
    return cls.display_name + (f" {precision.upper()}" if precision else "")
