"""The scan names torchvision's detector post-processing, with the replacement where there is one
(RetinaNet, FCOS, SSD: for both exporters; the Faster R-CNN stages: TorchScript only; Keypoint R-CNN's
keypoints: none)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from trt_harness.conversions.scan import scan_module
from trt_harness.models.architectures.torchvision_ops import import_torchvision

from tests.conversions.test_replace_tv_detectors import SIZE, TinyBackbone, anchors, images, tiny_retinanet
from tests.conversions.test_replace_tv_fcos_ssd import tiny_fcos, tiny_ssd

detection = import_torchvision().models.detection


def findings_by_op(model: torch.nn.Module, exporter: str) -> dict[str, tuple[str | None, str]]:
    with torch.no_grad():
        found = scan_module(model, (list(images(0)),), exporter)  # type: ignore[arg-type]
    return {f.op: (f.replacement, f.reason) for f in found if f.op.startswith("torchvision")}


DETECTORS = {  # op the scan names -> (tiny model, the replacement it must name)
    "torchvision RetinaNet.postprocess_detections": (
        lambda: tiny_retinanet(1000, 20),
        "tv_retinanet_postprocess",
    ),
    "torchvision FCOS.postprocess_detections": (lambda: tiny_fcos(1000, 20), "tv_fcos_postprocess"),
    "torchvision SSD.postprocess_detections": (lambda: tiny_ssd(1000, 20), "tv_ssd_postprocess"),
}


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("op", list(DETECTORS))
def test_detector_postprocessing_is_found_with_its_replacement_for_both_exporters(
    op: str, exporter: str
) -> None:
    build, name = DETECTORS[op]
    replacement, reason = findings_by_op(build(), exporter)[op]
    assert replacement == name and "NonZero" in reason


RCNN_STAGES = (
    "torchvision RegionProposalNetwork.filter_proposals",
    "torchvision MultiScaleRoIAlign",
    "torchvision RoIHeads.postprocess_detections",
)


def tiny_faster_rcnn() -> torch.nn.Module:
    torch.manual_seed(0)
    pool = torchvision_ops().MultiScaleRoIAlign(["0", "1"], output_size=7, sampling_ratio=2)
    return detection.FasterRCNN(
        TinyBackbone(), num_classes=5, min_size=SIZE, max_size=SIZE, rpn_anchor_generator=anchors(),
        box_roi_pool=pool,
    ).eval()  # fmt: skip


def test_faster_rcnn_stages_are_found_with_their_replacement() -> None:
    found = findings_by_op(tiny_faster_rcnn(), "torchscript")
    for op in RCNN_STAGES:
        replacement, reason = found[op]
        assert replacement == "tv_rcnn_postprocess" and "NonZero" in reason, op


def test_faster_rcnn_with_dynamo_is_told_to_use_torchscript() -> None:
    found = findings_by_op(tiny_faster_rcnn(), "dynamo")
    for op in RCNN_STAGES:
        replacement, reason = found[op]
        assert replacement is None and "exporter='torchscript'" in reason, op


def test_keypoint_rcnn_keypoints_are_named_without_a_replacement() -> None:
    torch.manual_seed(0)
    ops = torchvision_ops()
    model = detection.KeypointRCNN(
        TinyBackbone(), num_classes=2, min_size=SIZE, max_size=SIZE,
        rpn_anchor_generator=anchors(), box_roi_pool=ops.MultiScaleRoIAlign(["0", "1"], 7, 2),
        keypoint_roi_pool=ops.MultiScaleRoIAlign(["0", "1"], 14, 2),
        keypoint_head=detection.keypoint_rcnn.KeypointRCNNHeads(TinyBackbone.out_channels, (16,)),
        keypoint_predictor=detection.keypoint_rcnn.KeypointRCNNPredictor(16, 3),
    ).eval()  # fmt: skip
    replacement, reason = findings_by_op(model, "torchscript")["torchvision keypointrcnn_inference"]
    assert replacement is None and "box size" in reason and "no static graph" in reason


def torchvision_ops():  # noqa: ANN201
    return import_torchvision().ops


def test_scan_of_a_model_without_torchvision_does_not_import_it() -> None:
    code = (
        "import sys, torch\n"
        "from trt_harness.conversions.scan import scan_module\n"
        "scan_module(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), 'torchscript')\n"
        "print('torchvision' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
