"""Typed results of `harness calibrate <recipe>`: the measured noise floor of each output and the
tolerances proposed from it, written as `calibration.json` (schema `trt-harness/calibration`, v1)
beside the recipe snippet (`tolerances.py`). The rules that fill them are in `harness.calibrate`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trt_harness.models.core.errors import UsageError
from trt_harness.models.core.serde import SchemaError, from_json, to_json
from trt_harness.models.recipe import Tolerance
from trt_harness.models.results.document import Environment

CALIBRATION_SCHEMA = "trt-harness/calibration"
CALIBRATION_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class VariantNoise:
    """How far one variant's output is from the reference (Torch on CPU), over all samples."""

    variant: str  # "ORT CPU threads=1 opt=all", "Torch CPU repeat 2", "Torch CUDA"
    output: str
    samples: int
    elements: int
    max_abs_err: float
    quantile_abs_err: float  # at today's tolerance's quantile
    median_abs_err: float
    max_rel_err: float
    quantile_rel_err: float
    median_rel_err: float
    # max over elements of |err| / (atol + rtol*|ref|) under today's tolerance: 1.0 is at its edge
    usage: float
    argmax_agreement: float | None
    passes_today: bool


@dataclass(frozen=True)
class NotMeasured:
    """A variant calibrate did not measure, and why (never a number in its place)."""

    variant: str
    reason: str


@dataclass(frozen=True)
class ProposedTolerance:
    output: str
    today: Tolerance
    proposed: Tolerance
    worst_variant: str  # the variant the proposal is scaled from ("" when nothing differed)
    reason: str  # the measured reason, one line, as the snippet's comment says it
    changed: bool  # False: kept today's (no difference was measured)


@dataclass(frozen=True)
class Calibration:
    recipe: str
    params: Mapping[str, Any]
    headroom: float
    reference: str  # what every variant is measured against
    measured: tuple[VariantNoise, ...]
    not_measured: tuple[NotMeasured, ...]
    proposals: tuple[ProposedTolerance, ...]
    environment: Environment
    created_unix: float
    note: str = ""  # what calibration does not cover (reduced precisions, detections)
    schema: str = CALIBRATION_SCHEMA
    schema_version: int = CALIBRATION_SCHEMA_VERSION

    def proposal(self, output: str) -> ProposedTolerance:
        return next(p for p in self.proposals if p.output == output)


def calibration_to_text(calibration: Calibration) -> str:
    return json.dumps(to_json(calibration), indent=1)


def calibration_from_json(data: Any, source: str = "calibration.json") -> Calibration:
    if not isinstance(data, dict) or data.get("schema") != CALIBRATION_SCHEMA:
        raise UsageError(f"{source} is not a trt-harness calibration (schema {CALIBRATION_SCHEMA!r})")
    if data.get("schema_version") != CALIBRATION_SCHEMA_VERSION:
        raise UsageError(
            f"{source} is calibration schema version {data.get('schema_version')!r}; this trt-harness "
            f"reads version {CALIBRATION_SCHEMA_VERSION}: run `harness calibrate` again"
        )
    try:
        return from_json(Calibration, data, "calibration")
    except SchemaError as e:
        raise UsageError(f"{source} is damaged or was edited: {e}") from e
