"""What the report shows, derived from results.json: the template only lays it out."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

BACKEND_DISPLAY = {"torch": "Torch", "onnxrt": "ORT", "tensorrt": "TensorRT"}


@dataclass(frozen=True)
class BackendStatus:
    name: str
    display_name: str
    state: str  # "executed", "built, not executed", "not executed"
    reason: str | None


class ReportView:
    def __init__(self, results: dict[str, Any]) -> None:
        self.results = results
        self.recipe = results["recipe"]
        self.verdict = results["verdict"]
        self.environment = results["environment"]
        self.stages = results["stages"]
        self._by_name = {s["name"]: s for s in self.stages}

    def stage(self, name: str) -> dict[str, Any]:
        return self._by_name.get(name, {"name": name, "status": "skipped", "details": {}, "reason": None})

    @property
    def backends(self) -> list[BackendStatus]:
        run = self.stage("run").get("details", {}).get("backends", {})
        build_ok = self.stage("build")["status"] in ("ok", "cached")
        statuses = []
        for name, info in run.items():
            display = info.get("display_name", BACKEND_DISPLAY.get(name, name))
            if info["executed"]:
                statuses.append(BackendStatus(name, display, "executed", None))
            elif name == "tensorrt" and build_ok:
                statuses.append(BackendStatus(name, display, "built, not executed", info["reason"]))
            else:
                statuses.append(BackendStatus(name, display, "not executed", info["reason"]))
        return statuses

    @property
    def comparisons_by_output(self) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for comparison in self.stage("compare").get("details", {}).get("comparisons", []):
            grouped[comparison["output"]].append(comparison)
        return dict(grouped)

    @property
    def build(self) -> dict[str, Any]:
        return self.stage("build").get("details", {})

    def display(self, backend: str) -> str:
        return BACKEND_DISPLAY.get(backend, backend)
