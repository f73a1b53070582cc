"""Benchmark 4: peak resident memory of comparing few vs many samples, each count in a fresh process.

Samples are made on the fly from the run's first saved sample times (1 + small noise), so only the
comparison could hold memory from one sample to the next. The worker's baseline is its peak RSS after
imports, loading the base arrays and making (and dropping) one sample; what the comparison adds on top
is its growth. Run as `python -m harness.bench.memory SPEC.json SAMPLES [--tracemalloc]` it is that
worker and prints one JSON line.

Linux carries a process's peak RSS (ru_maxrss) across fork and exec, so a worker started directly by
the benchmark would report the benchmark's own peak. The worker is therefore started by a shell that
forks it: a forked shell's child starts a new count. /proc's VmHWM, the peak of the worker's own
address space, is recorded beside it as a cross-check.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.bench.base import (
    BenchResult,
    BenchSettings,
    Table,
    Target,
    fmt_ratio,
    fmt_seconds,
    ratio,
    register_benchmark,
)
from harness.bench.convert import ensure_run, saved_outputs_pair
from harness.cache import ROOT
from models.core.errors import HarnessError
from models.recipe import Tolerance

TITLE = "Peak memory: comparing few vs many samples"
GROWTH_LIMIT = 1.3  # memory added by the many-sample comparison at most 1.3x the few-sample one
NOISE = 1e-5  # relative, far inside any tolerance: the comparison takes its usual path
MIB = 2**20
# ru_maxrss is in kilobytes on Linux, bytes on macOS
_RSS_UNIT = 1 if sys.platform == "darwin" else 1024

Base = Mapping[str, tuple[np.ndarray, np.ndarray]]


def fresh_samples(
    base: Base, pair: Sequence[str], count: int, seed: int
) -> Iterator[dict[str, dict[str, np.ndarray]]]:
    """`count` samples {backend: {output: array}}, each array newly allocated: base * (1 + noise)."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        sample: dict[str, dict[str, np.ndarray]] = {backend: {} for backend in pair}
        for name, arrays in base.items():
            for backend, array in zip(pair, arrays, strict=True):
                if array.dtype.kind != "f":
                    sample[backend][name] = array.copy()
                    continue
                fresh = rng.standard_normal(array.shape, dtype=np.float32).astype(array.dtype, copy=False)
                fresh *= NOISE
                fresh += 1
                fresh *= array
                sample[backend][name] = fresh
        yield sample


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _RSS_UNIT


