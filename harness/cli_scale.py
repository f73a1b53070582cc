"""Subcommands for scaling out and for target devices: `matrix`, `merge`, `bundle`, `verify`, and the
`--shard i/n` option of `convert`. Registered by harness.cli in one call (`add_commands`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from trt_harness.harness.matrix import FORMATS, TARGETS, job_matrix, matrix_document
from trt_harness.models.core.errors import ExitCode, UsageError
from trt_harness.models.recipe import PRECISIONS


def parse_shard(text: str) -> tuple[int, int]:
    """`--shard 2/3` -> (1, 3): the 0-based index and the count."""
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = 0
    if not sep or n < 1 or not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"{text!r}: expected I/N with 1 <= I <= N, e.g. --shard 2/3")
    return i - 1, n


def add_shard_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shard",
        type=parse_shard,
        metavar="I/N",
        help="judge only the I-th of N equal slices of the recipe's samples (one CI job each); "
        "`harness merge` or `harness index` merges the N run folders into one verdict",
    )


def _runners(values: list[str]) -> dict[str, str]:
    found = {}
    for value in values:
        target, sep, label = value.partition("=")
        if not sep or target not in TARGETS or not label:
            raise UsageError(
                f"--runs-on {value!r}: expected TARGET=LABEL with TARGET one of {', '.join(TARGETS)}"
            )
        found[target] = label
    return found


def cmd_matrix(args: argparse.Namespace) -> int:
    cells = job_matrix(
        args.recipe, args.precision, args.target or ["rtx"], args.shards, _runners(args.runs_on)
    )
    print(
        json.dumps(
            matrix_document(cells, args.format),
            separators=(",", ":") if args.compact else None,
            indent=None if args.compact else 2,
        )
    )
    return int(ExitCode.PASSED)


def cmd_merge(args: argparse.Namespace) -> int:
    # the pipeline's writers: results.json and the report, as a run writes them
    from trt_harness.harness.pipeline import write_results
    from trt_harness.harness.shards import merge_shards

    results = merge_shards(args.run_dirs)
    write_results(results, args.out)
    verdict = results.verdict
    print(f"{'PASS' if verdict.passed else 'FAIL'}: {verdict.summary}")
    print(f"report: {args.out / 'report.html'}")
    return verdict.exit_code


def merge_shard_folders(artifacts: Path) -> list[Path]:
    """`harness index`: merge each set of shard run folders under `artifacts` into `<cell>-merged`."""
    from trt_harness.harness.pipeline import write_results
    from trt_harness.harness.shards import find_shard_groups, merge_shards

    written = []
    for name, dirs in find_shard_groups(artifacts).items():
        results = merge_shards(dirs)
        write_results(results, artifacts / name)
        print(
            f"{artifacts / name}: {'PASS' if results.verdict.passed else 'FAIL'} merged from {len(dirs)} shards"
        )
        written.append(artifacts / name)
    return written


def add_commands(
    sub: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]
) -> None:
    matrix = sub.add_parser(
        "matrix", help="print the CI job matrix (recipes x precisions x build targets) as JSON"
    )
    matrix.add_argument(
        "--format",
        choices=FORMATS,
        default="github",
        help="github: strategy.matrix include form; gitlab: parallel:matrix",
    )
    matrix.add_argument(
        "--recipe", action="append", default=None, help="a recipe to include; repeatable (default: all)"
    )
    matrix.add_argument(
        "--precision",
        action="append",
        default=None,
        choices=PRECISIONS,
        help="repeatable (default: each recipe's own)",
    )
    matrix.add_argument(
        "--target",
        action="append",
        default=None,
        choices=tuple(TARGETS),
        help="build target; repeatable (default: rtx)",
    )
    matrix.add_argument(
        "--shards", type=int, default=1, help="split each cell's samples over N jobs (default 1)"
    )
    matrix.add_argument(
        "--runs-on",
        action="append",
        default=[],
        metavar="TARGET=LABEL",
        help="runner label for a target's jobs",
    )
    matrix.add_argument("--compact", action="store_true", help="one line (for $GITHUB_OUTPUT)")
    commands["matrix"] = cmd_matrix

    merge = sub.add_parser(
        "merge", help="one verdict from the run folders of every shard of a run (convert --shard)"
    )
    merge.add_argument("run_dirs", type=Path, nargs="+")
    merge.add_argument("--out", type=Path, required=True, help="where to write the merged results and report")
    commands["merge"] = cmd_merge
    add_target_device_commands(sub, commands)


def cmd_bundle(args: argparse.Namespace) -> int:
    from trt_harness.harness.bundle import bundle_size_bytes, default_bundle_dir, write_bundle
    from trt_harness.reports.formatting import size

    out = args.out or default_bundle_dir(args.run_dir)
    manifest = write_bundle(args.run_dir, out, samples_only=args.samples_only)
    files = sum(len(a.members) for a in manifest.artifacts.values())
    print(
        f"bundle: {out} ({files} files, {size(bundle_size_bytes(manifest))}; "
        f"recipe {manifest.recipe.name}, precisions {', '.join(manifest.precisions)})"
    )
    print(f"on the target device: harness verify {out}")
    return int(ExitCode.PASSED)


def cmd_verify(args: argparse.Namespace) -> int:
    # imported by the one command that needs it (as `merge` does), keeping `harness matrix` light
    from trt_harness.harness.verify import verify_bundle

    precisions = tuple(args.precision) if args.precision else None
    results, out = verify_bundle(args.bundle, args.out, args.engine, precisions)
    verdict = results.verdict
    print(f"{'PASS' if verdict.passed else 'FAIL'}: {verdict.summary}")
    print(f"report: {out / 'report.html'}")
    return verdict.exit_code


def add_target_device_commands(
    sub: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]
) -> None:
    bundle = sub.add_parser(
        "bundle",
        help="write a small folder (final ONNX, inputs, reference outputs, tolerances, hashes) that "
        "`harness verify` checks an engine with on the target device, without torch",
    )
    bundle.add_argument("run_dir", type=Path, help="a finished run folder (harness convert --out)")
    bundle.add_argument(
        "--out", type=Path, default=None, help="the bundle folder (default: <run_dir>-bundle)"
    )
    bundle.add_argument(
        "--samples-only",
        action="store_true",
        help="only the recipe's samples, not the batches at the profile's min/opt/max shapes (smaller)",
    )
    commands["bundle"] = cmd_bundle

    verify = sub.add_parser(
        "verify",
        help="on the target device: build (or load) the engine, run ONNX Runtime and TensorRT on a "
        "bundle's inputs and judge them against its reference outputs (no torch needed)",
    )
    verify.add_argument("bundle", type=Path, help="a folder `harness bundle` wrote")
    verify.add_argument(
        "--engine",
        type=Path,
        default=None,
        help="an engine built earlier on this device, instead of building",
    )
    verify.add_argument(
        "--precision",
        nargs="+",
        choices=PRECISIONS,
        default=None,
        help="precisions to verify (default: every one the bundle holds; one with --engine)",
    )
    verify.add_argument("--out", type=Path, default=None, help="run folder (default: <bundle>/verify)")
    commands["verify"] = cmd_verify
