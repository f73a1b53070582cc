"""`harness convert` as a separate process, timed from outside, with the per-stage ledger it wrote.

A separate process is the honest measure: a warm run's main cost is interpreter start-up and imports,
which an in-process run would hide.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.bench.base import BenchSettings
from harness.cache import ROOT
from models.core.errors import ExitCode, HarnessError

# exit codes of a run that went through every stage and reached a verdict (pass or not)
_COMPLETED = (ExitCode.PASSED, ExitCode.ACCURACY_FAILED, ExitCode.ORDERING_MISMATCH)


@dataclass(frozen=True)
class StageTiming:
    name: str
    status: str
    duration_s: float


@dataclass(frozen=True)
class ConvertRun:
    wall_s: float  # the whole process, interpreter start-up included
    exit_code: int
    stages: tuple[StageTiming, ...]

    @property
    def outside_stages_s(self) -> float:
        """Start-up, imports, cache keys of later stages, results and report writing."""
        return self.wall_s - sum(s.duration_s for s in self.stages)

    def to_json(self) -> dict[str, Any]:
        return {
            "wall_s": self.wall_s,
            "exit_code": self.exit_code,
            "outside_stages_s": self.outside_stages_s,
            "stages": [{"name": s.name, "status": s.status, "duration_s": s.duration_s} for s in self.stages],
        }


def convert_command(settings: BenchSettings, *extra_args: str) -> list[str]:
    params = [arg for key, value in settings.params.items() for arg in ("-p", f"{key}={value}")]
    return [
        sys.executable, "-m", "harness", "convert", settings.recipe, *params,
        "--out", str(settings.run_dir.resolve()), *extra_args,
    ]  # fmt: skip


def run_convert(settings: BenchSettings, *extra_args: str) -> ConvertRun:
    """Run `harness convert` on the bench cache and run folder; fail unless it reached a verdict."""
    command = convert_command(settings, *extra_args)
    results_path = settings.run_dir / "results.json"
    results_path.unlink(missing_ok=True)  # never read a previous run's ledger
    env = {**os.environ, "HARNESS_CACHE_DIR": str(settings.cache_dir.resolve()), "CI": "true"}
    start = time.perf_counter()
    process = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if process.returncode not in _COMPLETED or not results_path.is_file():
        tail = "\n".join((process.stdout + process.stderr).strip().splitlines()[-15:])
        raise HarnessError(
            f"`{shlex.join(command)}` exited with {process.returncode} before reaching a verdict, so there "
            f"is nothing to time; run it by hand to see why. Its last lines:\n{tail}"
        )
    results = json.loads(results_path.read_text())
    stages = tuple(StageTiming(s["name"], s["status"], s["duration_s"]) for s in results["stages"])
    return ConvertRun(wall, process.returncode, stages)


def ensure_run(settings: BenchSettings) -> Path:
    """The bench run folder with saved outputs of the settings' recipe; runs `harness convert` (on the
    bench cache) when the folder holds another recipe's run or none."""
    if _saved_run_matches(settings):
        return settings.run_dir
    run_convert(settings)
    return settings.run_dir


def _saved_run_matches(settings: BenchSettings) -> bool:
    try:
        results = json.loads((settings.run_dir / "results.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    recipe = results["recipe"]
    same_recipe = recipe["name"] == settings.recipe and all(
        recipe["params"].get(key) == value for key, value in settings.params.items()
    )
    return same_recipe and len(saved_outputs(settings.run_dir)) >= 2


def saved_outputs(run_dir: Path) -> dict[str, Path]:
    """Backend name -> its saved outputs file, for every backend the run executed."""
    results = json.loads((run_dir / "results.json").read_text())
    run_stage = next((s for s in results["stages"] if s["name"] == "run"), None)
    if run_stage is None:
        return {}
    return {
        name: run_dir / run_stage["artifacts"][f"outputs_{name}"]["path"]
        for name, info in run_stage["details"].get("backends", {}).items()
        if info["executed"]
    }


def saved_outputs_pair(run_dir: Path) -> dict[str, Path]:
    """The first compared pair's saved outputs, reference first (Torch and ONNX Runtime for a CPU run)."""
    from harness.comparison import default_pairs

    outputs = saved_outputs(run_dir)
    pairs = default_pairs(outputs)
    if not pairs:
        raise HarnessError(
            f"{run_dir}: fewer than two backends' outputs were saved ({', '.join(outputs) or 'none'}); "
            "re-run `harness convert` with at least two backends"
        )
    reference, candidate = pairs[0]
    return {reference: outputs[reference], candidate: outputs[candidate]}
