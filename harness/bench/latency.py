"""Benchmark 2: inference latency of the recipe's model in Torch eager (FP32, inference mode) vs ONNX
Runtime's CPU provider on the run's final ONNX model, and on any precision variant beside it.

Both get the same number of threads. Engines are timed in interleaved rounds (each round runs every
engine once), so load from other processes on a shared machine hits them alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from trt_harness.harness.bench.base import (
    BenchResult,
    BenchSettings,
    Table,
    Target,
    fmt_ratio,
    fmt_seconds,
    median,
    percentile,
    ratio,
    register_benchmark,
)
from trt_harness.harness.bench.convert import ensure_run
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.recipe import Feed
from trt_harness.models.recipes import get_recipe

TITLE = "Inference latency: Torch eager vs ONNX Runtime (CPU)"
ORT_LIMIT = 0.7  # ORT's median latency at batch 1 at most 70% of Torch eager's
TARGET_BATCH = 1
TORCH = "torch"
ORT = "onnxrt"
FINAL_ONNX = "model.final.onnx"
EXPORTED_ONNX = "model.onnx"  # the final model when the recipe has no surgery passes
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}

Infer = Callable[[], object]


def onnx_models(run_dir: Path) -> dict[str, Path]:
    """Engine label -> ONNX file: the run's final model as "onnxrt", and each precision variant
    `model.final.<precision>.onnx` as "onnxrt-<precision>"."""
    final = next((run_dir / n for n in (FINAL_ONNX, EXPORTED_ONNX) if (run_dir / n).is_file()), None)
    if final is None:
        raise HarnessError(
            f"{run_dir} holds neither {FINAL_ONNX} nor {EXPORTED_ONNX}; run `harness convert` first"
        )
    models = {ORT: final}
    for variant in sorted(run_dir.glob("model.final.*.onnx")):
        precision = variant.name[len("model.final.") : -len(".onnx")]
        models[f"{ORT}-{precision}"] = variant
    return models


def batch_feed(feeds: Sequence[Feed], batch: int) -> Feed:
    """`batch` rows taken in turn from the sample feeds' rows, for a model with a dynamic first axis."""
    feed = {}
    for name in feeds[0]:
        rows = np.concatenate([f[name] for f in feeds])
        feed[name] = np.ascontiguousarray(rows[np.arange(batch) % len(rows)])
    return feed


def ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort  # heavy: only when latency is measured

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_infer(session: Any, feed: Feed) -> Infer:
    # an FP16 variant without FP32 inputs takes FP16 arrays; cast once, outside the timing
    typed = {
        i.name: feed[i.name].astype(_ORT_DTYPES.get(i.type, feed[i.name].dtype), copy=False)
        for i in session.get_inputs()
    }
    return lambda: session.run(None, typed)


def torch_infer(model: Any, feed: Feed, input_names: Sequence[str]) -> Infer:
    import torch  # heavy: only when latency is measured

    tensors = [torch.from_numpy(feed[name]) for name in input_names]

    def infer() -> object:
        with torch.inference_mode():
            return model(*tensors)

    return infer


