from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from trt_harness.models.architectures.yolov5 import (
    ANCHORS_PX,
    STRIDES,
    YOLOv5,
    init_yolov5_seeded,
    sample_photos,
    yolov5s,
)

FIXTURE = Path(__file__).parents[1] / "fixtures" / "yolov5s_state_dict_keys.json"
UPSTREAM_YOLOV5S_PARAMETERS = 7_235_389  # Ultralytics' model summary for yolov5s, nc=80
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked", "anchors")


@pytest.fixture(scope="module")
def seeded_model() -> YOLOv5:
    model = yolov5s()
    init_yolov5_seeded(model, seed=0)
    return model


@pytest.fixture(scope="module")
def photos_320() -> torch.Tensor:
    return sample_photos(320)


def run(model: torch.nn.Module, images: torch.Tensor):
    with torch.no_grad():
        return model(images)


def test_state_dict_keys_and_shapes_match_upstream_fixture():
    expected = [tuple((key, tuple(shape))) for key, shape in json.loads(FIXTURE.read_text())]
    ours = sorted((key, tuple(t.shape)) for key, t in yolov5s().state_dict().items())
    assert ours == sorted(expected)


def test_parameter_count_matches_upstream():
    fixture_params = sum(
        int(np.prod(shape))
        for key, shape in json.loads(FIXTURE.read_text())
        if not key.endswith(BUFFER_SUFFIXES)
    )
    assert fixture_params == UPSTREAM_YOLOV5S_PARAMETERS
    assert sum(p.numel() for p in yolov5s().parameters()) == UPSTREAM_YOLOV5S_PARAMETERS


def test_parameter_count_follows_num_classes():
    # only the three 1x1 output convs depend on the class count: 3 anchors x (nc + 5) outputs each
    delta = sum(p.numel() for p in yolov5s(20).parameters()) - UPSTREAM_YOLOV5S_PARAMETERS
    assert delta == -60 * 3 * (128 + 256 + 512 + 3)


def test_anchors_buffer_is_in_grid_units():
    anchors = yolov5s().state_dict()["model.24.anchors"]
    pixels = torch.tensor(ANCHORS_PX)
    assert anchors.shape == (3, 3, 2)
    assert torch.equal(anchors * torch.tensor(STRIDES).view(3, 1, 1), pixels)


def test_output_shape_at_640():
    assert run(yolov5s(), torch.zeros(1, 3, 640, 640)).shape == (1, 25200, 85)


def test_output_shape_at_320_batch_2(photos_320):
    output = run(yolov5s(), photos_320[:2])
    assert isinstance(output, torch.Tensor)
    assert output.shape == (2, 6300, 85)


def test_non_square_input_builds_grids_from_feature_shapes(seeded_model):
    output = run(seeded_model, torch.rand(1, 3, 256, 384, generator=torch.Generator().manual_seed(0)))
    assert output.shape == (1, 3 * (32 * 48 + 16 * 24 + 8 * 12), 85)
    # the last level's last cell sits at the bottom-right corner of the image
    centre = output[0, -1, :2]
    assert 384 - 1.5 * 32 <= centre[0] <= 384 + 0.5 * 32
    assert 256 - 1.5 * 32 <= centre[1] <= 256 + 0.5 * 32


