from __future__ import annotations

import pytest
from trt_harness.models.core.artifacts import Artifact, atomic_path, write_text_atomic
from trt_harness.models.core.errors import HarnessError


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
    artifact = Artifact.of_file(tmp_path, "model.onnx")
    assert artifact.verified(tmp_path) == path
    path.write_bytes(b"abd")
    with pytest.raises(HarnessError, match="model.onnx changed"):
        artifact.verified(tmp_path)
    path.unlink()
    with pytest.raises(HarnessError, match="missing"):
        artifact.verified(tmp_path)


def test_a_model_artifact_covers_its_sidecar(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"graph")
    (tmp_path / "model.onnx.data").write_bytes(b"weights")
    artifact = Artifact.of_file(tmp_path, "model.onnx", sidecars=["model.onnx.data"])
    assert [m.path for m in artifact.members] == ["model.onnx", "model.onnx.data"]
    assert artifact.size_bytes == len(b"graph") + len(b"weights")
    (tmp_path / "model.onnx.data").write_bytes(b"weightz")
    with pytest.raises(HarnessError, match="model.onnx.data changed"):
        artifact.verified(tmp_path)


def test_a_folder_artifact_lists_every_file_and_its_hash_changes_with_any(tmp_path):
    folder = tmp_path / "outputs" / "torch" / "samples"
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"{i}.npz").write_bytes(bytes([i]))
    first = Artifact.of_folder(tmp_path, "outputs/torch")
    assert [m.path for m in first.members] == [f"outputs/torch/samples/{i}.npz" for i in range(3)]
    (folder / "1.npz").write_bytes(b"other")
    assert Artifact.of_folder(tmp_path, "outputs/torch").sha256 != first.sha256


@pytest.mark.parametrize("path", ["../outside.onnx", "/etc/passwd", "a/../../b"])
def test_an_artifact_path_may_not_leave_the_run_folder(tmp_path, path):
    with pytest.raises(HarnessError, match="run folder"):
        Artifact.of_file(tmp_path, path)
