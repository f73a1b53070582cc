"""What one precision variant produced, as a serializable value."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class PrecisionResult:
    precision: Literal["fp16", "int8"]
    path: Path
    library: str  # the maintained library that rewrote the graph, e.g. "onnxruntime.quantization"
    library_version: str
    # node names kept in FP32 (fp16) or left unquantized (int8), as asked for
    block_list: tuple[str, ...]
    op_counts: dict[str, int]
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "path": self.path.name,
            "library": self.library,
            "library_version": self.library_version,
            "block_list": list(self.block_list),
            "op_counts": dict(self.op_counts),
            "notes": list(self.notes),
        }