def test_decode_matches_upstream_formula(seeded_model, photos_320):
    detect = seeded_model.detect
    detect.export = False
    try:
        predictions, raw = run(seeded_model, photos_320[:1])
    finally:
        detect.export = True
    offset = 0
    for level, (feature, stride) in enumerate(zip(raw, STRIDES, strict=True)):
        _, na, ny, nx, no = feature.shape
        decoded = predictions[:, offset : offset + na * ny * nx].view(1, na, ny, nx, no)
        offset += na * ny * nx
        for a, (gy, gx) in [(0, (0, 0)), (1, (ny - 1, 3)), (2, (ny // 2, nx - 1))]:
            s = feature[0, a, gy, gx].sigmoid()
            expected_xy = (s[:2] * 2 - 0.5 + torch.tensor([gx, gy])) * stride
            expected_wh = (s[2:4] * 2) ** 2 * torch.tensor(ANCHORS_PX[level][a])
            torch.testing.assert_close(decoded[0, a, gy, gx, :2], expected_xy)
            torch.testing.assert_close(decoded[0, a, gy, gx, 2:4], expected_wh)
            torch.testing.assert_close(decoded[0, a, gy, gx, 4:], s[4:])
    assert offset == predictions.shape[1]


def test_training_mode_returns_raw_levels(photos_320):
    model = yolov5s().train()
    raw = model(photos_320[:1])
    assert [tuple(r.shape) for r in raw] == [(1, 3, 40, 40, 85), (1, 3, 20, 20, 85), (1, 3, 10, 10, 85)]


def init_small(model: YOLOv5, seed: int) -> dict[str, torch.Tensor]:
    init_yolov5_seeded(model, seed=seed, calibration_images=sample_photos(64))
    return model.state_dict()


def test_seeded_init_is_deterministic_and_ignores_global_rng():
    first_model, second_model = yolov5s(), yolov5s()
    torch.manual_seed(123)
    first = init_small(first_model, 0)
    torch.manual_seed(456)
    rng_before = torch.get_rng_state()
    second = init_small(second_model, 0)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_different_seeds_give_different_weights():
    first, second = init_small(yolov5s(), 0), init_small(yolov5s(), 1)
    assert not torch.equal(first["model.0.conv.weight"], second["model.0.conv.weight"])
    assert not torch.equal(first["model.24.m.2.weight"], second["model.24.m.2.weight"])


def test_seeded_init_calibrates_batchnorm(seeded_model, photos_320):
    # the default calibration images are the sample photos at 320: there every BatchNorm's input has
    # exactly its running statistics, so its output is ~N(0, 1) * gamma + beta per channel
    checked: list[str] = []

    def check(name: str):
        def hook(bn, args):
            x = args[0]
            torch.testing.assert_close(x.mean(dim=(0, 2, 3)), bn.running_mean, rtol=1e-3, atol=1e-4, msg=name)
            torch.testing.assert_close(
                x.var(dim=(0, 2, 3), unbiased=False), bn.running_var, rtol=1e-3, atol=1e-5, msg=name
            )
            checked.append(name)

        return hook

    handles = [
        m.register_forward_pre_hook(check(n))
        for n, m in seeded_model.named_modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    ]
    try:
        run(seeded_model, photos_320)
    finally:
        for handle in handles:
            handle.remove()
    assert len(checked) == 57


def test_detect_biases_follow_upstream_priors(seeded_model):
    detect = seeded_model.detect
    for conv, stride in zip(detect.m, STRIDES, strict=True):
        bias = conv.bias.detach().view(3, 85)
        torch.testing.assert_close(
            bias[:, 4], torch.full((3,), np.log(8 / (640 / stride) ** 2), dtype=torch.float32)
        )
        torch.testing.assert_close(
            bias[:, 5:], torch.full((3, 80), np.log(0.6 / (80 - 0.999999)), dtype=torch.float32)
        )


@pytest.mark.parametrize("size", [320, 640])
def test_outputs_on_a_photo_are_in_a_realistic_range(seeded_model, size):
    photo = sample_photos(size)[1:2]
    output = run(seeded_model, photo)[0]
    assert torch.isfinite(output).all()
    scores, objectness, classes = output[:, 4:], output[:, 4], output[:, 5:]

    def inside(values: torch.Tensor) -> float:
        return ((values > 1e-3) & (values < 0.999)).float().mean().item()

    # no saturation: sigmoids that round to 0 or 1 (|logit| > ~14) are rare
    assert ((scores < 1e-6) | (scores > 1 - 1e-6)).float().mean() < 1e-3
    assert inside(classes) > 0.95
    stride8 = 3 * (size // 8) ** 2
    assert inside(objectness[stride8:]) > 0.9
    # the stride-8 objectness prior is sigmoid(log(8 / 80**2)) = 0.00125, right at the 0.001 bound
    assert inside(objectness[:stride8]) > 0.4

    xy, wh = output[:, :2], output[:, 2:4]
    assert (xy > -0.5 * 32).all() and (xy < size + 0.5 * 32).all()
    assert (wh > 0).all()
    assert 4 < wh.median() < size
    max_wh = torch.cat(
        [
            4 * torch.tensor(ANCHORS_PX[i]).repeat_interleave((size // s) ** 2, 0)
            for i, s in enumerate((8, 16, 32))
        ]
    )
    assert (wh > 0.99 * max_wh).float().mean() < 0.01  # box sizes not pinned to their ceiling


def test_calibrating_on_noise_instead_of_photos_saturates_outputs(photos_320):
    # guards the range test above and the choice of calibration images: it is what keeps scores realistic
    model = yolov5s()
    noise = torch.rand(4, 3, 320, 320, generator=torch.Generator().manual_seed(0))
    init_yolov5_seeded(model, seed=0, calibration_images=noise)
    scores = run(model, photos_320[1:2])[0, :, 4:]
    assert ((scores < 1e-6) | (scores > 1 - 1e-6)).float().mean() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_exports_with_dynamic_batch(seeded_model, photos_320, tmp_path, dynamo):
    import onnxruntime as ort

    path = tmp_path / "yolov5s.onnx"
    names = {"input_names": ["images"], "output_names": ["predictions"]}
    if dynamo:
        torch.onnx.export(
            seeded_model,
            (photos_320[:1],),
            path,
            dynamo=True,
            external_data=False,
            opset_version=18,
            dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
            **names,
        )
    else:
        torch.onnx.export(
            seeded_model,
            (photos_320[:1],),
            path,
            dynamo=False,
            opset_version=17,
            dynamic_axes={"images": {0: "batch"}, "predictions": {0: "batch"}},
            **names,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["predictions"]
    batch = photos_320[:3]
    (predictions,) = session.run(None, {"images": batch.numpy()})
    expected = run(seeded_model, batch).numpy()
    assert predictions.shape == (3, 6300, 85)
    # a 60-conv random net amplifies fp32 reordering differences; boxes are hundreds of pixels
    np.testing.assert_allclose(predictions, expected, rtol=2e-3, atol=2e-3)
