"""Files that stages hand each other: written atomically, identified by their SHA-256.

An artifact is one file (a model, an engine) or a set of files that belong together (a model and the
external-data sidecar its weights live in; a folder of per-sample outputs). Paths are relative to the
run folder and always stay inside it, so a run folder can be moved, cached and restored as a whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from trt_harness.models.core.errors import HarnessError, UsageError

_CHUNK = 1 << 20
PARTIAL_SUFFIX = ".partial"


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
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=PARTIAL_SUFFIX, dir=final.parent)
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


def run_relative(path: str) -> PurePosixPath:
    """`path` as a relative path that cannot leave the folder it is relative to, or a UsageError."""
    relative = PurePosixPath(path)
    if not path or relative.is_absolute() or ".." in relative.parts or "\\" in path:
        raise UsageError(
            f"artifact path {path!r} is not a plain relative path inside the run folder; the file that "
            "records it was edited or damaged: re-run the stage that wrote it (or `harness cache clean`)"
        )
    return relative


@dataclass(frozen=True)
class ArtifactFile:
    """One file of an artifact: its path relative to the run folder, hash and size."""

    path: str
    sha256: str
    size_bytes: int

    @classmethod
    def of(cls, run_dir: Path, path: str) -> ArtifactFile:
        file = run_dir / run_relative(path)
        return cls(path, sha256_file(file), file.stat().st_size)


def _manifest_hash(files: Iterable[ArtifactFile]) -> str:
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.path}\0{f.sha256}\0{f.size_bytes}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Artifact:
    """A file, or a set of files, that a stage wrote.

    `path` (relative to the run folder) is the file or folder that stands for the artifact. With
    `files` empty it is the one file and `sha256` its hash; otherwise `files` lists every member
    (for a model with sidecars, the model file first) and `sha256` hashes that list.
    """

    path: str
    sha256: str
    size_bytes: int
    files: tuple[ArtifactFile, ...] = ()

    @classmethod
    def of_file(cls, run_dir: Path, path: str, sidecars: Iterable[str] = ()) -> Artifact:
        """A file of the run folder, with the sidecar files it needs beside it (e.g. ONNX external data)."""
        main = ArtifactFile.of(run_dir, path)
        extra = tuple(ArtifactFile.of(run_dir, s) for s in sidecars)
        if not extra:
            return cls(main.path, main.sha256, main.size_bytes)
        members = (main, *extra)
        return cls(path, _manifest_hash(members), sum(f.size_bytes for f in members), members)

    @classmethod
    def of_folder(cls, run_dir: Path, path: str) -> Artifact:
        """Every file under a folder of the run folder, in name order."""
        folder = run_dir / run_relative(path)
        names = sorted(p.relative_to(run_dir).as_posix() for p in folder.rglob("*") if p.is_file())
        members = tuple(ArtifactFile.of(run_dir, name) for name in names)
        return cls(path, _manifest_hash(members), sum(f.size_bytes for f in members), members)

    @property
    def members(self) -> tuple[ArtifactFile, ...]:
        return self.files or (ArtifactFile(self.path, self.sha256, self.size_bytes),)

    def locate(self, run_dir: Path) -> Path:
        return run_dir / run_relative(self.path)

    def verified(self, run_dir: Path) -> Path:
        """The artifact's path in `run_dir`, after checking every file still has its recorded hash."""
        for member in self.members:
            file = run_dir / run_relative(member.path)
            if not file.is_file():
                raise HarnessError(f"artifact {file} is missing; re-run the pipeline to regenerate it")
            actual = sha256_file(file)
            if actual != member.sha256:
                raise HarnessError(
                    f"artifact {file} changed since it was written (sha256 {actual[:12]} != "
                    f"{member.sha256[:12]}); re-run the pipeline (or `harness cache clean`) to regenerate it"
                )
        return self.locate(run_dir)

    def member(self, path: str) -> ArtifactFile:
        for member in self.members:
            if member.path == path:
                return member
        raise HarnessError(f"artifact {self.path} has no file {path}; re-run the stage that wrote it")
