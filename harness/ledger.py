"""One ledger entry per stage: what happened, how long it took, why, and the files it produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from models.core.artifacts import Artifact

Status = Literal["ok", "failed", "skipped", "cached"]


@dataclass
class StageRecord:
    name: str
    status: Status
    duration_s: float = 0.0
    reason: str | None = None
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self, root: Path) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "duration_s": round(self.duration_s, 3),
            "reason": self.reason,
            "artifacts": {k: a.to_json(root) for k, a in self.artifacts.items()},
            "details": self.details,
        }


class StageSkipped(Exception):
    """Raised by a stage that has nothing to do here; an expected outcome, recorded with its reason."""


class StageFailed(Exception):
    """Raised by a stage on an expected failure (e.g. TensorRT refused the model); recorded, stops the run."""

    def __init__(self, reason: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.details = details or {}
