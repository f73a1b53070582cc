"""The stages of a run, in the order they run: one module each, with its cache key beside it."""

from __future__ import annotations

from harness.stages import base, build, compare, export, precision, run, samples, scan, surgery

STAGES: tuple[base.Stage, ...] = (
    samples.STAGE,
    scan.STAGE,
    export.STAGE,
    surgery.STAGE,
    precision.STAGE,
    build.STAGE,
    run.STAGE,
    compare.STAGE,
)
