"""Typed results of comparing two runs: what changed from run A (earlier, the baseline) to run B.

Written by `harness diff A B` (as JSON, beside its HTML page) and kept in `results.json` by
`harness convert --baseline A` (`Results.baseline`). Both sides are matched by key: a tensor
comparison by (output, reference runner, candidate runner, sample set, precision), a detection pair by
(reference, candidate, precision), a stage or runner by name. The rules that fill these values are in
`harness.diff`; reports lay them out (`reports.diff`).

A gated statistic (the p99/quantile and max abs error) *regressed* when B's value exceeds both
`factor` times A's and the absolute `floor`, so float noise (1e-9 -> 3e-9) is not a regression. A
comparison that passed in A and fails in B is a *new failure*, one that failed in A and passes in B
is *fixed*. `RunDiff` is truthy when nothing regressed and nothing newly failed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from trt_harness.models.core.errors import UsageError
from trt_harness.models.core.serde import SchemaError, from_json, to_json
from trt_harness.models.recipe import DEFAULT_BASELINE_FACTOR, DEFAULT_BASELINE_FLOOR, Tolerance

DIFF_SCHEMA = "trt-harness/diff"
DIFF_SCHEMA_VERSION = 1
DEFAULT_FACTOR = DEFAULT_BASELINE_FACTOR  # a gated error may at most double over the baseline
DEFAULT_FLOOR = DEFAULT_BASELINE_FLOOR  # errors at or below this are float32 rounding noise at unit scale

# which way a statistic gets better; "neither" for sizes (samples) that only describe the comparison
Better = Literal["lower", "higher", "neither"]
# how reports print a value: errors in scientific notation, counts as integers, fractions in percent
StatKind = Literal["error", "count", "fraction", "similarity"]
ChangeStatus = Literal[
    "unchanged",  # every statistic equal
    "improved",  # no gated statistic worse, one better
    "within factor",  # a gated statistic worse, none beyond the factor (or only others changed)
    "regressed",  # a gated statistic grew beyond the factor (and the floor)
    "new failure",  # passed in A, fails in B
    "fixed",  # failed in A, passes in B
    "still failing",  # failed in both, no worse beyond the factor
    "added",  # compared in B only
    "removed",  # compared in A only (B did not compare it: a runner did not execute, an output is gone)
]
REGRESSING: tuple[str, ...] = ("regressed", "new failure")


def check_gate(
    factor: float, floor: float, factor_flag: str = "--factor", floor_flag: str = "--floor"
) -> None:
    """A usage error unless `factor` >= 1 and `floor` >= 0, both finite (named by their options)."""
    if not (math.isfinite(factor) and factor >= 1.0):
        raise UsageError(f"{factor_flag} {factor:g}: the allowed growth factor must be a finite number >= 1")
    if not (math.isfinite(floor) and floor >= 0.0):
        raise UsageError(f"{floor_flag} {floor:g}: the absolute floor must be a finite number >= 0")


@dataclass(frozen=True)
class StatChange:
    """One statistic of one comparison in A and in B (None where that side has no value)."""

    stat: str  # the field of OutputComparison (or of the detection pair), e.g. "quantile_abs_err"
    label: str  # how reports name it, e.g. "p99 abs error"
    before: float | None
    after: float | None
    kind: StatKind = "error"
    better: Better = "lower"
    gated: bool = False  # judged against the factor and floor
    regressed: bool = False

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def ratio(self) -> float | None:
        """after / before; None when a side is missing or A's value is 0 (see `changed`)."""
        if self.before is None or self.after is None or self.before == 0:
            return None
        return self.after / self.before

    @property
    def worse(self) -> bool:
        if self.before is None or self.after is None or self.better == "neither":
            return False
        return self.after > self.before if self.better == "lower" else self.after < self.before

    @property
    def better_now(self) -> bool:
        if self.before is None or self.after is None or self.better == "neither":
            return False
        return self.after < self.before if self.better == "lower" else self.after > self.before


@dataclass(frozen=True)
class ComparisonChange:
    """One tensor comparison (output x runner pair x sample set x precision) from A to B."""

    output: str
    ref_backend: str
    cand_backend: str
    sample_set: str
    precision: str
    status: ChangeStatus
    passed_before: bool | None  # None: not compared in A
    passed_after: bool | None  # None: not compared in B
    reason_before: str = ""  # why it failed (or was not compared) in A
    reason_after: str = ""
    tolerance_before: Tolerance | None = None
    tolerance_after: Tolerance | None = None
    stats: tuple[StatChange, ...] = ()
    regressions: tuple[str, ...] = ()  # one sentence per reason it counts as a regression

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    def stat(self, name: str) -> StatChange | None:
        return next((s for s in self.stats if s.stat == name), None)


