"""Sessions: `convert-<recipe>` for every recipe, `convert-all`, `tests`, `bench`, `lint`.

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
EXTRAS = os.environ.get("HARNESS_EXTRAS", "rtx")
RECIPES = sorted(p.stem for p in (ROOT / "models" / "recipes").glob("[!_]*.py"))

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]


def install(session: nox.Session, *extras: str) -> None:
    # torch first and alone: an unpinned torch pulled in by a dependency would fetch a multi-GB CUDA build
    session.install(TORCH)
    session.install("-e", f".[{','.join((EXTRAS, 'torch', *extras))}]")


def _convert(session: nox.Session, recipe: str) -> None:
    install(session)
    session.run("harness", "convert", recipe, *session.posargs)


for _recipe in RECIPES:
    nox.session(name=f"convert-{_recipe}", python="3.11")(lambda session, _r=_recipe: _convert(session, _r))


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
    session.install(TORCH)
    session.install("-c", str(constraints), "-e", f".[{EXTRAS},torch,test]")
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
