"""`harness` command line: convert, compare, diff, scan, list, index. Exit codes are the CI gate (see ExitCode)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

from trt_harness.harness import cli_scale
from trt_harness.harness.cache import StageCache, cache_dir_from_env
from trt_harness.harness.calibrate import (
    DEFAULT_HEADROOM,
    DEFAULT_REPEATS,
    measure,
    propose,
    run_inputs,
    snippet,
)
from trt_harness.harness.diff import diff_runs, load_run
from trt_harness.harness.drift import drift_diffs, finished_runs
from trt_harness.harness.golden import write_golden
from trt_harness.harness.history import append_run, check_history
from trt_harness.harness.localize import DEFAULT_CHUNK_BYTES
from trt_harness.harness.pipeline import STAGES, localize_and_report, rejudge, run_pipeline
from trt_harness.harness.progress import StageProgress
from trt_harness.harness.stages.base import RunConfig, torch_model
from trt_harness.harness.stages.run import selected_backends
from trt_harness.harness.stages.scan import scan_recipe
from trt_harness.models.core.artifacts import write_text_atomic
from trt_harness.models.core.errors import ExitCode, HarnessError, Interrupted, UsageError
from trt_harness.models.recipe import PRECISIONS, Recipe
from trt_harness.models.recipes import (
    REFERENCE_FORMS,
    available_recipes,
    get_recipe,
    parse_params,
    resolve_recipe,
)
from trt_harness.models.results.calibration import calibration_to_text
from trt_harness.models.results.diff import DEFAULT_FACTOR, DEFAULT_FLOOR, check_gate
from trt_harness.models.results.document import Results
from trt_harness.models.results.history import read_history
from trt_harness.models.results.localize import TensorRTMarking
from trt_harness.models.results.recipe import ToleranceOverrides
from trt_harness.reports.diff import diff_text, write_diff_html, write_diff_json
from trt_harness.reports.index import write_index

DEFAULT_ARTIFACTS = Path("artifacts")


def _add_tolerance_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--atol",
        action="append",
        default=[],
        metavar="[OUTPUT=]X",
        help="absolute tolerance for every output, or OUTPUT=X for one; repeatable; overrides the recipe",
    )
    parser.add_argument(
        "--rtol",
        action="append",
        default=[],
        metavar="[OUTPUT=]X",
        help="relative tolerance for every output, or OUTPUT=X for one; repeatable; overrides the recipe",
    )


def _add_baseline_flags(parser: argparse.ArgumentParser, default_from: str) -> None:
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="an earlier run (folder or results.json) to gate on: exit 1 when an output's p99 or max abs "
        "error grew beyond the factor over it",
    )
    parser.add_argument(
        "--baseline-factor",
        type=float,
        metavar="X",
        help=f"allowed growth over the baseline (default: {default_from} {DEFAULT_FACTOR:g})",
    )
    parser.add_argument(
        "--baseline-floor",
        type=float,
        metavar="X",
        help=f"growth to an error at most X is never a regression (default: {default_from} {DEFAULT_FLOOR:g})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    convert = sub.add_parser("convert", help="run a recipe through every stage and gate on accuracy")
    convert.add_argument("recipe", help=REFERENCE_FORMS)
    convert.add_argument(
        "--weights", type=Path, help="state_dict file (.pt/.pth/.safetensors); default: seeded init"
    )
    convert.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe parameter, e.g. -p image_size=320",
    )
    convert.add_argument("--out", type=Path, default=None, help="run directory (default: artifacts/<recipe>)")
    convert.add_argument("--backends", nargs="+", default=None, help="backends to run (default: all)")
    convert.add_argument(
        "--no-cache", action="store_true", help="re-run every stage; do not read or write the cache"
    )
    convert.add_argument(
        "--precision",
        nargs="+",
        choices=PRECISIONS,
        default=None,
        help="precisions to build and compare, one column each (default: the recipe's, usually fp32)",
    )
    convert.add_argument(
        "--no-fp16-block-list",
        action="store_true",
        help="convert every node to FP16, even those whose FP32 values overflow or underflow FP16",
    )
    _add_tolerance_flags(convert)
    _add_baseline_flags(convert, "the recipe's, normally")
    cli_scale.add_shard_flag(convert)
    _add_history_flag(convert, "append a compact record of this run to DIR/history.jsonl")
    convert.add_argument(
        "--localize",
        action="store_true",
        help="when a comparison fails, compare Torch and ORT layer by layer and name the first module "
        "that diverges (as `harness localize`)",
    )

    compare = sub.add_parser(
        "compare", help="re-run comparison and report from saved outputs, no model is run"
    )
    compare.add_argument(
        "run_dir", type=Path, help="a run directory holding results.json, e.g. artifacts/yolov5"
    )
    _add_tolerance_flags(compare)
    _add_baseline_flags(compare, "the one the run was gated with, else")

    diff = sub.add_parser(
        "diff", help="what changed from run A to run B: every statistic, failures, times and versions"
    )
    diff.add_argument("a", type=Path, help="the earlier run: a run folder or its results.json")
    diff.add_argument("b", type=Path, help="the later run: a run folder or its results.json")
    diff.add_argument(
        "--factor",
        type=float,
        default=DEFAULT_FACTOR,
        help=f"a p99 or max abs error that grew beyond this factor is a regression (default {DEFAULT_FACTOR:g})",
    )
    diff.add_argument(
        "--floor",
        type=float,
        default=DEFAULT_FLOOR,
        help=f"growth to an error at most this is never a regression (default {DEFAULT_FLOOR:g})",
    )
    diff.add_argument("--html", type=Path, metavar="FILE", help="also write the diff as an HTML page")
    diff.add_argument("--json", type=Path, metavar="FILE", help="also write the diff as JSON")

    scan = sub.add_parser("scan", help="list ops the exporter or TensorRT will reject, with their fixes")
    scan.add_argument("recipe", help=REFERENCE_FORMS)
    scan.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")

    listing = sub.add_parser("list", help="list the recipes and where each comes from")
    listing.add_argument("recipe", nargs="*", help=f"also these: {REFERENCE_FORMS}")

    cache = sub.add_parser(
        "cache", help="list or clean the stage cache (HARNESS_CACHE_DIR, default .harness/cache)"
    )
    cache.add_argument("action", choices=("list", "clean"))
    cache.add_argument(
        "--stage", action="append", default=[], help="clean only this stage's entries; repeatable"
    )

    golden = sub.add_parser(
        "golden",
        help="write a run's inputs and outputs as Polygraphy JSON (one file per sample), for `polygraphy run`",
    )
    golden.add_argument("run_dir", type=Path, help="a run directory holding results.json")
    golden.add_argument("--out", type=Path, default=None, help="where to write (default: <run_dir>/golden)")

    index = sub.add_parser("index", help="write the index page over all runs in an artifacts folder")
    index.add_argument("artifacts", type=Path, nargs="?", default=DEFAULT_ARTIFACTS)
    _add_history_index_flags(index)
    _add_calibrate_parser(sub)
    _add_localize_parser(sub)
    cli_scale.add_commands(sub, COMMANDS)  # matrix, merge, bundle, verify
    return parser


def _add_calibrate_parser(sub: argparse._SubParsersAction) -> None:
    calibrate = sub.add_parser(
        "calibrate",
        help="measure each output's noise floor (repeats, ORT threads and optimization levels, CUDA) and "
        "propose tolerances as a recipe snippet",
    )
    calibrate.add_argument("recipe", help=REFERENCE_FORMS)
    calibrate.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    calibrate.add_argument("--weights", type=Path, help="state_dict file; default: the recipe's own")
    calibrate.add_argument(
        "--out", type=Path, default=None, help="run directory (default: artifacts/<recipe>-calibration)"
    )
    calibrate.add_argument(
        "--repeats", type=int, default=DEFAULT_REPEATS, help=f"Torch CPU runs (default {DEFAULT_REPEATS})"
    )
    calibrate.add_argument(
        "--headroom",
        type=float,
        default=DEFAULT_HEADROOM,
        help=f"proposed tolerance = this x the worst measured deviation (default {DEFAULT_HEADROOM:g})",
    )


def _add_localize_parser(sub: argparse._SubParsersAction) -> None:
    localize = sub.add_parser(
        "localize",
        help="compare Torch and ONNX Runtime layer by layer on a saved run's failing sample(s): the first "
        "module that diverges, its source line, the error along the network; FP16: the nodes to keep in FP32; "
        "INT8: the nodes to leave unquantized",
    )
    localize.add_argument("run_dir", type=Path, help="a run directory holding results.json")
    localize.add_argument(
        "--samples", type=int, default=1, help="how many failing samples to compare (default 1)"
    )
    localize.add_argument(
        "--chunk-mib",
        type=float,
        default=DEFAULT_CHUNK_BYTES / 2**20,
        help="intermediate tensors exposed per ONNX Runtime session, in MiB of one sample "
        f"(default {DEFAULT_CHUNK_BYTES / 2**20:g})",
    )
    localize.add_argument(
        "--tensorrt",
        action="store_true",
        help="also build the final model with the mapped tensors marked (debug / outputs, ahead of time) "
        "and, where a GPU the engine runs on exists, compare Torch with TensorRT layer by layer",
    )


def _add_history_flag(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--history", type=Path, metavar="DIR", help=help)


def _add_history_index_flags(index: argparse.ArgumentParser) -> None:
    _add_history_flag(index, "draw each output's error over the runs recorded in DIR/history.jsonl")
    index.add_argument(
        "--drift",
        action="store_true",
        help="add a drift table: the earliest run of each model against its runs under other versions",
    )


def cmd_convert(args: argparse.Namespace) -> int:
    recipe = get_recipe(args.recipe, **parse_params(args.param))
    overrides = ToleranceOverrides.parse(args.atol, args.rtol)
    unknown = overrides.unknown_outputs(recipe.output_names)
    if unknown:
        raise UsageError(
            f"tolerance given for unknown output(s) {unknown}; recipe outputs: {list(recipe.output_names)}"
        )
    backends = tuple(args.backends) if args.backends else None
    selected_backends(backends)  # an unknown name is a usage error before any stage runs
    if args.weights is not None:
        _check_weights(recipe, args.weights)
    if args.history is not None:
        check_history(args.history)  # a damaged history is a usage error before any stage runs
    out_dir = args.out or DEFAULT_ARTIFACTS / recipe.name
    config = RunConfig(
        recipe,
        out_dir,
        weights=args.weights,
        overrides=overrides,
        backends=backends,
        cache_dir=None if args.no_cache else cache_dir_from_env(),
        precisions=tuple(args.precision) if args.precision else None,
        fp16_auto_block_list=not args.no_fp16_block_list,
        baseline=args.baseline,
        baseline_factor=args.baseline_factor,
        baseline_floor=args.baseline_floor,
        shard=args.shard,
    )
    with StageProgress(f"convert {recipe.name}") as progress:
        results = run_pipeline(config, progress)
    if args.history is not None:
        print(f"history: {append_run(args.history, results, args.weights, out_dir)}")
    if args.localize and results.verdict.exit_code == ExitCode.ACCURACY_FAILED:
        results = localize_and_report(out_dir, recipe)
        _print_localization(results)
    return _finish(results, out_dir)


def cmd_localize(args: argparse.Namespace) -> int:
    if args.samples < 1 or args.chunk_mib <= 0:
        raise UsageError("--samples must be >= 1 and --chunk-mib > 0")
    results = localize_and_report(
        args.run_dir, samples=args.samples, chunk_bytes=int(args.chunk_mib * 2**20), tensorrt=args.tensorrt
    )
    _print_localization(results)
    print(f"report: {args.run_dir / 'report.html'}")
    return int(ExitCode.PASSED)


def _print_localization(results: Results) -> None:
    localization = results.localization
    for curve in localization.curves if localization else ():
        layer = curve.divergence
        where = (
            f"{layer.module} ({layer.class_name}) at {layer.source}, tensor {layer.tensor}"
            if layer
            else "none (every compared layer is within its scaled tolerance)"
        )
        print(f"{curve.precision}: {len(curve.layers)} layers compared; first divergence: {where}")
    triage = localization.fp16_triage if localization else None
    if triage is not None:
        print(f"fp16: keep {len(triage.block_list)} node(s) in FP32: {triage.recipe_option}")
    int8 = localization.int8_triage if localization else None
    if int8 is not None:
        verdict = "within" if int8.fixed else "still out of"
        print(
            f"int8: leave {len(int8.excluded)} of {int8.quantizable_nodes} quantizable node(s) unquantized "
            f"({', '.join(int8.modules) or 'no module'}): error {int8.tolerance_ratio_before:.3g}x -> "
            f"{int8.tolerance_ratio_after:.3g}x tolerance ({verdict}); {int8.cli_option}"
        )
    marking = localization.tensorrt_marking if localization else None
    if marking is not None:
        _print_tensorrt_marking(marking)
    for note in localization.notes if localization else ():
        print(f"note: {note}")


def _print_tensorrt_marking(marking: TensorRTMarking) -> None:
    if marking.not_built:
        print(f"tensorrt: marked builds not made: {marking.not_built}")
    for b in marking.builds:
        if b.built:
            engine = b.engine_layers if b.engine_layers is not None else "not counted"
            what = (
                "unmarked build"
                if b.marking == "none"
                else f"{b.marking}-marked build: {b.marked} tensor(s) marked"
            )
            print(f"tensorrt {what}, network {b.network_layers} layers, engine {engine} layers")
        else:
            print(f"tensorrt {b.marking} marking: not built: {b.reason}")
    if marking.curve is not None:
        layer = marking.curve.divergence
        print(
            f"tensorrt: {len(marking.curve.layers)} layers compared; first divergence: {layer.module if layer else 'none'}"
        )
    elif marking.not_executed:
        print(f"tensorrt: TensorRT side not executed: {marking.not_executed}")


def _check_weights(recipe: Recipe, weights: Path) -> None:
    """Load the weights once up front so a bad file is a usage error before any stage runs."""
    if not weights.is_file():
        raise UsageError(f"--weights {weights}: no such file")
    torch_model(recipe, weights)  # the stages reuse this build


def cmd_compare(args: argparse.Namespace) -> int:
    overrides = ToleranceOverrides.parse(args.atol, args.rtol)
    results = rejudge(args.run_dir, overrides, args.baseline, args.baseline_factor, args.baseline_floor)
    return _finish(results, args.run_dir)


def cmd_diff(args: argparse.Namespace) -> int:
    check_gate(args.factor, args.floor)
    diff = diff_runs(
        load_run(args.a),
        load_run(args.b),
        factor=args.factor,
        floor=args.floor,
        sources=(str(args.a), str(args.b)),
    )
    print(diff_text(diff), end="")
    for flag, path, write in (("--html", args.html, write_diff_html), ("--json", args.json, write_diff_json)):
        if path is not None:
            try:
                print(f"{flag[2:]}: {write(diff, path)}")
            except OSError as e:
                raise UsageError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None
    return int(ExitCode.PASSED if diff else ExitCode.ACCURACY_FAILED)


def cmd_scan(args: argparse.Namespace) -> int:
    recipe = get_recipe(args.recipe, **parse_params(args.param))
    findings = scan_recipe(recipe, torch_model(recipe, None), recipe.sample_inputs()[0]).findings
    if not findings:
        print(f"{recipe.name}: no op that the {recipe.export.exporter} exporter or TensorRT rejects")
        return int(ExitCode.PASSED)
    print(f"{recipe.name}: {len(findings)} problem op(s)")
    for f in findings:
        fix = f"fix: replacement '{f.replacement}'" if f.replacement else "no replacement known"
        print(f"  {f.op} x{f.count} at {f.location}: {f.reason}; {fix}")
    return int(ExitCode.PASSED)


def cmd_golden(args: argparse.Namespace) -> int:
    written = write_golden(args.run_dir, args.out)
    for path in written:
        print(path)
    return int(ExitCode.PASSED)


def cmd_list(args: argparse.Namespace) -> int:
    """One line per recipe: its name, where it comes from (built-in, file, module, entry point), and where."""
    found = [*available_recipes(), *(resolve_recipe(ref) for ref in args.recipe)]
    for r in found:
        digest = f"  sha256 {r.origin.sha256[:12]}" if r.origin.sha256 and r.origin.kind != "built-in" else ""
        print(f"{r.name:<16} {r.origin.kind:<12} {r.origin.location}{digest}")
    return int(ExitCode.PASSED)


def cmd_cache(args: argparse.Namespace) -> int:
    cache = StageCache(cache_dir_from_env())
    unknown = sorted(set(args.stage or ()) - {stage.name for stage in STAGES})
    if unknown:
        raise UsageError(
            f"--stage {' '.join(unknown)}: no such stage; stages: {', '.join(s.name for s in STAGES)}"
        )
    if args.action == "clean":
        print(f"removed {cache.clean(args.stage)} cache entries from {cache.root}")
        return int(ExitCode.PASSED)
    rows = cache.entries()
    for row in rows:
        print(f"{row['stage']:<8} {row['key'][:16]}  {row['size_bytes'] / 2**20:8.1f} MiB")
    print(f"{len(rows)} entries, {sum(r['size_bytes'] for r in rows) / 2**20:.1f} MiB in {cache.root}")
    return int(ExitCode.PASSED)


def cmd_index(args: argparse.Namespace) -> int:
    cli_scale.merge_shard_folders(args.artifacts)  # run folders from many CI jobs: shards become one run
    history = read_history(check_history(args.history)) if args.history is not None else ()
    drift = drift_diffs(finished_runs(args.artifacts)) if args.drift else ()
    path = write_index(args.artifacts, history=history, drift=drift)
    print(path)
    return int(ExitCode.PASSED)


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Convert with Torch and ORT (for the final ONNX model and the samples), then measure the variants."""
    recipe = get_recipe(args.recipe, **parse_params(args.param))
    if args.weights is not None:
        _check_weights(recipe, args.weights)
    out_dir = args.out or DEFAULT_ARTIFACTS / f"{recipe.name}-calibration"
    config = RunConfig(
        recipe, out_dir, weights=args.weights, backends=("torch", "onnxrt"), cache_dir=cache_dir_from_env()
    )
    with StageProgress(f"calibrate {recipe.name}") as progress:
        results = run_pipeline(config, progress)
    onnx, feeds = run_inputs(results, out_dir)
    measured = measure(recipe, onnx, feeds, lambda: torch_model(recipe, args.weights), repeats=args.repeats)
    calibration = propose(recipe, measured, args.headroom)
    write_text_atomic(out_dir / "calibration.json", calibration_to_text(calibration))
    text = snippet(calibration)
    write_text_atomic(out_dir / "tolerances.py", text)
    print(text, end="")
    print(f"snippet: {out_dir / 'tolerances.py'}; measurements: {out_dir / 'calibration.json'}")
    return int(ExitCode.PASSED)


