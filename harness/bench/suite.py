"""Run the selected benchmarks in order and collect their results with the machine's facts."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from trt_harness.harness.bench.base import BenchResult, BenchSettings, Target, benchmarks
from trt_harness.harness.environment import environment
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.core.serde import to_json

SCHEMA = "trt-harness/bench"
SCHEMA_VERSION = 1


@dataclass
class BenchReport:
    settings: BenchSettings
    command: str
    results: list[BenchResult] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # benchmark -> why it produced no result
    machine: dict[str, Any] = field(default_factory=dict)
    created_unix: float = field(default_factory=time.time)

    @property
    def targets(self) -> list[Target]:
        return [t for r in self.results for t in r.targets]

    @property
    def passed(self) -> bool:
        return not self.errors and all(t.passed for t in self.targets)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "created_unix": self.created_unix,
            "command": self.command,
            "settings": self.settings.to_json(),
            "machine": self.machine,
            "benchmarks": {r.name: r.to_json() for r in self.results},
            "errors": self.errors,
            "targets": [t.to_json() for t in self.targets],
            "passed": self.passed,
        }


def machine_facts() -> dict[str, Any]:
    return {
        **to_json(environment()),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_start": list(os.getloadavg()),
    }


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_suite(
    settings: BenchSettings,
    names: Sequence[str] | None = None,
    command: str = "",
    log: Callable[[str], None] = _log,
) -> BenchReport:
    """Run the benchmarks named (all by default) in their fixed order. A benchmark that raises a
    HarnessError is recorded as an error and the others still run."""
    report = BenchReport(settings, command, machine=machine_facts())
    for bench in benchmarks():
        if names is not None and bench.name not in names:
            continue
        log(f"[bench] {bench.name}: {bench.title} …")
        start = time.perf_counter()
        try:
            report.results.append(bench.run(settings))
        except HarnessError as e:
            report.errors[bench.name] = str(e)
            log(f"[bench] {bench.name} failed: {e}")
        log(f"[bench] {bench.name} took {time.perf_counter() - start:.1f} s")
    report.machine["load_average_end"] = list(os.getloadavg())
    return report
