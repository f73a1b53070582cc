"""tv_rcnn_postprocess: torchvision Faster R-CNN in static shapes, with torchvision's own proposals and detections.

The detector is torchvision's FasterRCNN around the tiny seeded two-level backbone of the RetinaNet
tests (64x64 images), with caps small enough that the padding is exercised: NMS in both stages
removes candidates, and fewer proposals and detections survive than the fixed counts. Each stand-in
is compared with torchvision's own call on the same inputs (outside an export the stand-ins call
the same torchvision ops, so the non-padded rows are equal exactly); the TorchScript export is
checked for NonZero and static shapes, run in ONNX Runtime against Torch, and built by TensorRT for
RTX (ahead of time, on the CPU).
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from trt_harness.conversions.replacements import applied
from trt_harness.models.architectures.torchvision_ops import import_torchvision

from tests.conversions.test_replace_support import op_types
from tests.conversions.test_replace_tv_detectors import SIZE, TinyBackbone, anchors, canonical, images

torchvision = import_torchvision()
detection = torchvision.models.detection
NAME = "tv_rcnn_postprocess"
PRE_NMS, POST_NMS, PER_IMG = 40, 60, 18


def tiny_rcnn(detections_per_img: int = PER_IMG) -> torch.nn.Module:
    torch.manual_seed(0)
    pool = torchvision.ops.MultiScaleRoIAlign(["0", "1"], output_size=7, sampling_ratio=2, canonical_scale=32)
    model = detection.FasterRCNN(
        TinyBackbone(), num_classes=5, min_size=SIZE, max_size=SIZE, rpn_anchor_generator=anchors(),
        box_roi_pool=pool, rpn_pre_nms_top_n_test=PRE_NMS, rpn_post_nms_top_n_test=POST_NMS,
        rpn_nms_thresh=0.3, rpn_score_thresh=0.5, box_score_thresh=0.25, box_nms_thresh=0.3,
        box_detections_per_img=detections_per_img,
    )  # fmt: skip
    with torch.no_grad():  # spread scores and deform boxes: torchvision's std 0.01 ties them near 0.5
        torch.nn.init.normal_(model.rpn.head.cls_logits.weight, std=0.3)
        torch.nn.init.normal_(model.rpn.head.bbox_pred.weight, std=0.05)
        torch.nn.init.normal_(model.roi_heads.box_predictor.cls_score.weight, std=0.3)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_rcnn()


def rpn_inputs(model: torch.nn.Module, seed: int) -> tuple:
    """What the RPN's filter_proposals receives for two images (torchvision's forward up to there)."""
    rpn = model.rpn
    with torch.no_grad():
        batch, _ = model.transform(list(images(seed, count=2)))
        features = list(model.backbone(batch.tensors).values())
        objectness, deltas = rpn.head(features)
        grid_anchors = rpn.anchor_generator(batch, features)
        per_level = [o[0].numel() for o in objectness]
        objectness, deltas = detection.rpn.concat_box_prediction_layers(objectness, deltas)
        proposals = rpn.box_coder.decode(deltas.detach(), grid_anchors).view(2, -1, 4)
    return proposals, objectness, batch.image_sizes, per_level


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_proposals_are_torchvision_s_then_padding(model: torch.nn.Module, seed: int) -> None:
    args = rpn_inputs(model, seed)
    want_boxes, want_scores = model.rpn.filter_proposals(*args)
    with applied([NAME]) as record:
        got_boxes, got_scores = model.rpn.filter_proposals(*args)
    assert [c.action for c in record.calls] == ["replaced"]
    for want_b, want_s, got_b, got_s in zip(want_boxes, want_scores, got_boxes, got_scores, strict=True):
        count = len(want_s)
        assert 0 < count < POST_NMS  # padding is exercised
        assert got_b.shape == (POST_NMS, 4) and got_s.shape == (POST_NMS,)
        assert torch.equal(got_b[:count], want_b) and torch.equal(got_s[:count], want_s)
        assert not got_b[count:].any() and not got_s[count:].any()


def test_proposal_fixture_has_suppression_and_invalid_scores(model: torch.nn.Module) -> None:
    """NMS and the score filter both remove candidates: a stand-in skipping either fails above."""
    proposals, objectness, sizes, per_level = rpn_inputs(model, 0)
    scores = torch.sigmoid(objectness.reshape(2, -1)[0])
    candidates = sum(min(PRE_NMS, n) for n in per_level)
    above = int((scores >= model.rpn.score_thresh).sum())
    assert 0 < above < scores.numel()
    kept = len(model.rpn.filter_proposals(proposals, objectness, sizes, per_level)[1][0])
    assert kept < min(above, candidates)


def test_multiscale_roi_align_rows_are_torchvision_s(model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    features = {
        "0": torch.rand(1, 8, 8, 8, generator=generator),
        "1": torch.rand(1, 8, 4, 4, generator=generator),
    }
    corners = torch.rand(30, 2, generator=generator) * 40
    sizes = 2 + torch.rand(30, 2, generator=generator) * 60  # small and large: both levels
    boxes = torch.cat([corners, (corners + sizes).clamp(max=SIZE)], dim=1)
    padded = torch.cat([boxes, torch.zeros(10, 4)])
    pool = model.roi_heads.box_roi_pool
    with torch.no_grad():
        want = pool(features, [boxes], [(SIZE, SIZE)])
        levels = pool.map_levels([boxes])
        with applied([NAME]) as record:
            got = pool(features, [padded], [(SIZE, SIZE)])
    assert set(levels.tolist()) == {0, 1}
    assert [c.action for c in record.calls] == ["replaced"]
    assert got.shape == (40, *want.shape[1:])
    torch.testing.assert_close(got[:30], want, rtol=0, atol=1e-6)


def test_postprocess_detections_ignore_padding_proposals(model: torch.nn.Module) -> None:
    """Padding proposals (zero rows) with logits that would score: they yield nothing."""
    generator = torch.Generator().manual_seed(1)
    corners = torch.rand(20, 2, generator=generator) * 30
    proposals = torch.cat([corners, corners + 10 + torch.rand(20, 2, generator=generator) * 20], dim=1)
    logits = torch.randn(20, 5, generator=generator) * 2
    regression = torch.randn(20, 20, generator=generator) * 0.1
    # confident class-1 scores: only the padding rows' zero width stops them (their decoded boxes
    # have zero width too, so torchvision's min-size filter and the stand-in's padding mask both do)
    padding_logits = torch.tensor([[0.0, 10.0, 0.0, 0.0, 0.0]]).expand(8, 5)
    heads = model.roi_heads
    want = heads.postprocess_detections(logits, regression, [proposals], [(SIZE, SIZE)])
    with applied([NAME]):
        got = heads.postprocess_detections(
            torch.cat([logits, padding_logits]), torch.cat([regression, torch.zeros(8, 20)]),
            [torch.cat([proposals, torch.zeros(8, 4)])], [(SIZE, SIZE)],
        )  # fmt: skip
    (want_boxes,), (want_scores,), (want_labels,) = want
    (got_boxes,), (got_scores,), (got_labels,) = got
    count = len(want_scores)
    assert 0 < count < PER_IMG and got_scores.shape == (PER_IMG,)
    assert torch.equal(got_scores[:count], want_scores) and torch.equal(got_boxes[:count], want_boxes)
    assert torch.equal(got_labels[:count], want_labels)
    assert not got_scores[count:].any() and (got_labels[count:] == -1).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_detector_detections_equal_torchvision(model: torch.nn.Module, seed: int) -> None:
    batch = images(seed, count=2)
    with torch.no_grad():
        expected = model(list(batch))
        with applied([NAME]) as record:
            actual = model(list(batch))
    assert {c.action for c in record.calls} == {"replaced"} and len(record.calls) == 3
    for want, got in zip(expected, actual, strict=True):
        count = len(want["scores"])
        assert 0 < count <= PER_IMG and got["scores"].shape == (PER_IMG,)
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(got[key][:count], want[key])
        assert not got["boxes"][count:].any() and (got["labels"][count:] == -1).all()


def test_detector_fixture_has_capped_and_padded_images() -> None:
    """Some images have more detections than PER_IMG (the cap works), some fewer (padding works)."""
    uncapped = tiny_rcnn(300)
    with torch.no_grad():
        counts = [len(d["scores"]) for seed in range(3) for d in uncapped(list(images(seed, count=2)))]
    assert min(counts) < PER_IMG < max(counts)


class FirstImage(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        detections = self.model([image[0]])[0]
        return detections["boxes"], detections["scores"], detections["labels"]


@pytest.fixture(scope="module")
def rcnn_onnx(model: torch.nn.Module) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with applied([NAME]), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            FirstImage(model).eval(), (images(0),), buffer, input_names=["image"],
            output_names=["boxes", "scores", "labels"], dynamo=False, opset_version=17,
        )  # fmt: skip
    return onnx.load_from_string(buffer.getvalue())


def test_export_has_no_nonzero_and_static_outputs(rcnn_onnx: onnx.ModelProto) -> None:
    ops = op_types(rcnn_onnx)
    assert (
        not {"NonZero", "NonMaxSuppression", "Loop", "RoiAlign"} & ops
    )  # RTX 1.7.1 builds neither NMS nor RoiAlign
    inferred = onnx.shape_inference.infer_shapes(rcnn_onnx, strict_mode=True)
    shapes = [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in inferred.graph.output]
    assert shapes == [[PER_IMG, 4], [PER_IMG], [PER_IMG]]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_onnx_runtime_gives_torchvision_detections(
    model: torch.nn.Module, rcnn_onnx: onnx.ModelProto, seed: int
) -> None:
    image = images(seed)
    with torch.no_grad():
        want = model([image[0]])[0]
    session = ort.InferenceSession(rcnn_onnx.SerializeToString(), providers=["CPUExecutionProvider"])
    boxes, scores, labels = session.run(None, {"image": image.numpy()})
    count = len(want["scores"])
    assert 0 < count <= PER_IMG
    got_boxes, got_scores, got_labels = canonical(boxes[:count], scores[:count], labels[:count])
    want_boxes, want_scores, want_labels = canonical(want["boxes"], want["scores"], want["labels"])
    np.testing.assert_array_equal(got_labels, want_labels)
    np.testing.assert_allclose(got_boxes, want_boxes, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-6, rtol=0)
    assert not boxes[count:].any() and not scores[count:].any() and (labels[count:] == -1).all()


@pytest.mark.slow
def test_tensorrt_rtx_parses_and_builds_the_export(rcnn_onnx: onnx.ModelProto) -> None:
    trt = pytest.importorskip("tensorrt_rtx")
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    parsed = parser.parse(rcnn_onnx.SerializeToString())
    assert parsed, [str(parser.get_error(i)) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    config.num_compute_capabilities = 1  # ahead of time, no GPU needed
    config.set_compute_capability(trt.ComputeCapability.SM86, 0)
    assert builder.build_serialized_network(network, config) is not None