def time_interleaved(
    runners: Mapping[str, Infer], *, runs: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Seconds per call of each runner over `runs` rounds, after `warmup` untimed calls each.

    A runner whose warm-up raises is left out and its error returned: a broken precision variant
    must not stop the benchmark of the others.
    """
    live: dict[str, Infer] = {}
    errors: dict[str, str] = {}
    for name, infer in runners.items():
        try:
            for _ in range(warmup):
                infer()
        except Exception as e:  # any engine error: reported, the other engines still measured
            errors[name] = f"{type(e).__name__}: {e}"
            continue
        live[name] = infer
    samples: dict[str, list[float]] = {name: [] for name in live}
    for _ in range(runs):
        for name, infer in live.items():
            start = time.perf_counter()
            infer()
            samples[name].append(time.perf_counter() - start)
    return samples, errors


def measure_latency(
    model: Any,
    onnx_files: Mapping[str, Path],
    feeds: Mapping[int, Feed],
    input_names: Sequence[str],
    *,
    runs: int,
    warmup: int,
    threads: int,
) -> dict[str, Any]:
    """Latency samples, medians and p90s per batch size and engine, and ORT/Torch median ratios."""
    import torch  # heavy: only when latency is measured

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        sessions: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for label, path in onnx_files.items():
            try:
                sessions[label] = ort_session(path, threads)
            except Exception as e:  # e.g. an FP16 op the CPU provider lacks: reported, not fatal
                errors[label] = f"{type(e).__name__}: {e}"
        batches: dict[str, dict[str, Any]] = {}
        ratios: dict[str, dict[str, float | None]] = {}
        for batch, feed in feeds.items():
            runners = {TORCH: torch_infer(model, feed, input_names)}
            runners.update({label: ort_infer(session, feed) for label, session in sessions.items()})
            samples, failed = time_interleaved(runners, runs=runs, warmup=warmup)
            errors.update({f"{label} (batch {batch})": message for label, message in failed.items()})
            batches[str(batch)] = {
                name: {"samples_s": xs, "median_s": median(xs), "p90_s": percentile(xs, 90)}
                for name, xs in samples.items()
            }
            torch_median = batches[str(batch)].get(TORCH, {}).get("median_s")
            ratios[str(batch)] = {
                label: ratio(stats["median_s"], torch_median)
                for label, stats in batches[str(batch)].items()
                if label != TORCH
            }
        first_session = next(iter(sessions.values()), None)
        thread_counts = {
            "requested": threads,
            "torch_intra_op": torch.get_num_threads(),
            "torch_inter_op": torch.get_num_interop_threads(),
            "ort_intra_op": first_session.get_session_options().intra_op_num_threads
            if first_session
            else None,
            "ort_inter_op": first_session.get_session_options().inter_op_num_threads
            if first_session
            else None,
        }
    finally:
        torch.set_num_threads(previous_threads)
    return {
        "threads": thread_counts,
        "ort_graph_optimization_level": "ORT_ENABLE_ALL",
        "ort_providers": ["CPUExecutionProvider"],
        "torch_mode": "eager, FP32, torch.inference_mode(), eval()",
        "runs": runs,
        "warmup": warmup,
        "models": {label: path.name for label, path in onnx_files.items()},
        "batches": batches,
        "ratios_to_torch": ratios,
        "errors": errors,
    }


@register_benchmark("latency", TITLE, rank=1)
def latency_benchmark(settings: BenchSettings) -> BenchResult:
    run_dir = ensure_run(settings)
    recipe = get_recipe(settings.recipe, **settings.params)
    samples = recipe.sample_inputs()
    data = measure_latency(
        recipe.build_model(None),  # the run's model: `harness convert` without --weights
        onnx_models(run_dir),
        {batch: batch_feed(samples, batch) for batch in settings.batches},
        recipe.input_names,
        runs=settings.latency_runs,
        warmup=settings.latency_warmup,
        threads=settings.threads,
    )
    rows = []
    for batch, engines in data["batches"].items():
        for label, stats in engines.items():
            rows.append(
                (
                    batch,
                    label,
                    "(the recipe's model)" if label == TORCH else data["models"][label],
                    fmt_seconds(stats["median_s"]),
                    fmt_seconds(stats["p90_s"]),
                    "1" if label == TORCH else fmt_ratio(data["ratios_to_torch"][batch].get(label)),
                )
            )
    threads = data["threads"]
    table = Table(
        caption=(
            f"{data['runs']} timed runs after {data['warmup']} warm-up runs, interleaved; threads: Torch "
            f"intra-op {threads['torch_intra_op']}, ORT intra-op {threads['ort_intra_op']} "
            f"(inter-op {threads['ort_inter_op']}), ORT_ENABLE_ALL, CPUExecutionProvider"
        ),
        header=("batch", "engine", "model", "median", "p90", "median / Torch"),
        rows=tuple(rows),
    )
    notes = tuple(f"not measured: {label}: {message}" for label, message in data["errors"].items())
    targets = ()
    if str(TARGET_BATCH) in data["ratios_to_torch"]:
        targets = (
            Target(
                "latency",
                f"ORT / Torch median latency, batch {TARGET_BATCH}, {data['models'][ORT]}",
                data["ratios_to_torch"][str(TARGET_BATCH)].get(ORT),
                ORT_LIMIT,
                "<=",
            ),
        )
    return BenchResult("latency", TITLE, data, targets, (table,), notes)
