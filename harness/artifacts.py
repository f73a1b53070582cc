"""Files that stages hand each other: written atomically, identified by their SHA-256."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

_CHUNK = 1 << 20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` only if the block succeeds.

    An interrupted write (exception, Ctrl-C, kill) never leaves a partial file under the final
    name, so nothing already written is corrupted and no later run can trust a half-file.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; artifacts are ordinary files
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(final: Path, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(final: Path, text: str) -> None:
    write_bytes_atomic(final, text.encode("utf-8"))


@dataclass(frozen=True)
class Artifact:
    """A file produced by a stage. `path` is relative to the run directory when serialized."""

    path: Path
    sha256: str
    size_bytes: int

    @classmethod
    def from_file(cls, path: Path) -> Artifact:
        path = Path(path)
        return cls(path=path, sha256=sha256_file(path), size_bytes=path.stat().st_size)

    def verified(self) -> Path:
        """Return the path after checking the file still has the recorded hash."""
        if not self.path.is_file():
            raise HarnessError(f"artifact {self.path} is missing; re-run the pipeline to regenerate it")
        actual = sha256_file(self.path)
        if actual != self.sha256:
            raise HarnessError(
                f"artifact {self.path} changed since it was written (sha256 {actual[:12]} != "
                f"{self.sha256[:12]}); re-run the pipeline (or `harness cache clean`) to regenerate it"
            )
        return self.path

    def to_json(self, root: Path) -> dict[str, object]:
        try:
            shown = self.path.relative_to(root)
        except ValueError:
            shown = self.path
        return {"path": str(shown), "sha256": self.sha256, "size_bytes": self.size_bytes}
