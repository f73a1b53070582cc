"""torchvision FCOS and SSD replacements: static-shape post-processing with torchvision's own detections.

As for RetinaNet (test_replace_tv_detectors.py): each detector is torchvision's class around a tiny
seeded backbone (two levels, 64x64 images), so a forward takes milliseconds; eager equality is exact
(the stand-in hands torchvision's NMS the very candidates, in the same order). The full-size
constructors (fcos_resnet50_fpn, ssdlite320_mobilenet_v3_large, untrained and seeded) are checked
eagerly too. Through ONNX Runtime boxes agree within 1e-4 px, labels and order exactly; the exported
graphs parse and build under TensorRT for RTX (compute capability 8.6, no GPU needed).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from trt_harness.conversions.replacements import applied
from trt_harness.conversions.tensorrt_flavor import select_flavor
from trt_harness.models.architectures.torchvision_ops import import_torchvision

from tests.conversions.test_replace_support import op_types
from tests.conversions.test_replace_tv_detectors import (
    SIZE,
    FirstImage,
    TinyBackbone,
    canonical,
    exported,
    images,
)

detection = import_torchvision().models.detection
CLASSES = 5


class WideBackbone(TinyBackbone):
    out_channels = 32  # FCOS's head towers use GroupNorm(32, channels)


def _spread(head: torch.nn.Module, std: float) -> None:
    """torchvision's std 0.01 leaves the towers near 0: tied scores, so the weights are drawn wider."""
    for conv in head.modules():
        if isinstance(conv, torch.nn.Conv2d):
            torch.nn.init.normal_(conv.weight, std=std)


def tiny_fcos(topk_candidates: int, detections_per_img: int) -> torch.nn.Module:
    torch.manual_seed(0)
    anchors = detection.anchor_utils.AnchorGenerator(sizes=((16,), (32,)), aspect_ratios=((1.0,),) * 2)
    model = detection.FCOS(
        WideBackbone(), num_classes=CLASSES, min_size=SIZE, max_size=SIZE, anchor_generator=anchors,
        head=detection.fcos.FCOSHead(WideBackbone.out_channels, 1, CLASSES, num_convs=1),
        topk_candidates=topk_candidates, detections_per_img=detections_per_img, score_thresh=0.3,
    )  # fmt: skip
    with torch.no_grad():  # scores spread around the threshold, boxes overlapping: NMS has work
        _spread(model.head, 0.1)
        torch.nn.init.normal_(model.head.classification_head.cls_logits.bias, mean=0.0, std=0.5)
        # distances ~16 px (ReLU'd): boxes of nonzero area that overlap their neighbours'
        torch.nn.init.normal_(model.head.regression_head.bbox_reg.weight, std=0.02)
        torch.nn.init.normal_(model.head.regression_head.bbox_reg.bias, mean=1.0, std=0.3)
    return model.eval()


def tiny_ssd(topk_candidates: int, detections_per_img: int) -> torch.nn.Module:
    torch.manual_seed(0)
    anchors = detection.anchor_utils.DefaultBoxGenerator([[2], [2]])
    head = detection.ssd.SSDHead([WideBackbone.out_channels] * 2, anchors.num_anchors_per_location(), CLASSES)
    model = detection.ssd.SSD(
        WideBackbone(), anchors, (SIZE, SIZE), CLASSES, head=head, score_thresh=0.2,
        topk_candidates=topk_candidates, detections_per_img=detections_per_img,
    )  # fmt: skip
    with torch.no_grad():
        _spread(model.head, 0.3)
    return model.eval()


def fcos_candidates(model: torch.nn.Module, image: torch.Tensor) -> int:
    """How many (location, class) scores pass score_thresh: NMS and the caps must have removed some."""
    with torch.no_grad():
        batch, _ = model.transform([image])
        out = model.head(list(model.backbone(batch.tensors).values()))
    scores = torch.sqrt(torch.sigmoid(out["cls_logits"]) * torch.sigmoid(out["bbox_ctrness"]))
    return int((scores > model.score_thresh).sum())


