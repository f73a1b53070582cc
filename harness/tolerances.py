"""Tolerance overrides from the command line, layered over the recipe's per-output tolerances."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.errors import UsageError
from models.recipe import Tolerance


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

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ToleranceOverrides:
        return cls(**data)


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
