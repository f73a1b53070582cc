from __future__ import annotations

import pytest

from models.core.artifacts import Artifact, atomic_path, write_text_atomic
from models.core.errors import HarnessError


def test_atomic_write_leaves_old_file_intact_when_interrupted(tmp_path):
    target = tmp_path / "results.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half a new fi")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target], "no temporary file is left behind"


def test_atomic_write_replaces_file_and_keeps_normal_permissions(tmp_path):
    target = tmp_path / "a" / "report.html"
    write_text_atomic(target, "<html>")
    assert target.read_text() == "<html>"
    assert target.stat().st_mode & 0o044, "readable by others like any file the user writes"


def test_artifact_verification_catches_a_changed_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"abc")
    artifact = Artifact.from_file(path)
    assert artifact.verified() == path
    path.write_bytes(b"abd")
    with pytest.raises(HarnessError, match="model.onnx changed"):
        artifact.verified()
    path.unlink()
    with pytest.raises(HarnessError, match="missing"):
        artifact.verified()