@dataclass(frozen=True)
class DetectionChange:
    """One detection pair's agreement from A to B; images are matched by index (the i-th image)."""

    output: str
    ref_backend: str
    cand_backend: str
    precision: str
    gated: bool  # the pair decides the verdict (in B; in A when B lacks it)
    status: ChangeStatus
    passed_before: bool | None
    passed_after: bool | None
    images_before: int = 0
    images_after: int = 0
    stats: tuple[StatChange, ...] = ()
    newly_failing_images: tuple[int, ...] = ()
    fixed_images: tuple[int, ...] = ()
    regressions: tuple[str, ...] = ()

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)


@dataclass(frozen=True)
class TimingChange:
    """Seconds a stage (or a runner's inference) took in A and in B; None where it did not run."""

    name: str
    before_s: float | None
    after_s: float | None
    status_before: str = ""  # a stage's status: a cached stage's time is not the work's
    status_after: str = ""

    @property
    def ratio(self) -> float | None:
        if self.before_s is None or self.after_s is None or self.before_s <= 0:
            return None
        return self.after_s / self.before_s


@dataclass(frozen=True)
class ValueChange:
    """Something that can explain a change of the numbers: a version, a device, a setting."""

    what: str  # e.g. "package onnxruntime", "python", "GPUs", "ORT providers", "recipe parameters"
    before: str | None  # None: absent in A (e.g. a package installed only in B)
    after: str | None


@dataclass(frozen=True)
class RunSide:
    """Which run one side of the diff is, and its own verdict."""

    source: str  # the folder or file as given
    recipe: str
    run_id: str
    created_unix: float
    exit_code: int
    status: str
    summary: str

    @property
    def passed(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class RunDiff:
    """Everything that changed from run `a` to run `b`; truthy when nothing regressed."""

    a: RunSide
    b: RunSide
    factor: float
    floor: float
    comparisons: tuple[ComparisonChange, ...]
    detections: tuple[DetectionChange, ...] = ()
    stages: tuple[TimingChange, ...] = ()
    runners: tuple[TimingChange, ...] = ()  # time inside each runner's infer calls, all samples
    environment: tuple[ValueChange, ...] = ()  # only what differs
    settings: tuple[ValueChange, ...] = ()  # recipe, parameters, weights, overrides, samples that differ
    # A passed and B did not, whatever the comparisons say (e.g. a stage of B failed)
    run_regressions: tuple[str, ...] = ()
    runner_names: Mapping[str, str] = field(default_factory=dict)  # runner -> display name
    schema: str = DIFF_SCHEMA
    schema_version: int = DIFF_SCHEMA_VERSION

    @property
    def regressions(self) -> tuple[str, ...]:
        """One sentence per regression or new failure: comparisons, detection pairs, then the run's verdict."""
        found = [r for c in (*self.comparisons, *self.detections) for r in c.regressions]
        return (*found, *self.run_regressions)

    @property
    def regressed(self) -> tuple[ComparisonChange | DetectionChange, ...]:
        return tuple(c for c in (*self.comparisons, *self.detections) if c.regressed)

    @property
    def new_failures(self) -> tuple[ComparisonChange | DetectionChange, ...]:
        return tuple(c for c in (*self.comparisons, *self.detections) if c.status == "new failure")

    @property
    def fixed(self) -> tuple[ComparisonChange | DetectionChange, ...]:
        return tuple(c for c in (*self.comparisons, *self.detections) if c.status == "fixed")

    @property
    def unchanged(self) -> bool:
        """Not one statistic, verdict, version or setting differs (stage times aside)."""
        return (
            all(c.status == "unchanged" for c in (*self.comparisons, *self.detections))
            and not self.environment
            and not self.settings
        )

    @property
    def passed(self) -> bool:
        return not self.regressions

    def __bool__(self) -> bool:
        return self.passed

    def display(self, runner: str) -> str:
        return self.runner_names.get(runner, runner)


def diff_to_text(diff: RunDiff) -> str:
    return json.dumps(to_json(diff), indent=1)


def diff_from_json(data: Any, source: str = "diff.json") -> RunDiff:
    """A diff written by `harness diff --json`; a usage error naming `source` for anything else."""
    if not isinstance(data, dict) or data.get("schema") != DIFF_SCHEMA:
        raise UsageError(f"{source} is not a trt-harness diff (schema {DIFF_SCHEMA!r})")
    if data.get("schema_version") != DIFF_SCHEMA_VERSION:
        raise UsageError(
            f"{source} is diff schema version {data.get('schema_version')!r}; this trt-harness reads "
            f"version {DIFF_SCHEMA_VERSION}: run `harness diff` again"
        )
    try:
        return from_json(RunDiff, data, "diff")
    except SchemaError as e:
        raise UsageError(f"{source} is damaged or was edited: {e}") from e
