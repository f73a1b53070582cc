"""Content-addressed cache of stage outputs.

A stage's entry lives under a key derived from everything that determines its output: the hashes of
the artifacts it reads, the recipe options it uses, the weights and sample data, the code it runs
(`harness.code_keys`) and library versions. An entry is written to a temporary folder and renamed
into place only when complete, and every file is checked against its recorded hash before use, so an
interrupted run can never leave an entry that a later run trusts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.core.artifacts import Artifact, atomic_path, run_relative, sha256_file
from models.core.errors import HarnessError
from models.core.serde import from_json, to_json
from models.results.stages import StageDetails

DEFAULT_CACHE_DIR = Path(".harness") / "cache"
ENTRY_FILE = "entry.json"


def cache_dir_from_env() -> Path:
    return Path(os.environ.get("HARNESS_CACHE_DIR", DEFAULT_CACHE_DIR))


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
    """One folder per stage and key: `<root>/<stage>/<key>/{entry.json, the artifacts' files}`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _entry_dir(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def lookup(self, stage: str, key: str) -> CacheEntry | None:
        entry_dir = self._entry_dir(stage, key)
        try:
            entry = from_json(CacheEntry, json.loads((entry_dir / ENTRY_FILE).read_text()), "cache entry")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, HarnessError):
            shutil.rmtree(entry_dir, ignore_errors=True)  # damaged: never trusted, re-run and rewrite it
            return None
        for artifact in entry.artifacts.values():
            for member in artifact.members:
                file = entry_dir / run_relative(member.path)
                if (
                    not file.is_file()
                    or file.stat().st_size != member.size_bytes
                    or sha256_file(file) != member.sha256
                ):
                    shutil.rmtree(entry_dir, ignore_errors=True)
                    return None
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
        final = self._entry_dir(entry.stage, entry.key)
        if final.exists():
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{entry.key[:16]}.", suffix=".partial", dir=final.parent))
        try:
            for artifact in entry.artifacts.values():
                for member in artifact.members:
                    target = staging / run_relative(member.path)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _copy(run_dir / run_relative(member.path), target)
            (staging / ENTRY_FILE).write_text(json.dumps(to_json(entry)))
            os.replace(staging, final)
        except OSError:
            if final.exists():  # another run stored the same entry first
                return
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def entries(self) -> list[dict[str, Any]]:
        rows = []
        for entry_file in sorted(self.root.glob(f"*/*/{ENTRY_FILE}")):
            if entry_file.parent.name.startswith("."):  # a staging folder of an unfinished store
                continue
            try:
                entry = from_json(CacheEntry, json.loads(entry_file.read_text()), str(entry_file))
            except (OSError, ValueError, HarnessError):
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
        """Remove entries (of the given stages, or all); returns how many were removed."""
        removed = 0
        wanted = set(stages)
        for stage_dir in sorted(p for p in self.root.glob("*") if p.is_dir()):
            if wanted and stage_dir.name not in wanted:
                continue
            removed += sum(1 for _ in stage_dir.glob(f"*/{ENTRY_FILE}"))
            shutil.rmtree(stage_dir, ignore_errors=True)
        return removed


def _copy(source: Path, target: Path) -> None:
    # copies, never hard links: a file shared by the cache and a run folder is corrupted for both by
    # one in-place edit, and onnx refuses external data with more than one link (a hardlink attack
    # guard, onnx.checker / onnx.load). copyfile uses copy_file_range, a reflink where the FS has them.
    shutil.copyfile(source, target)
