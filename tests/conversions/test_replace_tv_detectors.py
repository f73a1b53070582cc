"""torchvision detector replacements: static-shape post-processing with the detections of torchvision's own.

Each detector is torchvision's class around a tiny seeded backbone (two feature levels, 64x64 images),
so one forward takes milliseconds. Equality is exact outside an export (the stand-in calls the same
torchvision ops on the same candidates). Through ONNX Runtime the boxes agree within 1e-4 px
(float32 rounding of the exported arithmetic, measured ~1e-5) and labels and order exactly.
"""

from __future__ import annotations

import collections
import contextlib
import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from trt_harness.conversions.replacements import applied
from trt_harness.models.architectures.torchvision_ops import import_torchvision, nms_reference

from tests.conversions.test_replace_support import op_types

torchvision = import_torchvision()
detection = torchvision.models.detection
SIZE = 64
CLASSES = 5


class TinyBackbone(torch.nn.Module):
    """Two feature levels (strides 8 and 16) with `out_channels`, as torchvision's detectors expect."""

    out_channels = 8

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, self.out_channels, 3, stride=8, padding=1)
        self.down = torch.nn.Conv2d(self.out_channels, self.out_channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> collections.OrderedDict[str, torch.Tensor]:
        first = torch.tanh(self.stem(x))  # no ReLU: zero features would tie scores
        return collections.OrderedDict([("0", first), ("1", torch.tanh(self.down(first)))])


def anchors() -> detection.anchor_utils.AnchorGenerator:
    return detection.anchor_utils.AnchorGenerator(sizes=((16,), (32,)), aspect_ratios=((0.5, 1.0, 2.0),) * 2)


def tiny_retinanet(topk_candidates: int, detections_per_img: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = detection.RetinaNet(
        TinyBackbone(), num_classes=CLASSES, min_size=SIZE, max_size=SIZE, anchor_generator=anchors(),
        topk_candidates=topk_candidates, detections_per_img=detections_per_img, score_thresh=0.3,
    )  # fmt: skip
    with torch.no_grad():  # scores spread around the threshold, boxes overlapping: NMS has work
        for conv in model.head.modules():  # torchvision's std 0.01 leaves the ReLU tower at 0: tied scores
            if isinstance(conv, torch.nn.Conv2d):
                torch.nn.init.normal_(conv.weight, std=0.1)
        torch.nn.init.normal_(model.head.classification_head.cls_logits.weight, std=0.3)
        torch.nn.init.normal_(model.head.classification_head.cls_logits.bias, mean=-0.5, std=0.5)
        torch.nn.init.normal_(model.head.regression_head.bbox_reg.weight, std=0.05)
    return model.eval()


def images(seed: int, count: int = 1) -> torch.Tensor:
    return torch.rand(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def candidates_above_threshold(model: torch.nn.Module, image: torch.Tensor) -> int:
    """How many (anchor, class) scores pass score_thresh: NMS and the caps must have removed some."""
    with torch.no_grad():
        batch, _ = model.transform([image])
        logits = model.head(list(model.backbone(batch.tensors).values()))["cls_logits"]
    return int((torch.sigmoid(logits) > model.score_thresh).sum())


def canonical(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, ...]:
    """Rows by decreasing score; equal scores (torchvision gives their order no meaning) by label and box."""
    b, s, lab = (np.asarray(t) for t in (boxes, scores, labels))
    order = np.lexsort((b[:, 3], b[:, 2], b[:, 1], b[:, 0], lab, -s))
    return b[order], s[order], lab[order]


CAPS = [  # (topk_candidates, detections_per_img): torchvision-like, a small final cap, a small per-level cap
    pytest.param(1000, 300, id="default-cap"),
    pytest.param(1000, 7, id="detections-cap"),
    pytest.param(5, 300, id="topk-cap"),
]


@pytest.mark.parametrize(("topk", "per_img"), CAPS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retinanet_eager_detections_equal_torchvision(topk: int, per_img: int, seed: int) -> None:
    model = tiny_retinanet(topk, per_img)
    batch = images(seed, count=2)
    with torch.no_grad():
        expected = model(list(batch))
        with applied(["tv_retinanet_postprocess"]) as record:
            actual = model(list(batch))
    assert [c.action for c in record.calls] == ["replaced"]
    for want, got, image in zip(expected, actual, batch, strict=True):
        count = len(want["scores"])
        assert 0 < count <= per_img < candidates_above_threshold(model, image) or count < per_img
        assert all(got[key].shape[0] == per_img for key in ("boxes", "scores", "labels"))
        assert torch.equal(got["scores"][:count], want["scores"])  # sorted by score as torchvision's
        wanted = canonical(want["boxes"], want["scores"], want["labels"])
        got_rows = canonical(got["boxes"][:count], got["scores"][:count], got["labels"][:count])
        for a, b in zip(got_rows, wanted, strict=True):
            np.testing.assert_array_equal(a, b)
        assert not got["boxes"][count:].any() and not got["scores"][count:].any()
        assert (got["labels"][count:] == -1).all()


def test_retinanet_fixture_has_suppression_and_ties_are_rare() -> None:
    """The fixture is not trivial: NMS removes candidates, so an NMS-less stand-in would fail above."""
    model = tiny_retinanet(1000, 300)
    with torch.no_grad():
        kept = len(model([images(0)[0]])[0]["scores"])
    assert 0 < kept < candidates_above_threshold(model, images(0)[0])


class FirstImage(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        detections = self.model([image[0]])[0]
        return detections["boxes"], detections["scores"], detections["labels"]


def exported(model: torch.nn.Module, replacements: list[str]) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with applied(replacements), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            FirstImage(model).eval(), (images(0),), buffer, input_names=["image"],
            output_names=["boxes", "scores", "labels"], dynamo=False, opset_version=17,
        )  # fmt: skip
    return onnx.load_from_string(buffer.getvalue())


@pytest.fixture(scope="module")
def retinanet_onnx() -> tuple[torch.nn.Module, onnx.ModelProto]:
    model = tiny_retinanet(1000, 20)
    return model, exported(model, ["tv_retinanet_postprocess"])


def test_retinanet_exports_nms_and_no_nonzero(
    retinanet_onnx: tuple[torch.nn.Module, onnx.ModelProto],
) -> None:
    _, proto = retinanet_onnx
    ops = op_types(proto)
    assert "NonZero" not in ops and "NonMaxSuppression" not in ops  # TensorRT-RTX cannot build NMS
    assert [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim] == [20, 4]


def test_original_retinanet_export_has_nonzero() -> None:
    """What the replacement is for: torchvision's own post-processing traces to NonZero."""
    assert "NonZero" in op_types(exported(tiny_retinanet(1000, 20), []))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_retinanet_onnx_runtime_gives_torchvision_detections(
    retinanet_onnx: tuple[torch.nn.Module, onnx.ModelProto], seed: int
) -> None:
    model, proto = retinanet_onnx
    image = images(seed)
    with torch.no_grad():
        want = model([image[0]])[0]
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    boxes, scores, labels = session.run(None, {"image": image.numpy()})
    count = len(want["scores"])
    assert count > 0
    got_boxes, got_scores, got_labels = canonical(boxes[:count], scores[:count], labels[:count])
    want_boxes, want_scores, want_labels = canonical(want["boxes"], want["scores"], want["labels"])
    np.testing.assert_array_equal(got_labels, want_labels)
    np.testing.assert_allclose(got_boxes, want_boxes, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-6, rtol=0)
    assert not boxes[count:].any() and not scores[count:].any() and (labels[count:] == -1).all()


def brute_force_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    iou = torchvision.ops.box_iou(boxes, boxes)
    kept: list[int] = []
    for i in order:
        if all(iou[i, j] <= iou_threshold for j in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("seed", range(5))
def test_cpu_nms_fallback_is_greedy_nms(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(60, 2, generator=generator) * 50
    boxes = torch.cat([corners, corners + 5 + torch.rand(60, 2, generator=generator) * 20], dim=1)
    scores = torch.rand(60, generator=generator)
    assert nms_reference(boxes, scores, 0.4).tolist() == brute_force_nms(boxes, scores, 0.4)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("steps", [3, 40])
def test_static_greedy_nms_is_batched_nms(seed: int, steps: int) -> None:
    """The traced formulation, run eagerly: torchvision's batched_nms, first `steps` kept, same order."""
    from trt_harness.conversions.replacements._static_detections import greedy_nms_steps

    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(80, 2, generator=generator) * 40
    boxes = torch.cat([corners, corners + 4 + torch.rand(80, 2, generator=generator) * 20], dim=1)
    scores = torch.rand(80, generator=generator)
    labels = torch.randint(0, 3, (80,), generator=generator)
    valid = scores > 0.2
    picked, kept = greedy_nms_steps(boxes, scores, labels, valid, 0.4, steps)
    index = torch.arange(80)[valid]
    want = index[torchvision.ops.batched_nms(boxes[valid], scores[valid], labels[valid], 0.4)][:steps]
    assert kept.tolist() == [True] * len(want) + [False] * (steps - len(want))
    assert picked[: len(want)].tolist() == want.tolist()
