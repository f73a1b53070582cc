from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from trt_harness.models.architectures.resnet import dead_leaves_images
from trt_harness.models.architectures.yolov8 import STRIDES, init_yolov8_seeded, make_anchors, yolov8n

from tests.fixtures.activations import batchnorm_output_stds

SIDE = 320  # half of deployment size keeps the file fast; 640 is checked once for its anchor count
SMALL_SIDE = 64
NC = 12


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _anchor_count(side: int) -> int:
    return sum((side // stride) ** 2 for stride in STRIDES)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return init_yolov8_seeded(yolov8n(NC), seed=0, calibration_size=SIDE)


@pytest.fixture(scope="module")
def small_model() -> torch.nn.Module:
    """Seed 0 calibrated on small images: enough for the determinism tests, and quick."""
    return init_yolov8_seeded(yolov8n(NC), seed=0, calibration_size=SMALL_SIDE)


@pytest.fixture(scope="module")
def unseen_images() -> torch.Tensor:
    """Photo-like images in [0, 1] the BN calibration never saw (another generator seed)."""
    return dead_leaves_images((2, 3, SIDE, SIDE), torch.Generator().manual_seed(99))


@pytest.fixture(scope="module")
def output(model: torch.nn.Module, unseen_images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(unseen_images)


def test_export_output_is_boxes_and_scores_per_anchor(output: torch.Tensor) -> None:
    assert output.shape == (2, 4 + NC, _anchor_count(SIDE)) == (2, 16, 2100)
    assert torch.isfinite(output).all()


def _head_inputs(side: int) -> list[torch.Tensor]:
    """Neck outputs for a `side` x `side` image: P3, P4, P5 of yolov8n's widths."""
    return [
        torch.zeros(1, channels, side // s, side // s)
        for channels, s in zip((64, 128, 256), STRIDES, strict=True)
    ]


def test_deployment_size_gives_8400_anchors(model: torch.nn.Module) -> None:
    with torch.no_grad():
        assert model.detect(_head_inputs(640)).shape == (1, 16, _anchor_count(640)) == (1, 16, 8400)


def test_matches_ultralytics_yolov8n_layout() -> None:
    # yolov8.yaml (scale n, nc=80): "YOLOv8n summary: 225 layers, 3157200 parameters"
    coco = yolov8n(num_classes=80)
    assert sum(p.numel() for p in coco.parameters()) == 3_157_200
    shapes = {k: tuple(v.shape) for k, v in yolov8n(NC).state_dict().items()}
    assert shapes["model.0.conv.weight"] == (16, 3, 3, 3)
    assert shapes["model.9.cv2.conv.weight"] == (256, 512, 1, 1)  # SPPF
    assert shapes["model.22.cv2.0.0.conv.weight"] == (64, 64, 3, 3)
    assert shapes["model.22.cv3.2.2.weight"] == (NC, 64, 1, 1)
    assert shapes["model.22.dfl.conv.weight"] == (1, 16, 1, 1)
    assert max(int(k.split(".")[1]) for k in shapes) == 22


def test_anchor_points_are_grid_cell_centres() -> None:
    features = [torch.zeros(1, 1, 4, 6), torch.zeros(1, 1, 2, 3)]
    points, strides = make_anchors(features, (8, 16))
    assert points.shape == (2, 24 + 6) and strides.shape == (1, 24 + 6)
    assert torch.equal(points[:, 0], torch.tensor([0.5, 0.5]))
    assert torch.equal(points[:, 1], torch.tensor([1.5, 0.5]))  # x runs fastest, as in Ultralytics
    assert torch.equal(points[:, 6], torch.tensor([0.5, 1.5]))
    assert torch.equal(points[:, 24], torch.tensor([0.5, 0.5]))  # next level starts over
    assert torch.equal(strides, torch.tensor([[8.0] * 24 + [16.0] * 6]))


def test_flat_box_distributions_decode_to_15_stride_boxes_on_anchor_centres(model: torch.nn.Module) -> None:
    # All DFL logits equal -> expected distance (0 + ... + 15) / 16 = 7.5 strides on each side.
    side = 64
    head = copy.deepcopy(model.detect)
    with torch.no_grad():
        for branch in head.cv2:
            branch[-1].weight.zero_()
            branch[-1].bias.zero_()
        boxes = head(_head_inputs(side))[0, :4]
    centres, sizes = [], []
    for stride in STRIDES:
        cells = torch.arange(side // stride) + 0.5
        grid_y, grid_x = torch.meshgrid(cells, cells, indexing="ij")
        centres.append(torch.stack((grid_x.flatten(), grid_y.flatten())) * stride)
        sizes.append(torch.full(((side // stride) ** 2,), 15.0 * stride))
    torch.testing.assert_close(boxes[:2], torch.cat(centres, 1), rtol=0, atol=1e-4)
    torch.testing.assert_close(boxes[2], torch.cat(sizes), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(boxes[3], torch.cat(sizes), rtol=1e-5, atol=1e-4)


def test_other_seed_gives_other_weights(small_model: torch.nn.Module) -> None:
    other = _state(init_yolov8_seeded(yolov8n(NC), seed=1, calibration_size=SMALL_SIDE))
    first = _state(small_model)
    # DFL bins 0..15 are fixed, the head's last biases are Ultralytics' constant bias_init
    fixed = {"model.22.dfl.conv.weight"} | {
        f"model.22.{b}.{i}.2.bias" for b in ("cv2", "cv3") for i in range(3)
    }
    varying = [k for k, v in first.items() if v.is_floating_point() and k not in fixed]
    assert all(not torch.equal(first[k], other[k]) for k in varying)
    assert torch.equal(first["model.22.dfl.conv.weight"].flatten(), torch.arange(16.0))


def test_same_seed_gives_same_weights_whatever_the_global_rng(small_model: torch.nn.Module) -> None:
    torch.manual_seed(456)
    fresh = yolov8n(NC)  # construction itself draws torch's default init from the global RNG
    rng_before = torch.get_rng_state()
    seeded = _state(init_yolov8_seeded(fresh, seed=0, calibration_size=SMALL_SIDE))
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert _states_equal(seeded, _state(small_model))


def test_state_dict_round_trip_gives_bit_identical_output(
    model: torch.nn.Module, unseen_images: torch.Tensor, output: torch.Tensor
) -> None:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    reloaded = yolov8n(NC)
    reloaded.load_state_dict(torch.load(buffer, weights_only=True))
    reloaded.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(unseen_images), output)


def test_class_bias_is_the_ultralytics_prior(model: torch.nn.Module) -> None:
    head = copy.deepcopy(model.detect)
    with torch.no_grad():
        for branch in head.cv3:
            branch[-1].weight.zero_()
        scores = head(_head_inputs(SIDE))[0, 4:]
    # with the class weights off, each level scores every anchor at ~5 objects per 640x640 image
    start = 0
    for stride in STRIDES:
        count = (SIDE // stride) ** 2
        prior_logit = math.log(5 / NC / (640 / stride) ** 2)
        level = scores[:, start : start + count]
        torch.testing.assert_close(level, torch.full_like(level, prior_logit).sigmoid(), rtol=1e-4, atol=0)
        start += count


def test_scores_are_spread_but_not_saturated(output: torch.Tensor) -> None:
    scores = output[:, 4:]
    # saturated = the logit is beyond what a float32 sigmoid can tell apart from 0 or 1
    assert scores.min() > 0 and scores.max() < 1
    assert scores.max() > 0.01  # some anchors stand out from the ~1e-4 prior
    assert math.log10(scores.max() / scores.median()) > 1.5


def test_boxes_are_positive_and_varied(output: torch.Tensor) -> None:
    width, height = output[:, 2], output[:, 3]
    assert (width > 0).all() and (height > 0).all()
    assert width.std() > 0.2 * width.mean()  # peaked DFL distributions, not all the same box
    centres = output[:, :2]
    assert centres.min() > -SIDE and centres.max() < 2 * SIDE


def test_batchnorm_outputs_stay_in_range_on_unseen_images(
    model: torch.nn.Module, unseen_images: torch.Tensor
) -> None:
    stds = batchnorm_output_stds(model, unseen_images)
    assert all(0.2 < std < 5.0 for std in stds.values()), stds
