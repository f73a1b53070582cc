"""What one pass did to a model, as a serializable value."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class PassReport:
    name: str
    modified: bool
    changes: tuple[str, ...]
    op_counts_before: dict[str, int]
    op_counts_after: dict[str, int]
    duration_s: float
    # ONNX Runtime outputs after vs before this pass; None when no feeds were checked
    max_abs_diff: float | None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["changes"] = list(self.changes)
        return data


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Count nodes by op type, including nodes inside control-flow subgraphs (If/Loop/Scan bodies).

    Ops outside the default ONNX domain are keyed `domain::op` so custom ops stay distinguishable.
    """
    import onnx

    counts: Counter[str] = Counter()

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            key = node.op_type if node.domain in _DEFAULT_DOMAINS else f"{node.domain}::{node.op_type}"
            counts[key] += 1
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    visit(attribute.g)
                elif attribute.type == onnx.AttributeProto.GRAPHS:
                    for subgraph in attribute.graphs:
                        visit(subgraph)

    visit(model.graph)
    return dict(sorted(counts.items()))
