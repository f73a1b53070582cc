"""Tensors of one sample per file: the feeds the samples stage writes and the outputs each runner gives.

A sample set is a folder of `<index>.npz` files, zero-padded so name order is index order (the
layout of Polygraphy's per-iteration files, which `harness golden` writes as JSON). Each file holds
the named arrays of one inference, uncompressed: writing and reading it costs little more than the
copy (measured against Polygraphy's base64 JSON: about 12x faster to write, 10x to read, 25% smaller;
see the README). Readers take one sample at a time, so memory does not grow with the number of
samples, and check each file against its recorded hash as they read it.

Names are stored as data (the arrays are `a0`, `a1`, ...), so any output name round-trips, whatever
characters it holds.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from trt_harness.models.core.artifacts import Artifact, ArtifactFile, atomic_path, run_relative
from trt_harness.models.core.errors import HarnessError

INDEX_WIDTH = 10  # as Polygraphy's ITERATION_FILE_INDEX_WIDTH
SUFFIX = ".npz"
_NAMES = "names"

Tensors = dict[str, np.ndarray]


def sample_file(folder: Path, index: int) -> Path:
    return folder / f"{index:0{INDEX_WIDTH}d}{SUFFIX}"


def write_sample(path: Path, tensors: Mapping[str, np.ndarray]) -> None:
    """Write one sample's named arrays to `path`, atomically."""
    names = list(tensors)
    arrays = {f"a{i}": np.ascontiguousarray(tensors[name]) for i, name in enumerate(names)}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{_NAMES: np.array(names, dtype=str)}, **arrays)


def _read(data: bytes, where: str) -> Tensors:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            names = archive[_NAMES].tolist() if _NAMES in archive.files else []
            return {str(name): archive[f"a{i}"] for i, name in enumerate(names)}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise HarnessError(f"{where} is not a sample file the harness wrote ({e}); re-run the stage") from e


def read_sample(path: Path) -> Tensors:
    return _read(path.read_bytes(), str(path))


class SampleFolder:
    """The sample files of one set inside a folder artifact (e.g. `outputs/onnxrt/samples`)."""

    def __init__(self, run_dir: Path, artifact: Artifact, folder: str) -> None:
        prefix = run_relative(folder).as_posix() + "/"
        self.run_dir = run_dir
        self.folder = folder
        self.files: tuple[ArtifactFile, ...] = tuple(
            sorted(
                (
                    m
                    for m in artifact.members
                    if m.path.startswith(prefix)
                    and "/" not in m.path[len(prefix) :]
                    and m.path.endswith(SUFFIX)
                ),
                key=lambda m: m.path,
            )
        )

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[Tensors]:
        """Each sample in order, checked against its recorded hash while it is read."""
        for member in self.files:
            path = self.run_dir / run_relative(member.path)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                raise HarnessError(f"{path} is missing; re-run `harness convert` to write it again") from None
            if hashlib.sha256(data).hexdigest() != member.sha256:
                raise HarnessError(
                    f"{path} changed since it was written; re-run `harness convert` (or `harness cache clean`)"
                )
            yield _read(data, str(path))
