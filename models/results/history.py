"""The run history (`harness convert --history DIR`): one compact record per run, appended to
`DIR/history.jsonl`, one JSON object per line.

Schema `trt-harness/history`, version 1, on every line (so a reader of a later version can tell the
lines apart). A record is keyed by `key` (recipe, parameters and weights hash: runs of the same model)
and `environment_fingerprint` (every version that can change a number); it keeps the error statistics
of each tensor comparison, not the outputs.

Appends are safe under concurrency and kills: each record is one `write` of one whole line to a file
opened with O_APPEND, under an exclusive `flock` that every writer takes; a line without its newline at
the end of the file is the torn append of a process killed mid-write, which readers skip and the next
writer cuts off (it was never a record). Earlier lines are never rewritten. A line that is not such a
record is a usage error naming the file and the line, and the file is left as it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trt_harness.models.core.errors import UsageError
from trt_harness.models.core.serde import SchemaError, from_json, to_json
from trt_harness.models.results.document import Environment

HISTORY_SCHEMA = "trt-harness/history"
HISTORY_SCHEMA_VERSION = 1
HISTORY_FILE = "history.jsonl"


@dataclass(frozen=True)
class HistoryPoint:
    """One tensor comparison of a run (output x runner pair x sample set x precision), as statistics."""

    output: str
    ref_backend: str
    cand_backend: str
    sample_set: str
    precision: str
    passed: bool
    max_abs_err: float | None
    quantile_abs_err: float | None  # at `quantile` (the tolerance's, p99 by default)
    quantile: float
    mean_abs_err: float | None
    cosine_similarity: float | None
    atol: float  # the tolerance that judged it
    rtol: float
    ref_display: str = ""  # how reports name the runners ("Torch", "ORT")
    cand_display: str = ""

    @property
    def series(self) -> tuple[str, str, str, str, str]:
        return (self.output, self.ref_backend, self.cand_backend, self.sample_set, self.precision)


@dataclass(frozen=True)
class HistoryRecord:
    """What the history keeps of one run."""

    key: str  # hash of recipe, parameters and weights: the runs of one model
    recipe: str
    params: Mapping[str, Any]
    weights_sha256: str | None  # None: the recipe's own (seeded) weights
    environment_fingerprint: str  # hash of `environment`
    environment: Environment
    run_id: str
    created_unix: float
    exit_code: int
    status: str
    points: tuple[HistoryPoint, ...]
    run_dir: str = ""  # where the run's folder was, as given to `--out`
    schema: str = HISTORY_SCHEMA
    schema_version: int = HISTORY_SCHEMA_VERSION

    @property
    def passed(self) -> bool:
        return self.exit_code == 0


def record_to_line(record: HistoryRecord) -> bytes:
    return (json.dumps(to_json(record), separators=(",", ":")) + "\n").encode("utf-8")


def record_from_line(raw: bytes, where: str) -> HistoryRecord:
    """One line of a history file; `where` is "FILE:LINE" for the error message."""
    fix = "the history is append-only: restore the file from a copy, or delete that line"
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{where}: not a JSON history record ({e}); {fix}") from None
    if not isinstance(data, dict) or data.get("schema") != HISTORY_SCHEMA:
        schema = data.get("schema") if isinstance(data, dict) else None
        raise UsageError(
            f"{where}: schema {schema!r}, not {HISTORY_SCHEMA!r}: this line was not written by "
            f"`harness convert --history`; {fix}"
        )
    if data.get("schema_version") != HISTORY_SCHEMA_VERSION:
        raise UsageError(
            f"{where}: history schema version {data.get('schema_version')!r}; this trt-harness reads "
            f"version {HISTORY_SCHEMA_VERSION}: use the trt-harness that wrote it, or start a new --history DIR"
        )
    try:
        return from_json(HistoryRecord, data, "record")
    except SchemaError as e:
        raise UsageError(f"{where}: damaged or edited history record: {e}; {fix}") from e


def read_history(path: Path) -> tuple[HistoryRecord, ...]:
    """Every record of a history file, oldest line first; a missing file is an empty history."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ()
    except OSError as e:
        raise UsageError(f"{path} cannot be read: {e.strerror or e}") from None
    lines = data.split(b"\n")
    lines.pop()  # b"" after the last newline, or the torn append of a killed process: no record
    return tuple(
        record_from_line(raw, f"{path}:{number}") for number, raw in enumerate(lines, 1) if raw.strip()
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by close, also when the process is killed
        yield fd
    finally:
        os.close(fd)


def _end_of_last_line(fd: int, size: int) -> int:
    """The offset just after the file's last newline (0 if none)."""
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        found = chunk.rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


def append_record(path: Path, record: HistoryRecord) -> None:
    """Append `record` as one line of `path` (created with its folder if absent)."""
    path = Path(path)
    line = record_to_line(record)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path) as fd:
            size = os.fstat(fd).st_size
            complete = _end_of_last_line(fd, size)
            if complete != size:  # a killed writer's torn line (it holds no record): cut it off
                os.ftruncate(fd, complete)
            written = 0
            while written < len(line):  # one write in practice; O_APPEND keeps each at the end
                written += os.write(fd, line[written:])
            os.fsync(fd)
    except OSError as e:
        raise UsageError(f"--history {path.parent}: cannot append to {path} ({e.strerror or e})") from None
