"""Content-addressed cache of stage outputs.

A stage's entry lives under a key derived from everything that determines its output: the hashes of the
artifacts it reads, the recipe options it uses, the weights and sample data, the source code of the
modules that do the work, and library versions. An entry is written to a temporary folder and renamed
into place only when complete, and every file is checked against its recorded hash before use, so an
interrupted run can never leave an entry that a later run trusts.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.artifacts import Artifact, atomic_path, sha256_file

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE_DIR = Path(".harness") / "cache"
ENTRY_FILE = "entry.json"


def cache_dir_from_env() -> Path:
    return Path(os.environ.get("HARNESS_CACHE_DIR", DEFAULT_CACHE_DIR))


def stable_hash(value: Any) -> str:
    """SHA-256 of a JSON-able value, independent of dict ordering."""
    text = json.dumps(value, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "tobytes") and hasattr(value, "dtype"):
        return {
            "dtype": str(value.dtype),
            "shape": list(value.shape),
            "sha256": hashlib.sha256(value.tobytes()).hexdigest(),
        }
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(value)
    raise TypeError(f"cannot hash {type(value).__name__} for a cache key")


@functools.cache
def source_hash(*relative_paths: str) -> str:
    """Hash of the Python sources under the given files or folders (relative to the project root)."""
    digest = hashlib.sha256()
    for relative in relative_paths:
        path = ROOT / relative
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def file_hash(path: Path | None) -> str | None:
    return sha256_file(path) if path is not None else None


@dataclass(frozen=True)
class CacheEntry:
    key: str
    path: Path
    record: dict[str, Any]  # the stage's details and its artifacts (name -> file name, sha256, size)


class StageCache:
    """One folder per stage and key: `<root>/<stage>/<key>/{entry.json, files...}`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def lookup(self, stage: str, key: str) -> CacheEntry | None:
        entry_dir = self.root / stage / key
        try:
            record = json.loads((entry_dir / ENTRY_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        for artifact in record["artifacts"].values():
            file = entry_dir / artifact["file"]
            if (
                not file.is_file()
                or file.stat().st_size != artifact["size_bytes"]
                or sha256_file(file) != artifact["sha256"]
            ):
                # a damaged entry is never trusted; drop it so the stage re-runs and rewrites it
                shutil.rmtree(entry_dir, ignore_errors=True)
                return None
        return CacheEntry(key, entry_dir, record)

    def restore(self, entry: CacheEntry, out_dir: Path) -> dict[str, Artifact]:
        """Place the entry's files in the run folder (hard links when possible) and return them as artifacts."""
        artifacts = {}
        for name, info in entry.record["artifacts"].items():
            target = out_dir / info["file"]
            with atomic_path(target) as tmp:
                tmp.unlink()
                _link_or_copy(entry.path / info["file"], tmp)
            artifacts[name] = Artifact(target, info["sha256"], info["size_bytes"])
        return artifacts

    def store(
        self, stage: str, key: str, artifacts: Mapping[str, Artifact], details: Mapping[str, Any]
    ) -> None:
        final = self.root / stage / key
        if final.exists():
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.", suffix=".partial", dir=final.parent))
        try:
            record: dict[str, Any] = {
                "stage": stage,
                "key": key,
                "created_unix": time.time(),
                "artifacts": {},
            }
            for name, artifact in artifacts.items():
                _link_or_copy(artifact.path, staging / artifact.path.name)
                record["artifacts"][name] = {
                    "file": artifact.path.name,
                    "sha256": artifact.sha256,
                    "size_bytes": artifact.size_bytes,
                }
            record["details"] = details
            (staging / ENTRY_FILE).write_text(json.dumps(record, default=_json_default))
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
                record = json.loads(entry_file.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            size = sum(a["size_bytes"] for a in record["artifacts"].values())
            rows.append(
                {
                    "stage": record["stage"],
                    "key": record["key"],
                    "size_bytes": size,
                    "created_unix": record["created_unix"],
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


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
