"""`python -m trt_harness.harness.bench`: run the benchmarks, write bench.json and bench.md, print the tables.

Exits 0 when every target is met, 1 when one is missed or a benchmark failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from trt_harness.harness.bench.base import BenchSettings, benchmarks
from trt_harness.harness.bench.report import to_markdown, write_report
from trt_harness.harness.bench.suite import run_suite
from trt_harness.models.core.errors import HarnessError

# A smoke run: the same code paths at sizes that take a couple of minutes in all.
QUICK = {
    "params": {"image_size": 160},
    "warm_runs": 2,
    "latency_runs": 5,
    "latency_warmup": 1,
    "batches": (1, 2),
    "compare_samples": 4,
    "compare_repeats": 3,
    "memory_samples": (2, 20),
    "memory_params": {"image_size": 160},
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    full = BenchSettings()
    parser = argparse.ArgumentParser(prog="python -m trt_harness.harness.bench", description=__doc__)
    parser.add_argument(
        "--only", action="append", choices=[b.name for b in benchmarks()], metavar="NAME",
        help="run only this benchmark (repeatable): " + ", ".join(b.name for b in benchmarks()),
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="smoke run: image size 160, few repeats")
    parser.add_argument(
        "--out", type=Path, default=full.out_dir, help=f"output folder (default {full.out_dir})"
    )
    parser.add_argument(
        "--image-size", type=_positive, help=f"yolov5 image size (default {full.params['image_size']})"
    )
    parser.add_argument("--cold-runs", type=_positive, help=f"cold convert runs (default {full.cold_runs})")
    parser.add_argument(
        "--warm-runs",
        type=_positive,
        help=f"warm and tolerance-change convert runs each (default {full.warm_runs})",
    )
    parser.add_argument(
        "--latency-runs", type=_positive, help=f"timed inferences (default {full.latency_runs})"
    )
    parser.add_argument(
        "--latency-warmup", type=_positive, help=f"untimed inferences first (default {full.latency_warmup})"
    )
    parser.add_argument(
        "--batch",
        dest="batches",
        type=_positive,
        nargs="+",
        help=f"latency batch sizes (default {list(full.batches)})",
    )
    parser.add_argument(
        "--threads", type=_positive, default=_usable_cpus(),
        help="threads for Torch and ONNX Runtime alike (default: the usable CPUs)",
    )  # fmt: skip
    parser.add_argument(
        "--compare-samples",
        type=_positive,
        help=f"samples per comparison pass (default {full.compare_samples})",
    )
    parser.add_argument(
        "--compare-repeats", type=_positive, help=f"comparison passes (default {full.compare_repeats})"
    )
    parser.add_argument(
        "--memory-samples", type=_positive, nargs=2, metavar=("FEW", "MANY"),
        help=f"sample counts of the memory benchmark (default {' '.join(map(str, full.memory_samples))})",
    )  # fmt: skip
    parser.add_argument(
        "--memory-image-size", type=_positive,
        help=f"image size of the memory benchmark's runs (default {full.memory_params['image_size']})",
    )  # fmt: skip
    return parser


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    settings = BenchSettings(out_dir=args.out, threads=args.threads)
    if args.quick:
        settings = dataclasses.replace(settings, **QUICK)
    chosen = {
        name: tuple(value) if isinstance(value, list) else value
        for name in ("cold_runs", "warm_runs", "latency_runs", "latency_warmup", "batches", "compare_samples",
                     "compare_repeats", "memory_samples")
        if (value := getattr(args, name)) is not None
    }  # fmt: skip
    if args.image_size is not None:
        chosen["params"] = {**settings.params, "image_size": args.image_size}
    if args.memory_image_size is not None:
        chosen["memory_params"] = {**settings.memory_params, "image_size": args.memory_image_size}
    return dataclasses.replace(settings, **chosen)


def main(argv: Sequence[str] | None = None) -> int:
    from polygraphy.logger import G_LOGGER  # heavy, and only after the TensorRT flavor is chosen

    G_LOGGER.module_severity = G_LOGGER.WARNING  # not its "Loading inference results" lines

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    command = shlex.join(["python", "-m", "trt_harness.harness.bench", *argv])
    try:
        report = run_suite(settings, args.only, command)
        json_path, md_path = write_report(report, settings.out_dir)
    except HarnessError as e:
        print(f"harness.bench: error: {e}", file=sys.stderr)
        return int(e.exit_code)
    print(to_markdown(report))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0 if report.passed else 1  # a missed target fails CI like a failed test


if __name__ == "__main__":
    sys.exit(main())
