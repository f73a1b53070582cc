"""The recipe as a run records it, and tolerance overrides from the command line.

`RecipeRecord.tolerance_for` is the one rule for which tolerance judges an output: a command-line
override, else the recipe's tolerance for a reduced precision, else its per-output value, else its
default. The compare stage judges from the record, so `harness compare` judges a saved run exactly
as the run itself did.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trt_harness.models.checks import Check
from trt_harness.models.core.artifacts import sha256_file
from trt_harness.models.core.errors import UsageError
from trt_harness.models.recipe import DetectionSpec, Recipe, RecipeOrigin, TensorSpec, Tolerance


@dataclass(frozen=True)
class ToleranceOverrides:
    """`--atol 1e-3` sets every output; `--atol output0=1e-3` one output (wins over the global value)."""

    atol: float | None = None
    rtol: float | None = None
    per_output_atol: Mapping[str, float] = field(default_factory=dict)
    per_output_rtol: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, atol: Sequence[str] = (), rtol: Sequence[str] = ()) -> ToleranceOverrides:
        g_atol, per_atol = _parse_values("--atol", atol)
        g_rtol, per_rtol = _parse_values("--rtol", rtol)
        return cls(g_atol, g_rtol, per_atol, per_rtol)

    def apply(self, output: str, base: Tolerance) -> Tolerance:
        changes: dict[str, Any] = {}
        atol = self.per_output_atol.get(output, self.atol)
        rtol = self.per_output_rtol.get(output, self.rtol)
        if atol is not None:
            changes["atol"] = atol
        if rtol is not None:
            changes["rtol"] = rtol
        return dataclasses.replace(base, **changes) if changes else base

    def unknown_outputs(self, outputs: Sequence[str]) -> list[str]:
        return sorted((set(self.per_output_atol) | set(self.per_output_rtol)) - set(outputs))

    @property
    def given(self) -> tuple[str, ...]:
        """The overrides in force, as the command line would spell them."""
        shown = [f"--atol {self.atol:g}"] if self.atol is not None else []
        shown += [f"--rtol {self.rtol:g}"] if self.rtol is not None else []
        shown += [f"--atol {k}={v:g}" for k, v in self.per_output_atol.items()]
        shown += [f"--rtol {k}={v:g}" for k, v in self.per_output_rtol.items()]
        return tuple(shown)


def _parse_values(flag: str, values: Sequence[str]) -> tuple[float | None, dict[str, float]]:
    global_value: float | None = None
    per_output: dict[str, float] = {}
    for raw in values:
        name, sep, number = raw.rpartition("=")
        try:
            value = float(number)
        except ValueError:
            raise UsageError(
                f"{flag} {raw!r}: expected a number or OUTPUT=NUMBER (e.g. {flag} output0=1e-3)"
            ) from None
        if not math.isfinite(value) or value < 0:
            raise UsageError(f"{flag} {raw!r}: a tolerance must be a finite number >= 0")
        if sep:
            per_output[name] = value
        else:
            global_value = value
    return global_value, per_output


WeightsKind = Literal["file", "recipe", "undeclared"]


@dataclass(frozen=True)
class WeightsSource:
    """Where a run's weights came from: a `--weights` file (with its hash), or what the recipe says."""

    kind: WeightsKind
    description: str
    sha256: str | None = None

    @classmethod
    def of(cls, recipe: Recipe, weights: Path | None) -> WeightsSource:
        if weights is not None:
            digest = sha256_file(weights) if Path(weights).is_file() else None
            return cls("file", f"--weights {weights}", digest)
        if recipe.weights_source:
            return cls("recipe", recipe.weights_source)
        return cls(
            "undeclared",
            "the recipe's own; the recipe does not say where they come from (set Recipe.weights_source)",
        )

    @property
    def text(self) -> str:
        return f"{self.description} (sha256 {self.sha256})" if self.sha256 else self.description


@dataclass(frozen=True)
class RecipeRecord:
    """What a run knew of its recipe: names, shapes, how outputs are judged, where weights came from."""

    name: str
    description: str
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    default_tolerance: Tolerance
    params: Mapping[str, Any] = field(default_factory=dict)
    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    class_axes: Mapping[str, int] = field(default_factory=dict)
    precisions: tuple[str, ...] = ("fp32",)
    precision_tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    spatial_axes: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    spatial_axis_names: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    detection: DetectionSpec | None = None
    weights: str | None = None  # the weights file given, None for the recipe's own
    origin: RecipeOrigin | None = None  # where the recipe was loaded from (None: a recipe built in a test)
    checks: Mapping[str, tuple[Check, ...]] = field(default_factory=dict)
    weights_source: WeightsSource | None = None  # None: a run recorded before runs said so

    @classmethod
    def of(cls, recipe: Recipe, weights: Path | None) -> RecipeRecord:
        return cls(
            name=recipe.name,
            description=recipe.description,
            inputs=recipe.inputs,
            output_names=recipe.output_names,
            default_tolerance=recipe.default_tolerance,
            params=dict(recipe.params),
            tolerances=dict(recipe.tolerances),
            class_axes=dict(recipe.class_axes),
            precisions=tuple(recipe.precisions),
            precision_tolerances=dict(recipe.precision_tolerances),
            spatial_axes={k: tuple(v) for k, v in recipe.spatial_axes.items()},
            spatial_axis_names={k: (str(v[0]), str(v[1])) for k, v in recipe.spatial_axis_names.items()},
            detection=recipe.detection,
            weights=str(weights) if weights else None,
            origin=recipe.origin,
            checks={k: tuple(v) for k, v in recipe.checks.items()},
            weights_source=WeightsSource.of(recipe, weights),
        )

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    def tolerance_for(
        self, output: str, precision: str = "fp32", overrides: ToleranceOverrides | None = None
    ) -> Tolerance:
        if precision in self.precision_tolerances:
            base = self.precision_tolerances[precision]
        else:
            base = self.tolerances.get(output, self.default_tolerance)
        return overrides.apply(output, base) if overrides else base
