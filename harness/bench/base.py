"""What every benchmark shares: its settings, its result (raw samples, medians, targets), the registry."""

from __future__ import annotations

import math
import operator
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trt_harness.models.core.registry import Registry

Direction = Literal["<=", ">="]
_COMPARE = {"<=": operator.le, ">=": operator.ge}


@dataclass(frozen=True)
class BenchSettings:
    """Sizes and repeat counts of every benchmark. The defaults are the full suite on the real recipe."""

    out_dir: Path = Path("artifacts") / "bench"
    recipe: str = "yolov5"
    params: Mapping[str, Any] = field(default_factory=lambda: {"image_size": 640})
    cold_runs: int = 1  # a cold yolov5 run at 640 takes about a minute on 2 cores
    warm_runs: int = 5  # also the number of tolerance-change runs
    tolerance_change: str = "1e-2"  # the --atol of the tolerance-change runs
    latency_runs: int = 30
    latency_warmup: int = 3
    batches: tuple[int, ...] = (1, 8)
    threads: int = 2
    compare_samples: int = 16
    compare_repeats: int = 5
    memory_samples: tuple[int, int] = (10, 200)
    # the memory benchmark's own runs (recipe parameters besides `samples`)
    memory_params: Mapping[str, Any] = field(default_factory=lambda: {"image_size": 320})

    @property
    def run_dir(self) -> Path:
        return self.out_dir / "run"

    @property
    def cache_dir(self) -> Path:
        return self.out_dir / "cache"

    def to_json(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "recipe": self.recipe,
            "params": dict(self.params),
            "cold_runs": self.cold_runs,
            "warm_runs": self.warm_runs,
            "tolerance_change": self.tolerance_change,
            "latency_runs": self.latency_runs,
            "latency_warmup": self.latency_warmup,
            "batches": list(self.batches),
            "threads": self.threads,
            "compare_samples": self.compare_samples,
            "compare_repeats": self.compare_repeats,
            "memory_samples": list(self.memory_samples),
            "memory_params": dict(self.memory_params),
        }


@dataclass(frozen=True)
class Target:
    """An acceptance target: `value <direction> limit`. A value that could not be measured (None) misses."""

    benchmark: str
    measure: str
    value: float | None
    limit: float
    direction: Direction
    detail: str = ""

    @property
    def passed(self) -> bool:
        return (
            self.value is not None
            and not math.isnan(self.value)
            and _COMPARE[self.direction](self.value, self.limit)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "measure": self.measure,
            "value": self.value,
            "target": f"{self.direction} {self.limit:g}",
            "passed": self.passed,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Table:
    caption: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class BenchResult:
    """One benchmark's outcome: `data` holds the raw samples and medians (bench.json), `tables` the
    readable summary (bench.md), `targets` what gates the exit code."""

    name: str
    title: str
    data: dict[str, Any]
    targets: tuple[Target, ...] = ()
    tables: tuple[Table, ...] = ()
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "data": self.data,
            "targets": [t.to_json() for t in self.targets],
            "notes": list(self.notes),
        }


BenchFn = Callable[[BenchSettings], BenchResult]


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    run: BenchFn
    rank: int  # run order: the pipeline benchmark first, it produces the run the others measure


BENCHMARKS: Registry[Benchmark] = Registry(
    "benchmark", package="trt_harness.harness.bench", hint="see --only"
)


def register_benchmark(name: str, title: str, rank: int) -> Callable[[BenchFn], BenchFn]:
    return BENCHMARKS.decorator(name, lambda fn: Benchmark(name, title, fn, rank))


def benchmarks() -> list[Benchmark]:
    """Every benchmark module of this package (found by the registry), in run order."""
    return sorted(BENCHMARKS.values(), key=lambda b: b.rank)


# --- statistics of timing samples -----------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """numpy's default (linear) q-th percentile, 0 <= q <= 100."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"
