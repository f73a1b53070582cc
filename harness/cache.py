"""Content-addressed cache of stage outputs.

A stage's entry lives under a key derived from everything that determines its output: the hashes of
the artifacts it reads, the recipe options it uses, the weights and sample data, the code it runs
(`harness.code_keys`) and library versions. An entry is written to a temporary folder and renamed
into place only when complete, and every file is checked against its recorded hash before use, so an
interrupted run can never leave an entry that a later run trusts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trt_harness.models.core.artifacts import PARTIAL_SUFFIX, Artifact, atomic_path, run_relative, sha256_file
from trt_harness.models.core.errors import HarnessError, UsageError
from trt_harness.models.core.serde import from_json, to_json
from trt_harness.models.results.stages import StageDetails

DEFAULT_CACHE_DIR = Path(".harness") / "cache"
ENTRY_FILE = "entry.json"
STAT_FILE = "checked.json"  # when each file last matched its hash (a hint, never trusted for content)
# The Cache Directory Tagging standard (https://bford.info/cachedir/): marks the root as a cache for
# backup tools, and is how `clean` knows a folder is one it may delete entries from.
TAG_FILE = "CACHEDIR.TAG"
TAG_SIGNATURE = "Signature: 8a477f597d28d172789f06886806bc55"
TAG_TEXT = f"{TAG_SIGNATURE}\n# trt-harness stage cache: `harness cache clean` removes its entries.\n"
_KEY = re.compile(r"[0-9a-f]{64}")
_STAGING_MAX_AGE_S = 24 * 3600  # a staging folder this old belongs to a run that was killed


def cache_dir_from_env() -> Path:
    value = os.environ.get("HARNESS_CACHE_DIR")
    if value is None:
        return DEFAULT_CACHE_DIR
    if not value.strip():
        raise UsageError(
            "HARNESS_CACHE_DIR is set but empty; unset it (default .harness/cache) or name a folder"
        )
    return Path(value)


def _stderr(message: str) -> None:
    print(f"harness: warning: {message}", file=sys.stderr)


def stable_hash(value: Any) -> str:
    """SHA-256 of a JSON-able value (dataclasses, arrays by their bytes), independent of dict ordering."""
    text = json.dumps(value, sort_keys=True, default=_key_default, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _key_default(value: Any) -> Any:
    if hasattr(value, "tobytes") and hasattr(value, "dtype"):
        return {
            "dtype": str(value.dtype),
            "shape": list(value.shape),
            "sha256": hashlib.sha256(value.tobytes()).hexdigest(),
        }
    return to_json(value)


@dataclass(frozen=True)
class CacheEntry:
    """What a stage wrote, as stored: its artifacts (paths relative to the run folder) and details."""

    stage: str
    key: str
    artifacts: Mapping[str, Artifact]
    details: StageDetails | None = None
    reason: str | None = None
    created_unix: float = field(default_factory=time.time)


class StageCache:
    """One folder per stage and key: `<root>/<stage>/<key>/{entry.json, the artifacts' files}`.

    The cache never fails a run: a damaged entry is dropped (one warning) and its stage re-runs; a
    cache that cannot be written (full, read-only) is left alone for the rest of the run (one warning).
    `entry.json` carries the SHA-256 of its own content, so an edited or damaged entry is not trusted,
    and every path it names must stay inside the entry and the run folder.
    """

    def __init__(self, root: Path, warn: Callable[[str], None] = _stderr) -> None:
        self.root = Path(root)
        self.warn = warn
        self.writable = True

    def _entry_dir(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def _drop(self, entry_dir: Path, why: str) -> None:
        self.warn(f"cache entry {entry_dir} {why}; dropped, the stage runs again")
        shutil.rmtree(entry_dir, ignore_errors=True)

    def lookup(self, stage: str, key: str) -> CacheEntry | None:
        entry_dir = self._entry_dir(stage, key)
        try:
            text = (entry_dir / ENTRY_FILE).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            self._drop(entry_dir, f"cannot be read ({e})")
            return None
        try:
            sealed = json.loads(text)
            body = sealed["entry"]
            if sealed.get("sha256") != stable_hash(body):
                raise ValueError("its content does not match its recorded hash")
            entry = from_json(CacheEntry, body, "cache entry")
            if entry.stage != stage or entry.key != key:
                raise ValueError(f"it records {entry.stage}/{entry.key}")
            for artifact in entry.artifacts.values():
                run_relative(artifact.path)  # a path leaving the run folder is an edited entry
                for member in artifact.members:
                    run_relative(member.path)
        except (ValueError, KeyError, TypeError, HarnessError) as e:
            self._drop(entry_dir, f"is damaged or was edited ({e})")
            return None
        seen = _read_stat_hint(entry_dir)
        checked: dict[str, list[int]] = {}
        for artifact in entry.artifacts.values():
            for member in artifact.members:
                file = entry_dir / run_relative(member.path)
                try:
                    info = file.stat()
                except OSError:
                    info = None
                if info is None or info.st_size != member.size_bytes:
                    self._drop(entry_dir, f"has a missing or changed file {member.path}")
                    return None
                now = [info.st_size, info.st_mtime_ns, info.st_ino]
                # a file not touched since it was last hashed is not hashed again (as git's index)
                if seen.get(member.path) != now and sha256_file(file) != member.sha256:
                    self._drop(entry_dir, f"has a missing or changed file {member.path}")
                    return None
                checked[member.path] = now
        if checked != seen:
            _write_stat_hint(entry_dir, checked)
        return entry

    def restore(self, entry: CacheEntry, run_dir: Path) -> dict[str, Artifact]:
        """Place copies of the entry's files in the run folder; returns its artifacts."""
        entry_dir = self._entry_dir(entry.stage, entry.key)
        for artifact in entry.artifacts.values():
            if artifact.files and all(m.path.startswith(artifact.path + "/") for m in artifact.files):
                shutil.rmtree(run_dir / run_relative(artifact.path), ignore_errors=True)  # a folder of ours
            for member in artifact.members:
                target = run_dir / run_relative(member.path)
                with atomic_path(target) as tmp:
                    tmp.unlink()
                    _copy(entry_dir / run_relative(member.path), tmp)
        return dict(entry.artifacts)

    def store(self, entry: CacheEntry, run_dir: Path) -> None:
        """Keep the entry; a cache that cannot be written is a warning, never a failed stage."""
        if not self.writable:
            return
        final = self._entry_dir(entry.stage, entry.key)
        if final.exists():
            return
        staging: Path | None = None
        try:
            self._ensure_tagged()
            final.parent.mkdir(parents=True, exist_ok=True)
            self._remove_stale_staging(final.parent)
            staging = Path(
                tempfile.mkdtemp(prefix=f".{entry.key[:16]}.", suffix=PARTIAL_SUFFIX, dir=final.parent)
            )
            for artifact in entry.artifacts.values():
                for member in artifact.members:
                    target = staging / run_relative(member.path)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _copy(run_dir / run_relative(member.path), target)
            body = to_json(entry)
            (staging / ENTRY_FILE).write_text(json.dumps({"sha256": stable_hash(body), "entry": body}))
            os.replace(staging, final)
        except OSError as e:
            if final.exists():  # another run stored the same entry first
                return
            self.writable = False
            self.warn(
                f"cannot write the cache at {self.root} ({e.strerror or e}); this run goes on without it"
            )
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)

    def _ensure_tagged(self) -> None:
        tag = self.root / TAG_FILE
        if not tag.is_file():
            self.root.mkdir(parents=True, exist_ok=True)
            tag.write_text(TAG_TEXT)

    def is_tagged(self) -> bool:
        try:
            return (self.root / TAG_FILE).read_text(errors="replace").startswith(TAG_SIGNATURE)
        except OSError:
            return False

    def _remove_stale_staging(self, stage_dir: Path, max_age_s: float = _STAGING_MAX_AGE_S) -> int:
        """Staging folders of killed runs (kept while young: a concurrent run may be writing one)."""
        removed = 0
        now = time.time()
        for staging in stage_dir.glob(f".*{PARTIAL_SUFFIX}"):
            try:
                if staging.is_dir() and now - staging.stat().st_mtime > max_age_s:
                    shutil.rmtree(staging, ignore_errors=True)
                    removed += 1
            except OSError:
                continue
        return removed

    def _entry_dirs(self, stages: Iterable[str] = ()) -> list[Path]:
        """Folders `<root>/<stage>/<key>` that hold an entry.json: the only things the cache owns."""
        wanted = set(stages)
        return [
            entry_file.parent
            for entry_file in sorted(self.root.glob(f"*/*/{ENTRY_FILE}"))
            if _KEY.fullmatch(entry_file.parent.name)
            and (not wanted or entry_file.parent.parent.name in wanted)
        ]

    def entries(self) -> list[dict[str, Any]]:
        rows = []
        for entry_dir in self._entry_dirs():
            try:
                entry = from_json(
                    CacheEntry, json.loads((entry_dir / ENTRY_FILE).read_text())["entry"], str(entry_dir)
                )
            except (OSError, ValueError, KeyError, TypeError, HarnessError):
                continue
            size = sum(a.size_bytes for a in entry.artifacts.values())
            rows.append(
                {
                    "stage": entry.stage,
                    "key": entry.key,
                    "size_bytes": size,
                    "created_unix": entry.created_unix,
                }
            )
        return rows

    def clean(self, stages: Iterable[str] = ()) -> int:
        """Remove the entries (of the given stages, or all) and killed runs' staging folders.

        Only a folder tagged as this cache is touched, and in it only what the cache wrote: entry
        folders (a 64-hex key holding an entry.json) and staging folders; anything else stays.
        """
        if not self.root.exists():
            return 0
        if not self.is_tagged():
            raise UsageError(
                f"{self.root} is not a trt-harness cache (it has no {TAG_FILE}); nothing was removed. "
                "Check HARNESS_CACHE_DIR"
            )
        removed = 0
        for entry_dir in self._entry_dirs(stages):
            shutil.rmtree(entry_dir, ignore_errors=True)
            removed += 1
        wanted = set(stages)
        for stage_dir in (p for p in self.root.iterdir() if p.is_dir() and (not wanted or p.name in wanted)):
            self._remove_stale_staging(stage_dir, max_age_s=0)
            with contextlib.suppress(OSError):
                stage_dir.rmdir()  # only when empty
        return removed


def _read_stat_hint(entry_dir: Path) -> dict[str, list[int]]:
    """(size, mtime_ns, inode) of each file when it last matched its hash; a damaged hint is empty."""
    try:
        data = json.loads((entry_dir / STAT_FILE).read_text())
        return {str(k): [int(x) for x in v] for k, v in data.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def _write_stat_hint(entry_dir: Path, checked: Mapping[str, list[int]]) -> None:
    with contextlib.suppress(OSError):  # a hint only saves hashing next time
        tmp = entry_dir / f".{STAT_FILE}.{os.getpid()}{PARTIAL_SUFFIX}"
        tmp.write_text(json.dumps(checked))
        os.replace(tmp, entry_dir / STAT_FILE)


def _copy(source: Path, target: Path) -> None:
    # copies, never hard links: a file shared by the cache and a run folder is corrupted for both by
    # one in-place edit, and onnx refuses external data with more than one link (a hardlink attack
    # guard, onnx.checker / onnx.load). copyfile uses copy_file_range, a reflink where the FS has them.
    shutil.copyfile(source, target)
