from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from trt_harness.models.architectures.yolov5 import YOLOv5, init_yolov5_seeded, sample_photos, yolov5s
from trt_harness.models.core.errors import UsageError
from trt_harness.models.weights import load_weights, save_weights


@pytest.fixture(scope="module")
def trained_like() -> YOLOv5:
    model = yolov5s()
    init_yolov5_seeded(model, seed=3, calibration_images=sample_photos(64))
    return model


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return sample_photos(320)[:1]


def outputs(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(image)


def small_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 2, 1))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
def test_round_trip_gives_bit_identical_outputs(trained_like, image, tmp_path, suffix):
    path = tmp_path / f"yolov5s{suffix}"
    save_weights(trained_like, path)
    fresh = yolov5s()
    assert not torch.equal(outputs(fresh, image), outputs(trained_like, image))
    load_weights(fresh, path)
    assert torch.equal(outputs(fresh, image), outputs(trained_like, image))
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in trained_like.state_dict().items())


@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_loads_state_dict_under_a_wrapper_key(tmp_path, wrapper):
    source, target = small_model(), small_model()
    path = tmp_path / "wrapped.pt"
    torch.save({wrapper: source.state_dict(), "epoch": 3}, path)
    load_weights(target, path)
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in source.state_dict().items())


def test_loads_half_precision_file_into_float_model(tmp_path):
    # upstream checkpoints store fp16 weights; loading casts them to the model's dtype
    source, target = small_model().half(), small_model()
    path = tmp_path / "half.pt"
    torch.save(source.state_dict(), path)
    load_weights(target, path)
    assert target[0].weight.dtype == torch.float32
    assert torch.equal(target[0].weight, source[0].weight.float())


def test_renamed_key_is_reported_as_missing_and_unexpected(tmp_path):
    state_dict = yolov5s().state_dict()
    state_dict["model.24.m.0.weights"] = state_dict.pop("model.24.m.0.weight")
    path = tmp_path / "renamed.pt"
    torch.save(state_dict, path)
    with pytest.raises(UsageError) as caught:
        load_weights(yolov5s(), path)
    message = str(caught.value)
    assert str(path) in message
    assert "missing keys (1): model.24.m.0.weight" in message
    assert "unexpected keys (1): model.24.m.0.weights" in message
    assert "mis-shaped" not in message


def test_wrong_shape_names_the_key_and_both_shapes(tmp_path):
    path = tmp_path / "nc80.safetensors"
    save_weights(yolov5s(num_classes=80), path)
    with pytest.raises(UsageError) as caught:
        load_weights(yolov5s(num_classes=20), path)
    message = str(caught.value)
    assert str(path) in message
    assert "model.24.m.0.weight: expected (75, 128, 1, 1) vs file (255, 128, 1, 1)" in message
    assert "model.24.m.2.bias: expected (75,) vs file (255,)" in message
    assert "missing" not in message and "unexpected" not in message


def test_long_mismatch_lists_are_truncated(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(small_model().state_dict(), path)
    with pytest.raises(UsageError) as caught:
        load_weights(yolov5s(), path)
    message = str(caught.value)
    assert "missing keys (349)" in message
    assert "and 329 more" in message
    assert len(message) < 4000


def test_mismatch_leaves_the_model_untouched(tmp_path):
    model, other = small_model(), small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state_dict = other.state_dict()
    state_dict.pop("2.bias")
    path = tmp_path / "partial.pt"
    torch.save(state_dict, path)
    with pytest.raises(UsageError, match=r"missing keys \(1\): 2\.bias"):
        load_weights(model, path)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_random_bytes_file_is_a_one_line_usage_error(tmp_path, suffix):
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(
        torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).byte().numpy().tobytes()
    )
    with pytest.raises(UsageError) as caught:
        load_weights(small_model(), path)
    message = str(caught.value)
    assert f"cannot read weights file {path}: not a valid " in message
    assert "\n" not in message


def test_pickled_module_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "full_checkpoint.pt"
    torch.save({"model": small_model()}, path)
    with pytest.raises(UsageError) as caught:
        load_weights(small_model(), path)
    message = str(caught.value)
    assert str(path) in message
    assert "torch.nn.modules.container.Sequential" in message
    assert "state_dict()" in message
    assert "\n" not in message


def test_file_without_tensors_is_refused(tmp_path):
    path = tmp_path / "not_weights.pt"
    torch.save({"epoch": 3, "model": None}, path)
    with pytest.raises(UsageError, match="not a state_dict"):
        load_weights(small_model(), path)


@pytest.mark.parametrize("name", ["weights.onnx", "weights"])
def test_unknown_suffix_is_refused(tmp_path, name):
    with pytest.raises(UsageError, match=r"\.safetensors"):
        load_weights(small_model(), tmp_path / name)
    with pytest.raises(UsageError, match=r"\.pt"):
        save_weights(small_model(), tmp_path / name)


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_weights(small_model(), tmp_path / "absent.pt")


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "weights.pt"

    def broken_save(obj, f):
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_weights(small_model(), path)
    assert list(tmp_path.iterdir()) == []


def test_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / "weights.safetensors"
    first, second = small_model(), small_model()
    save_weights(first, path)
    save_weights(second, path)
    target = small_model()
    load_weights(target, path)
    assert torch.equal(target[0].weight, second[0].weight)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.complex64, torch.bool])
def test_weights_of_a_dtype_that_cannot_be_cast_without_loss_are_refused(tmp_path, dtype):
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "w.pt"
    torch.save({k: v.to(dtype) for k, v in model.state_dict().items()}, path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UsageError, match=f"weight: file {dtype} vs model torch.float32") as raised:
        load_weights(model, path)
    assert "cannot be cast without loss" in str(raised.value) and "\n" not in str(raised.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_pickle_that_would_run_code_names_the_blocked_global_not_torchs_advice(tmp_path, recwarn):
    class RunsCode:
        def __reduce__(self):
            return (os.system, ("echo this must never run",))

    path = tmp_path / "evil.pt"
    torch.save({"weight": RunsCode()}, path)
    with pytest.raises(UsageError) as raised:
        load_weights(torch.nn.Linear(3, 2), path)
    message = str(raised.value)
    assert "posix.system" in message and "weights_only" not in message and "\n" not in message
    assert not [w for w in recwarn if "weights_only" in str(w.message)]