def ssd_candidates(model: torch.nn.Module, image: torch.Tensor) -> int:
    with torch.no_grad():
        batch, _ = model.transform([image])
        out = model.head(list(model.backbone(batch.tensors).values()))
    return int((torch.softmax(out["cls_logits"], dim=-1)[..., 1:] > model.score_thresh).sum())


Detector = tuple[Callable[[int, int], torch.nn.Module], str, Callable[[torch.nn.Module, torch.Tensor], int]]
DETECTORS: dict[str, Detector] = {
    "fcos": (tiny_fcos, "tv_fcos_postprocess", fcos_candidates),
    "ssd": (tiny_ssd, "tv_ssd_postprocess", ssd_candidates),
}
CAPS = [  # (topk_candidates, detections_per_img): torchvision-like, a small final cap, a small pre-NMS cap
    pytest.param(1000, 300, id="default-cap"),
    pytest.param(1000, 7, id="detections-cap"),
    pytest.param(5, 300, id="topk-cap"),
]


def assert_padded_torchvision_rows(want: dict, got: dict, per_img: int) -> int:
    """`got` is `want` (torchvision's) padded to `per_img` rows; returns the detection count."""
    count = len(want["scores"])
    assert all(got[key].shape[0] == per_img for key in ("boxes", "scores", "labels"))
    assert torch.equal(got["scores"][:count], want["scores"])  # sorted by score as torchvision's
    wanted = canonical(want["boxes"], want["scores"], want["labels"])
    got_rows = canonical(got["boxes"][:count], got["scores"][:count], got["labels"][:count])
    for a, b in zip(got_rows, wanted, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not got["boxes"][count:].any() and not got["scores"][count:].any()
    assert (got["labels"][count:] == -1).all()
    return count


@pytest.mark.parametrize(("topk", "per_img"), CAPS)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", list(DETECTORS))
def test_eager_detections_equal_torchvision(kind: str, topk: int, per_img: int, seed: int) -> None:
    build, name, candidates = DETECTORS[kind]
    model = build(topk, per_img)
    batch = images(seed, count=2)
    with torch.no_grad():
        expected = model(list(batch))
        with applied([name]) as record:
            actual = model(list(batch))
    assert [c.action for c in record.calls] == ["replaced"]
    for want, got, image in zip(expected, actual, batch, strict=True):
        count = assert_padded_torchvision_rows(want, got, per_img)
        assert 0 < count <= per_img < candidates(model, image) or count < per_img


@pytest.mark.parametrize("kind", list(DETECTORS))
def test_fixture_has_suppression_and_padding(kind: str) -> None:
    """Not trivial: NMS removes candidates (an NMS-less stand-in would fail) and rows are left to pad."""
    build, _, candidates = DETECTORS[kind]
    model = build(1000, 300)
    with torch.no_grad():
        kept = len(model([images(0)[0]])[0]["scores"])
    assert 0 < kept < min(300, candidates(model, images(0)[0]))


def seeded_full_size(kind: str) -> tuple[torch.nn.Module, int]:
    """torchvision's own constructors, untrained, seeded; thresholds that leave detections to compare."""
    torch.manual_seed(0)
    if kind == "fcos":  # untrained scores sit near sqrt(0.01 * 0.5) = 0.07, below the 0.2 default
        return detection.fcos_resnet50_fpn(
            weights=None, weights_backbone=None, min_size=128, max_size=128, score_thresh=0.07,
            detections_per_img=1000,
        ).eval(), 128  # fmt: skip
    return detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval(), 320


@pytest.mark.parametrize("kind", list(DETECTORS))
def test_full_size_constructors_give_torchvision_detections(kind: str) -> None:
    model, size = seeded_full_size(kind)
    batch = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(list(batch))
        with applied([DETECTORS[kind][1]]):
            actual = model(list(batch))
    for want, got in zip(expected, actual, strict=True):
        assert assert_padded_torchvision_rows(want, got, model.detections_per_img) > 0


@pytest.fixture(scope="module", params=list(DETECTORS))
def detector_onnx(request: pytest.FixtureRequest) -> tuple[torch.nn.Module, onnx.ModelProto]:
    build, name, _ = DETECTORS[request.param]
    model = build(1000, 20)
    return model, exported(model, [name])


def test_export_has_no_nonzero_nor_nms(detector_onnx: tuple[torch.nn.Module, onnx.ModelProto]) -> None:
    _, proto = detector_onnx
    ops = op_types(proto)
    assert "NonZero" not in ops and "NonMaxSuppression" not in ops  # TensorRT-RTX cannot build NMS
    assert [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim] == [20, 4]


@pytest.mark.parametrize("kind", list(DETECTORS))
def test_original_export_has_nonzero(kind: str) -> None:
    """What the replacements are for: torchvision's own post-processing traces to NonZero."""
    assert "NonZero" in op_types(exported(DETECTORS[kind][0](1000, 20), []))


def assert_runtime_gives_torchvision_rows(
    model: torch.nn.Module, proto: onnx.ModelProto, seeds: range
) -> None:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for seed in seeds:
        image = images(seed)
        with torch.no_grad():
            want = model([image[0]])[0]
        boxes, scores, labels = session.run(None, {session.get_inputs()[0].name: image.numpy()})
        count = len(want["scores"])
        assert count > 0
        got_boxes, got_scores, got_labels = canonical(boxes[:count], scores[:count], labels[:count])
        want_boxes, want_scores, want_labels = canonical(want["boxes"], want["scores"], want["labels"])
        np.testing.assert_array_equal(got_labels, want_labels)
        np.testing.assert_allclose(got_boxes, want_boxes, atol=1e-4, rtol=0)
        np.testing.assert_allclose(got_scores, want_scores, atol=1e-6, rtol=0)
        assert not boxes[count:].any() and not scores[count:].any() and (labels[count:] == -1).all()


def test_onnx_runtime_gives_torchvision_detections(
    detector_onnx: tuple[torch.nn.Module, onnx.ModelProto],
) -> None:
    assert_runtime_gives_torchvision_rows(*detector_onnx, range(4))


@pytest.mark.skipif(select_flavor() is None, reason="no TensorRT installed")
@pytest.mark.filterwarnings("ignore:.*Timing cache operations are no-ops:DeprecationWarning")
def test_tensorrt_rtx_parses_and_builds_the_export(
    detector_onnx: tuple[torch.nn.Module, onnx.ModelProto], tmp_path: Path
) -> None:
    from trt_harness.conversions.tensorrt_build import engine_from_onnx
    from trt_harness.models.recipe import BuildOptions

    path = tmp_path / "detector.onnx"
    onnx.save(detector_onnx[1], path)
    record = engine_from_onnx(path, tmp_path, BuildOptions(compute_capabilities=((8, 6),)), {})
    assert record.built and record.plan_size_bytes > 0
    assert record.network_io["outputs"] == ("boxes", "scores", "labels")


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(DETECTORS))
def test_dynamo_export_gives_torchvision_detections(kind: str) -> None:
    """torch.export (8 s FCOS, 4 s SSD here): no data-dependent guard left, no NonZero, same detections."""
    build, name, _ = DETECTORS[kind]
    model = build(1000, 5)
    with applied([name]), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            FirstImage(model).eval(), (images(0),), None, input_names=["image"],
            output_names=["boxes", "scores", "labels"], dynamo=True, external_data=False, opset_version=18,
        )  # fmt: skip
    proto = program.model_proto
    assert "NonZero" not in op_types(proto) and "NonMaxSuppression" not in op_types(proto)
    assert_runtime_gives_torchvision_rows(model, proto, range(2))
