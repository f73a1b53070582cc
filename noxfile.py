"""Sessions: `convert-<recipe>` for every recipe, `convert -- REF` for any, `convert-all`, `tests`, `bench`, `lint`.

CPU machines get the CPU build of torch pinned below (pip takes it from this machine's disk, fast).
GPU users set HARNESS_TORCH to their own requirement, e.g. HARNESS_TORCH="torch==2.13.0" with a CUDA
index, and HARNESS_EXTRAS=gpu for full TensorRT and onnxruntime-gpu.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).parent
TORCH = os.environ.get("HARNESS_TORCH", "torch==2.13.0")
# The torchvision release paired with TORCH (0.28 pins torch 2.13); installed in the same pip call so
# pip cannot pick a newer torchvision that replaces torch. Only the retinanet recipe and its tests use it.
TORCHVISION = os.environ.get("HARNESS_TORCHVISION", "torchvision==0.28.0")
EXTRAS = os.environ.get("HARNESS_EXTRAS", "rtx")
RECIPES = sorted(p.stem for p in (ROOT / "models" / "recipes").glob("[!_]*.py"))

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]


def install(session: nox.Session, *extras: str) -> None:
    # torch (with its paired torchvision) first: an unpinned torch pulled in by a dependency would fetch
    # a multi-GB CUDA build
    session.install(TORCH, TORCHVISION)
    session.install("-e", f".[{','.join((EXTRAS, 'torch', 'vision', *extras))}]")


def _convert(session: nox.Session, recipe: str) -> None:
    install(session)
    session.run("harness", "convert", recipe, *session.posargs)


for _recipe in RECIPES:
    nox.session(name=f"convert-{_recipe}", python="3.11")(lambda session, _r=_recipe: _convert(session, _r))


@nox.session(name="convert", python="3.11")
def convert_any(session: nox.Session) -> None:
    """`nox -s convert -- REF [args]`: any recipe reference (a name, path/to/recipe.py, package.module:factory)."""
    if not session.posargs:
        session.error("give the recipe after --: nox -s convert -- path/to/recipe.py [harness convert args]")
    install(session)
    session.run("harness", "convert", *session.posargs)


@nox.session(name="convert-all", python="3.11")
def convert_all(session: nox.Session) -> None:
    """Every recipe in turn, then the index page; fails if any recipe fails."""
    install(session)
    failed = []
    for recipe in RECIPES:
        try:
            session.run("harness", "convert", recipe, *session.posargs)
        except nox.command.CommandFailed:
            failed.append(recipe)
    session.run("harness", "index", "artifacts")
    if failed:
        session.error(f"recipes failed: {', '.join(failed)}")


def ensure_chromium(session: nox.Session) -> None:
    """The report's browser test needs Debian's Chromium; install it where we may (root, apt)."""
    if shutil.which("chromium") or not shutil.which("apt-get") or os.geteuid() != 0:
        return
    session.run("apt-get", "update", "-qq", external=True)
    session.run("apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium", external=True)


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """The whole test suite, end-to-end recipe runs included (marked slow, still run here)."""
    install(session, "test")
    ensure_chromium(session)
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Benchmarks -> artifacts/bench/bench.{json,md}; exits 1 if a target is missed; `-- --quick` for a smoke run."""
    install(session)
    session.run("python", "-m", "trt_harness.harness.bench", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


# -- supported versions (issue 12): each declared lower bound of the ONNX toolchain is one that passed --

ONNX_TOOLCHAIN = ("onnx", "onnxruntime", "onnx-graphsurgeon", "polygraphy")
FAST_TESTS = ("-m", "not slow")


def _declared_lower_bounds() -> dict[str, str]:
    """`name -> version` of each ONNX_TOOLCHAIN requirement `"name>=version"` in pyproject.toml."""
    text = (ROOT / "pyproject.toml").read_text()  # (tomllib is not in Python 3.10, which we support)
    bounds = {}
    for name in ONNX_TOOLCHAIN:
        found = re.search(rf'^\s*"{re.escape(name)}>=([^",;]+)', text, flags=re.MULTILINE)
        if found is None:
            raise RuntimeError(f"pyproject.toml declares no `>=` lower bound for {name}")
        bounds[name] = found.group(1).strip()
    return bounds


def _install_toolchain(session: nox.Session, pins: list[str]) -> None:
    constraints = Path(session.create_tmp()) / "onnx-toolchain.txt"
    constraints.write_text("\n".join(pins) + "\n")
    session.install(TORCH, TORCHVISION)
    session.install("-c", str(constraints), "-e", f".[{EXTRAS},torch,vision,test]")
    if pins:
        session.install(*pins)  # reinstalls what a reused environment had at other versions
    session.run("python", "-c", _PRINT_VERSIONS)


_PRINT_VERSIONS = (
    "import importlib.metadata as m; "
    f"print(', '.join(f'{{n}} {{m.version(n)}}' for n in {list(ONNX_TOOLCHAIN)!r}))"
)


@nox.session(name="tests-lowest", python="3.11")
def tests_lowest(session: nox.Session) -> None:
    """The fast tests with the lowest onnx, onnxruntime, onnx-graphsurgeon and polygraphy pyproject.toml allows."""
    _install_toolchain(session, [f"{name}=={version}" for name, version in _declared_lower_bounds().items()])
    session.run("pytest", *FAST_TESTS, *session.posargs)


@nox.session(name="tests-highest", python="3.11")
def tests_highest(session: nox.Session) -> None:
    """The fast tests with the newest onnx toolchain the registry has (what a fresh install gets)."""
    _install_toolchain(session, [])
    session.install("--upgrade", *ONNX_TOOLCHAIN)
    session.run("python", "-c", _PRINT_VERSIONS)
    session.run("pytest", *FAST_TESTS, *session.posargs)


@nox.session(name="mvs-onnxruntime-1.30", python="3.11")
def mvs_onnxruntime_1_30(session: nox.Session) -> None:
    """`convert mvs` on onnxruntime 1.30.0, whose ORT_ENABLE_ALL optimizer once failed on the final model:
    it must pass, or fail in the surgery stage naming the remedy (`-p ort_optimization=...`)."""
    _install_toolchain(session, ["onnxruntime==1.30.0"])
    session.run("harness", "convert", "mvs", "--backends", "torch", "onnxrt", *session.posargs)


# -- version matrix (issue 15): one recipe under each installable onnxruntime (and TensorRT for RTX) --

# The newest patch of every onnxruntime minor from pyproject.toml's lower bound (1.21) on that the
# registry offers for Python 3.11 (`pip index versions onnxruntime`, checked 2026-12: 1.21.0-1.32.0);
# patch releases are bug fixes, so one per minor keeps the matrix to minutes. HARNESS_ORT_VERSIONS="a,b"
# overrides it.
ORT_VERSIONS: tuple[str, ...] = (
    "1.21.1", "1.22.1", "1.23.2", "1.24.4", "1.25.1", "1.26.0",
    "1.27.0", "1.28.0", "1.29.0", "1.30.0", "1.31.1", "1.32.0",
)  # fmt: skip
# TensorRT for RTX: the registry has 1.4-1.7, but pyproject.toml requires >= 1.7 (1.7.1.116 is the only
# one): no axis until a second one installs. HARNESS_RTX_VERSIONS="a,b" overrides it.
RTX_VERSIONS: tuple[str, ...] = ("1.7.1.116",)
VERSION_MATRIX_DIR = ROOT / "artifacts" / "version-matrix"


def _versions(variable: str, default: tuple[str, ...]) -> tuple[str, ...]:
    given = [v.strip() for v in os.environ.get(variable, "").split(",") if v.strip()]
    return tuple(given) or default


def version_matrix_cells() -> list[dict[str, str]]:
    """One cell per onnxruntime version (x TensorRT for RTX version, where more than one installs),
    oldest first: the drift table diffs the first cell's run against each later one."""
    rtx = _versions("HARNESS_RTX_VERSIONS", RTX_VERSIONS)
    return [
        {"onnxruntime": ort, **({"tensorrt-rtx": r} if len(rtx) > 1 else {})}
        for ort in _versions("HARNESS_ORT_VERSIONS", ORT_VERSIONS)
        for r in rtx
    ]


def version_matrix_label(cell: dict[str, str]) -> str:
    return "-".join(f"{name}-{version}" for name, version in cell.items())


@nox.session(name="version-matrix", python="3.11")
def version_matrix(session: nox.Session) -> None:
    """`convert <recipe>` (default mnist; `-- yolov5 -p image_size=320` for another) under each version of
    version_matrix_cells() into artifacts/version-matrix/<recipe>/, then its index page with the drift table."""
    recipe, *args = session.posargs or ["mnist"]
    out = VERSION_MATRIX_DIR / recipe
    shutil.rmtree(out, ignore_errors=True)  # ours: a run of another version list must not be the reference
    install(session)
    for cell in version_matrix_cells():
        session.install(*(f"{name}=={version}" for name, version in cell.items()))
        session.run("python", "-c", _PRINT_VERSIONS)
        # an accuracy failure, ordering mismatch or failed stage under one version is data for the table
        session.run(
            "harness", "convert", recipe, "--out", str(out / version_matrix_label(cell)), *args,
            success_codes=[0, 1, 3, 4],
        )  # fmt: skip
    session.run("harness", "index", str(out), "--drift")
