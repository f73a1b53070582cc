"""`harness convert` as a separate process, timed from outside, with the per-stage ledger it wrote.

A separate process is the honest measure: a warm run's main cost is interpreter start-up and imports,
which an in-process run would hide.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trt_harness.harness.bench.base import BenchSettings
from trt_harness.harness.code_keys import ROOT
from trt_harness.harness.comparison import default_pairs
from trt_harness.harness.sample_files import SampleFolder
from trt_harness.harness.stages.run import OUTPUTS
from trt_harness.models.core.errors import ExitCode, HarnessError
from trt_harness.models.results.comparisons import SAMPLES
from trt_harness.models.results.document import RESULTS_FILE, Results, load_results
from trt_harness.models.results.stages import RunDetails

# exit codes of a run that went through every stage and reached a verdict (pass or not)
COMPLETED = (ExitCode.PASSED, ExitCode.ACCURACY_FAILED, ExitCode.ORDERING_MISMATCH)


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
    return cli_command(
        "convert",
        settings.recipe,
        *param_args(settings.params),
        "--out",
        str(settings.run_dir.resolve()),
        *extra_args,
    )


def cli_command(*args: str) -> list[str]:
    """`harness ARGS...` as this interpreter runs it: the real command line, in a process of its own."""
    return [sys.executable, "-m", "trt_harness.harness.cli", *args]


def param_args(params: Mapping[str, Any]) -> list[str]:
    return [arg for key, value in params.items() for arg in ("-p", f"{key}={value}")]


def run_harness(command: Sequence[str], results_path: Path, cache_dir: Path) -> tuple[float, int, Results]:
    """Run a `harness` command line; its wall time, exit code and the results it wrote. Fails unless it
    reached a verdict."""
    results_path.unlink(missing_ok=True)  # never read a previous run's ledger
    env = {**os.environ, "HARNESS_CACHE_DIR": str(cache_dir.resolve()), "CI": "true"}
    start = time.perf_counter()
    process = subprocess.run(list(command), cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if process.returncode not in COMPLETED or not results_path.is_file():
        tail = "\n".join((process.stdout + process.stderr).strip().splitlines()[-15:])
        raise HarnessError(
            f"`{shlex.join(command)}` exited with {process.returncode} before reaching a verdict, so there "
            f"is nothing to measure; run it by hand to see why. Its last lines:\n{tail}"
        )
    return wall, process.returncode, load_results(results_path)


def run_convert(settings: BenchSettings, *extra_args: str) -> ConvertRun:
    """Run `harness convert` on the bench cache and run folder; fail unless it reached a verdict."""
    command = convert_command(settings, *extra_args)
    wall, code, results = run_harness(command, settings.run_dir / RESULTS_FILE, settings.cache_dir)
    stages = tuple(StageTiming(s.name, s.status, s.duration_s) for s in results.stages)
    return ConvertRun(wall, code, stages)


def ensure_run(settings: BenchSettings) -> Path:
    """The bench run folder with saved outputs of the settings' recipe; runs `harness convert` (on the
    bench cache) when the folder holds another recipe's run or none."""
    if saved_run_matches(settings.run_dir, settings.recipe, settings.params):
        return settings.run_dir
    run_convert(settings)
    return settings.run_dir


def saved_results(run_dir: Path) -> Results | None:
    """The run's results, or None when there is none this harness can read."""
    try:
        return load_results(run_dir)
    except HarnessError:
        return None


def saved_run_matches(run_dir: Path, recipe: str, params: Mapping[str, Any]) -> bool:
    """Whether `run_dir` holds a run of `recipe` with `params` that saved outputs of two runners or more."""
    results = saved_results(run_dir)
    if results is None:
        return False
    same_recipe = results.recipe.name == recipe and all(
        results.recipe.params.get(key) == value for key, value in params.items()
    )
    return same_recipe and len(saved_outputs(run_dir, results)) >= 2


def saved_outputs(run_dir: Path, results: Results | None = None) -> dict[str, SampleFolder]:
    """Runner -> its saved outputs on the recipe's samples, for every runner the run executed."""
    results = results or load_results(run_dir)
    run, record = results.details(RunDetails), results.stage("run")
    if run is None or record is None:
        return {}
    return {
        name: SampleFolder(run_dir, record.artifacts[runner.outputs], f"{OUTPUTS}/{name}/{SAMPLES}")
        for name, runner in run.executed().items()
        if runner.outputs in record.artifacts and SAMPLES in runner.sample_sets
    }


def saved_outputs_pair(run_dir: Path) -> dict[str, SampleFolder]:
    """The first compared pair's saved outputs, reference first (Torch and ONNX Runtime for a CPU run)."""
    outputs = saved_outputs(run_dir)
    pairs = default_pairs(outputs)
    if not pairs:
        raise HarnessError(
            f"{run_dir}: fewer than two runners' outputs were saved ({', '.join(outputs) or 'none'}); "
            "re-run `harness convert` with at least two backends"
        )
    reference, candidate = pairs[0]
    return {reference: outputs[reference], candidate: outputs[candidate]}
