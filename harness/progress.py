"""Stage progress: a live rich display in a terminal, one plain line per stage under CI=true."""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from rich.console import Console
from trt_harness.models.results.stages import StageRecord

_STYLE = {"ok": "green", "cached": "cyan", "skipped": "yellow", "failed": "red", "interrupted": "red"}


def is_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


class StageProgress:
    """`start(stage)` / `finish(stage, record)` around each stage; use as a context manager."""

    def __init__(self, title: str, stream: TextIO | None = None) -> None:
        self.title = title
        self.stream = stream or sys.stderr
        self.live = not is_ci() and self.stream.isatty()
        self._status: Any = None

    def __enter__(self) -> StageProgress:
        if self.live:
            self.console = Console(file=self.stream)
            self.console.rule(self.title)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.stop()

    def start(self, stage: Any) -> None:
        if self.live:
            self._status = self.console.status(f"{stage.name}: {stage.title} …")
            self._status.start()
        elif not is_ci():
            print(f"[{stage.name}] {stage.title} …", file=self.stream, flush=True)

    def finish(self, stage: Any, record: StageRecord) -> None:
        reason = f" — {record.reason}" if record.reason else ""
        if self.live:
            self._status.stop()
            self._status = None
            style = _STYLE.get(record.status, "white")
            self.console.print(
                f"[{style}]{record.status:>7}[/] {stage.name:<8} {record.duration_s:6.1f} s{reason}",
                markup=True,
                highlight=False,
            )
        elif not is_ci() or record.status == "failed":
            print(
                f"[{stage.name}] {record.status} {record.duration_s:.1f}s{reason}",
                file=self.stream,
                flush=True,
            )
