from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from trt_harness.models.architectures.resnet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    dead_leaves_images,
    init_resnet_seeded,
    resnet50,
)

from tests.fixtures.activations import batchnorm_output_stds

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "resnet50_state_dict_keys.json"
SIDE = 64  # small inputs keep the file fast; the architecture is size-agnostic (adaptive pooling)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _photo_like(batch: int, seed: int) -> torch.Tensor:
    rgb = dead_leaves_images((batch, 3, SIDE, SIDE), torch.Generator().manual_seed(seed))
    return (rgb - IMAGENET_MEAN.view(1, 3, 1, 1)) / IMAGENET_STD.view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return init_resnet_seeded(resnet50(), seed=0, calibration_size=SIDE)


@pytest.fixture(scope="module")
def unseen_images() -> torch.Tensor:
    """Photo-like images the BN calibration never saw (another generator seed)."""
    return _photo_like(4, seed=21)


def test_state_dict_keys_and_shapes_equal_torchvision() -> None:
    expected = [(key, tuple(shape)) for key, shape in json.loads(FIXTURE.read_text())]
    ours = sorted((key, tuple(t.shape)) for key, t in resnet50().state_dict().items())
    assert ours == expected


def test_num_classes_sizes_the_classifier() -> None:
    state = resnet50(num_classes=10).state_dict()
    assert state["fc.weight"].shape == (10, 2048)
    assert state["fc.bias"].shape == (10,)


def test_stride_sits_on_the_3x3_conv_as_in_v1_5() -> None:
    block = resnet50().layer2[0]
    assert block.conv1.stride == (1, 1)
    assert block.conv2.stride == (2, 2)
    assert block.downsample[0].stride == (2, 2)


@pytest.mark.parametrize("batch", [1, 3])
def test_outputs_logits_per_image(model: torch.nn.Module, unseen_images: torch.Tensor, batch: int) -> None:
    with torch.no_grad():
        logits = model(unseen_images[:batch])
    assert logits.shape == (batch, 1000)
    assert torch.isfinite(logits).all()


def test_other_seed_gives_other_weights(model: torch.nn.Module) -> None:
    other = _state(init_resnet_seeded(resnet50(), seed=1, calibration_size=SIDE))
    first = _state(model)
    float_keys = [k for k, v in first.items() if v.is_floating_point()]
    assert all(not torch.equal(first[k], other[k]) for k in float_keys)


def test_same_seed_gives_same_weights_whatever_the_global_rng(model: torch.nn.Module) -> None:
    torch.manual_seed(456)
    fresh = resnet50()  # construction itself draws torch's default init from the global RNG
    rng_before = torch.get_rng_state()
    seeded = _state(init_resnet_seeded(fresh, seed=0, calibration_size=SIDE))
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert _states_equal(seeded, _state(model))


def test_state_dict_round_trip_gives_bit_identical_logits(
    model: torch.nn.Module, unseen_images: torch.Tensor
) -> None:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    reloaded = resnet50()
    reloaded.load_state_dict(torch.load(buffer, weights_only=True))
    reloaded.eval()
    with torch.no_grad():
        assert torch.equal(model(unseen_images), reloaded(unseen_images))


def test_batchnorm_outputs_stay_near_unit_variance_on_unseen_images(
    model: torch.nn.Module, unseen_images: torch.Tensor
) -> None:
    stds = batchnorm_output_stds(model, unseen_images)
    assert len(stds) == 53
    assert all(0.3 < std < 3.0 for std in stds.values()), stds


def test_residual_branches_are_alive(model: torch.nn.Module) -> None:
    # torchvision's zero_init_residual would make every block an identity; ours must not.
    blocks = [block for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for block in layer]
    assert all(block.bn3.weight.abs().min() > 0.5 for block in blocks)


def test_logits_have_a_trained_like_spread(model: torch.nn.Module, unseen_images: torch.Tensor) -> None:
    with torch.no_grad():
        logits = model(unseen_images)
    top2 = logits.topk(2, dim=1).values
    # a trained ResNet-50's logits spread by a few units per image, not by 0.01 or 100
    assert ((logits.std(dim=1) > 0.5) & (logits.std(dim=1) < 20)).all()
    assert (top2[:, 0] - top2[:, 1] > 1e-3).all()
    assert len(set(logits.argmax(dim=1).tolist())) >= 2  # not one class for every image