def _finish(results: Results, out_dir: Path) -> int:
    verdict = results.verdict
    print(f"{'PASS' if verdict.passed else 'FAIL'}: {verdict.summary}")
    print(f"report: {out_dir / 'report.html'}")
    return verdict.exit_code


COMMANDS = {
    "convert": cmd_convert,
    "compare": cmd_compare,
    "diff": cmd_diff,
    "scan": cmd_scan,
    "list": cmd_list,
    "cache": cmd_cache,
    "index": cmd_index,
    "golden": cmd_golden,
    "calibrate": cmd_calibrate,
    "localize": cmd_localize,
}


def _raise_interrupted(signum: int, frame: object) -> None:
    if signum == signal.SIGTERM:
        raise Interrupted("SIGTERM", ExitCode.TERMINATED)
    raise Interrupted("SIGINT", ExitCode.INTERRUPTED)


@contextlib.contextmanager
def _signals_as_interruptions() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` (which no `except Exception` swallows) while the CLI runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _signals_as_interruptions():
            return COMMANDS[args.command](args)
    except HarnessError as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return int(e.exit_code)
    except (KeyboardInterrupt, Interrupted) as e:
        name = e.signal_name if isinstance(e, Interrupted) else "SIGINT"
        where = f" in stage '{e.stage}'" if isinstance(e, Interrupted) and e.stage else ""
        print(
            f"harness: interrupted by {name}{where}; the files of finished stages are intact: run the "
            "same command again to go on (finished stages come from the cache)",
            file=sys.stderr,
        )
        return int(e.exit_code if isinstance(e, Interrupted) else ExitCode.INTERRUPTED)
    except Exception:
        traceback.print_exc()
        print(
            "harness: internal error (a bug in the harness, not a verdict on the model); please report the traceback above",
            file=sys.stderr,
        )
        return int(ExitCode.INTERNAL_ERROR)


if __name__ == "__main__":
    sys.exit(main())
