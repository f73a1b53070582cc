"""Benchmark: `harness localize` on the recipe's run, side by side with Polygraphy's mark-all on the same input.

Both run as the real command lines, each in a fresh process whose peak RSS is measured
(`harness.bench.memory.measure_peak_rss`):

- `harness localize <run dir>`: rebuilds the Torch model, compares every mapped module's output with
  ONNX Runtime (bounded chunks of exposed tensors), writes results.json and the report;
- `polygraphy run model.final.onnx --onnxrt --onnx-outputs mark all --load-inputs <the same sample>
  --save-outputs <file>`: ORT only, no Torch side, no mapping to modules.

Bytes written: the files `harness localize` changed in the run folder (results.json, report, JUnit),
and Polygraphy's saved outputs. The run is the pipeline benchmark's when it holds a module map,
else one of its own (`--backends torch onnxrt`).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from trt_harness.harness.bench.base import BenchResult, BenchSettings, Table, Target, register_benchmark
from trt_harness.harness.bench.convert import cli_command, param_args, run_harness, saved_results
from trt_harness.harness.bench.memory import measure_peak_rss
from trt_harness.harness.golden import write_golden
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.results.comparisons import SAMPLES
from trt_harness.models.results.document import RESULTS_FILE

TITLE = "Localization: `harness localize` vs `polygraphy run --onnx-outputs mark all`"
WALL_LIMIT_S = 60.0
RSS_LIMIT_BYTES = 2 * 2**30
MIB = 2**20


def localize_run_dir(settings: BenchSettings) -> Path:
    """A run of the settings' recipe with a module map: the pipeline benchmark's, else one of our own."""
    for run_dir in (settings.run_dir, settings.out_dir / "localize-run"):
        results = saved_results(run_dir)
        if (
            results is not None
            and results.recipe.name == settings.recipe
            and all(results.recipe.params.get(k) == v for k, v in settings.params.items())
            and any("module_map" in s.artifacts for s in results.stages)
            and results.stage("run") is not None
            and results.stage("run").done
        ):
            return run_dir
    run_dir = settings.out_dir / "localize-run"
    command = cli_command(
        "convert",
        settings.recipe,
        *param_args(settings.params),
        "--backends",
        "torch",
        "onnxrt",
        "--out",
        str(run_dir.resolve()),
    )
    run_harness(command, run_dir / RESULTS_FILE, settings.cache_dir)
    return run_dir


def _written_since(folder: Path, start: float) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.stat().st_mtime >= start)


def _first_input_file(run_dir: Path, scratch: Path) -> Path:
    """The first sample's feed as Polygraphy's `--load-inputs` reads it (a list of one feed dict)."""
    write_golden(run_dir, scratch)
    inputs = sorted((scratch / SAMPLES / "inputs").glob("*.json"))
    if not inputs:
        raise HarnessError(f"{run_dir}: `harness golden` wrote no input file")
    feed = json.loads(inputs[0].read_text())
    target = scratch / "input.json"
    target.write_text(json.dumps(feed if isinstance(feed, list) else [feed]))
    return target


def localize_data(settings: BenchSettings) -> dict[str, Any]:
    import time

    run_dir = localize_run_dir(settings)
    start = time.time() - 1  # mtime granularity
    localize = measure_peak_rss(cli_command("localize", str(run_dir.resolve())))
    if localize["exit_code"] != 0:
        raise HarnessError("`harness localize` failed:\n" + "\n".join(localize["output_tail"]))
    localize["bytes_written"] = _written_since(run_dir, start)
    results = saved_results(run_dir)
    curve = results.localization.curves[0] if results and results.localization else None

    scratch = settings.out_dir / "localize-polygraphy"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    outputs = scratch / "outputs.json"
    model = run_dir / "model.final.onnx"
    command = [
        str(Path(sys.executable).with_name("polygraphy")),
        "run",
        str(model.resolve()),
        "--onnxrt",
        "--onnx-outputs",
        "mark",
        "all",
        "--load-inputs",
        str(_first_input_file(run_dir, scratch).resolve()),
        "--save-outputs",
        str(outputs.resolve()),
    ]
    polygraphy = measure_peak_rss(command)
    polygraphy["bytes_written"] = outputs.stat().st_size if outputs.is_file() else 0
    shutil.rmtree(scratch, ignore_errors=True)  # hundreds of MB: measured, not kept
    return {
        "run_dir": str(run_dir),
        "localize": localize,
        "polygraphy": polygraphy,
        "layers_compared": len(curve.layers) if curve else None,
        "chunks": curve.chunks if curve else None,
        "first_divergence": curve.first_divergence if curve else None,
    }


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value / MIB:.1f}"


def localize_result(data: dict[str, Any]) -> BenchResult:
    loc, poly = data["localize"], data["polygraphy"]
    table = Table(
        caption=f"one fresh process each, on {data['run_dir']}; peak RSS is the process's ru_maxrss",
        header=("command", "exit code", "wall s", "peak RSS MiB", "bytes written MiB"),
        rows=(
            ("harness localize", str(loc["exit_code"]), f"{loc['wall_s']:.1f}", _mib(loc["peak_rss_bytes"]),
             _mib(loc["bytes_written"])),
            ("polygraphy run --onnxrt --onnx-outputs mark all", str(poly["exit_code"]), f"{poly['wall_s']:.1f}",
             _mib(poly["peak_rss_bytes"]), _mib(poly["bytes_written"])),
        ),
    )  # fmt: skip
    targets = (
        Target("localize", "wall time of `harness localize` (s)", loc["wall_s"], WALL_LIMIT_S, "<="),
        Target("localize", "peak RSS of `harness localize` (bytes)", loc["peak_rss_bytes"], RSS_LIMIT_BYTES, "<="),
        Target(
            "localize",
            "peak RSS of `harness localize` / Polygraphy mark-all",
            loc["peak_rss_bytes"] / poly["peak_rss_bytes"] if poly["exit_code"] == 0 else None,
            1.0,
            "<=",
            "" if poly["exit_code"] == 0 else f"polygraphy exited with {poly['exit_code']}",
        ),
    )  # fmt: skip
    notes = (
        f"{data['layers_compared']} module outputs compared in {data['chunks']} ORT session(s); "
        f"first divergence: {data['first_divergence'] or 'none'}",
    )
    return BenchResult("localize", TITLE, data, targets, (table,), notes)


@register_benchmark("localize", TITLE, rank=5)
def localize_benchmark(settings: BenchSettings) -> BenchResult:
    return localize_result(localize_data(settings))