def vm_hwm_bytes() -> int | None:
    """Peak RSS of this process's address space from /proc (Linux); None elsewhere."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    line = next((line for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return int(line.split()[1]) * 1024 if line else None


def write_spec(
    out_dir: Path,
    pair: tuple[str, str],
    sample: Mapping[str, Mapping[str, np.ndarray]],
    tolerance_for: Callable[[str], Tolerance],
) -> Path:
    """Save one sample {backend: {output: array}} of `pair` as the worker's base: arrays in
    `memory_base.npz`, pair, output names and tolerances in `memory_base.json` (returned)."""
    outputs = [name for name in sample[pair[0]] if name in sample[pair[1]]]
    spec_path = out_dir / "memory_base.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = {
        f"{side}_{i}": sample[backend][name]
        for i, name in enumerate(outputs)
        for side, backend in zip(("ref", "cand"), pair, strict=True)
    }
    np.savez(spec_path.with_suffix(".npz"), **arrays)
    spec = {
        "pair": list(pair),
        "outputs": outputs,
        "shapes": {name: list(sample[pair[0]][name].shape) for name in outputs},
        "dtypes": {name: str(sample[pair[0]][name].dtype) for name in outputs},
        "tolerances": {name: tolerance_for(name).to_json() for name in outputs},
    }
    spec_path.write_text(json.dumps(spec, indent=1))
    return spec_path


def write_run_spec(run_dir: Path, out_dir: Path, tolerance_for: Callable[[str], Tolerance]) -> Path:
    """The worker's base from the run's first saved sample of its first compared pair."""
    from harness.comparing import iterate_saved_outputs

    paths = saved_outputs_pair(run_dir)
    reference, candidate = paths
    return write_spec(out_dir, (reference, candidate), next(iterate_saved_outputs(paths)), tolerance_for)


def measure_in_this_process(spec_path: Path, samples: int, trace: bool) -> dict[str, Any]:
    """Baseline and peak RSS (and tracemalloc's peak) of comparing `samples` fresh samples here."""
    from harness.comparison import compare_runs

    spec = json.loads(spec_path.read_text())
    pair = tuple(spec["pair"])
    tolerances = {name: Tolerance(**t) for name, t in spec["tolerances"].items()}
    with np.load(spec_path.with_suffix(".npz")) as npz:
        base = {name: (npz[f"ref_{i}"], npz[f"cand_{i}"]) for i, name in enumerate(spec["outputs"])}
    for _ in fresh_samples(base, pair, 1, seed=0):
        pass
    baseline, baseline_hwm = peak_rss_bytes(), vm_hwm_bytes()
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    report = compare_runs(
        fresh_samples(base, pair, samples, seed=1), pairs=[pair], tolerance_for=tolerances.__getitem__
    )
    seconds = time.perf_counter() - start
    peak, peak_hwm = peak_rss_bytes(), vm_hwm_bytes()
    traced_peak = tracemalloc.get_traced_memory()[1] if trace else None
    tracemalloc.stop()
    sample_bytes = sum(a.nbytes for arrays in base.values() for a in arrays)
    return {
        "samples": samples,
        "compared_samples": report.samples,
        "bytes_per_sample": sample_bytes,
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak,
        "growth_bytes": peak - baseline,
        "vm_hwm_baseline_bytes": baseline_hwm,
        "vm_hwm_peak_bytes": peak_hwm,
        "tracemalloc_peak_bytes": traced_peak,
        "seconds": seconds,
    }


def measure_in_fresh_process(spec_path: Path, samples: int, trace: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "harness.bench.memory", str(spec_path.resolve()), str(samples)]
    if trace:
        command.append("--tracemalloc")
    # the shell forks the worker, so its ru_maxrss does not start at this process's peak (module docstring)
    forked = ["sh", "-c", '"$@" & wait $!', "sh", *command]
    process = subprocess.run(forked, cwd=ROOT, capture_output=True, text=True)
    if process.returncode != 0:
        raise HarnessError(
            f"the memory worker `{' '.join(command)}` exited with {process.returncode}:\n"
            + process.stderr.strip()[-2000:]
        )
    return json.loads(process.stdout.strip().splitlines()[-1])


def _difference(peak: int | None, baseline: int | None) -> int | None:
    return None if peak is None or baseline is None else peak - baseline


@register_benchmark("memory", TITLE, rank=3)
def memory_benchmark(settings: BenchSettings) -> BenchResult:
    from models.recipes import get_recipe

    run_dir = ensure_run(settings)
    recipe = get_recipe(settings.recipe, **settings.params)
    spec_path = write_run_spec(run_dir, settings.out_dir, recipe.tolerance_for)
    spec = json.loads(spec_path.read_text())
    few, many = settings.memory_samples
    runs = {n: measure_in_fresh_process(spec_path, n, settings.tracemalloc) for n in (few, many)}
    growth = ratio(runs[many]["growth_bytes"], runs[few]["growth_bytes"])
    traced = ratio(runs[many]["tracemalloc_peak_bytes"], runs[few]["tracemalloc_peak_bytes"])
    data = {
        "pair": spec["pair"],
        "shapes": spec["shapes"],
        "dtypes": spec["dtypes"],
        "noise": NOISE,
        "runs": {str(n): r for n, r in runs.items()},
        "growth_ratio": growth,
        "tracemalloc_ratio": traced,
    }

    def mib(value: int | None) -> str:
        return "–" if value is None else f"{value / MIB:.1f}"

    table = Table(
        caption=(
            f"{' vs '.join(spec['pair'])} on outputs {spec['shapes']} "
            f"({mib(runs[few]['bytes_per_sample'])} MiB per sample, both sides), samples made on the fly; "
            "one fresh process per count, measured once; "
            "RSS from getrusage(RUSAGE_SELF).ru_maxrss"
        ),
        header=(
            "samples",
            "baseline RSS MiB",
            "peak RSS MiB",
            "growth MiB",
            "VmHWM growth MiB",
            "tracemalloc peak MiB",
            "time",
        ),
        rows=tuple(
            (
                str(n),
                mib(r["baseline_rss_bytes"]),
                mib(r["peak_rss_bytes"]),
                mib(r["growth_bytes"]),
                mib(_difference(r["vm_hwm_peak_bytes"], r["vm_hwm_baseline_bytes"])),
                mib(r["tracemalloc_peak_bytes"]),
                fmt_seconds(r["seconds"]),
            )
            for n, r in runs.items()
        ),
    )
    notes = (f"tracemalloc peak ratio {many}/{few}: {fmt_ratio(traced)}",) if settings.tracemalloc else ()
    target = Target(
        "memory",
        f"RSS growth over baseline, {many} / {few} samples",
        growth,
        GROWTH_LIMIT,
        "<=",
        ""
        if growth is not None
        else f"the {few}-sample run did not exceed its baseline, so no ratio can be formed",
    )
    return BenchResult("memory", TITLE, data, (target,), (table,), notes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.bench.memory", description="memory benchmark worker"
    )
    parser.add_argument(
        "spec", type=Path, help="memory_base.json written by the benchmark (the .npz beside it)"
    )
    parser.add_argument("samples", type=int)
    parser.add_argument("--tracemalloc", action="store_true", help="also report tracemalloc's peak")
    args = parser.parse_args(argv)
    print(json.dumps(measure_in_this_process(args.spec, args.samples, args.tracemalloc)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
