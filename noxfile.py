"""Sessions: `convert-<recipe>` for every recipe, `convert-all`, `tests`, `bench`, `lint`.

CPU machines get the CPU build of torch pinned below (pip takes it from this machine's disk, fast).
GPU users set HARNESS_TORCH to their own requirement, e.g. HARNESS_TORCH="torch==2.13.0" with a CUDA
index, and HARNESS_EXTRAS=gpu for full TensorRT and onnxruntime-gpu.
"""

from __future__ import annotations

import os
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
    session.install("-e", f".[{','.join((EXTRAS, *extras))}]")


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
    session.run("python", "-m", "harness.bench", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
