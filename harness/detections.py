"""Detection-level comparison: do the boxes move between backends, not only the numbers?

For a recipe with a `DetectionSpec`, each runner's detection output on the recipe's samples is
post-processed into boxes per image (batches flattened: image i is the i-th image over all samples,
in order), and every runner pair of the comparison groups is compared image by image with
`compare_detections`. Pairs at a precision in `gated_precisions` decide `passed`; the others are
informational. Outputs are read sample by sample; only the (small) detections are kept.

Boxes stay in the letterboxed input's pixels, so the report draws them on the inputs themselves:
`write_detection_images` saves those as uint8 images once per run.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from trt_harness.models.core.artifacts import atomic_path
from trt_harness.models.core.errors import UsageError
from trt_harness.models.detection import (
    Detections,
    compare_detections,
    postprocess_anchor_free,
    postprocess_yolov5,
)
from trt_harness.models.recipe import DetectionSpec
from trt_harness.models.results.detections import DetectionPair, DetectionsReport, ImageAgreement

DETECTION_IMAGES = "detection_images.npz"
# Fixed timestamp inside the archive: the same images give the same bytes, so the artifact's hash is stable.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _drop_small_yolov5(pred: np.ndarray, min_wh: float) -> np.ndarray:
    """(N, A, 5 + nc): objectness 0 where the box's width or height is under `min_wh` (NaN sizes stay)."""
    small = (pred[..., 2:4] < min_wh).any(axis=-1)
    if not small.any():
        return pred
    pred = pred.copy()
    pred[..., 4][small] = 0
    return pred


def _drop_small_anchor_free(pred: np.ndarray, min_wh: float) -> np.ndarray:
    """(N, 4 + nc, A): class scores 0 where the box's width or height is under `min_wh`."""
    small = (pred[:, 2:4, :] < min_wh).any(axis=1)
    if not small.any():
        return pred
    pred = pred.copy()
    pred[:, 4:, :] = np.where(small[:, None, :], 0, pred[:, 4:, :])
    return pred


@dataclass(frozen=True)
class _Layout:
    postprocess: Callable[..., list[Detections]]
    drop_small: Callable[[np.ndarray, float], np.ndarray]


_LAYOUTS: dict[str, _Layout] = {
    "yolov5": _Layout(postprocess_yolov5, _drop_small_yolov5),
    "anchor_free": _Layout(postprocess_anchor_free, _drop_small_anchor_free),
}


def detect(spec: DetectionSpec, pred: np.ndarray) -> list[Detections]:
    """The detections of each image of one batch of `spec.output`, boxes in letterboxed-input pixels."""
    layout = _LAYOUTS[spec.layout]
    pred = np.asarray(pred, dtype=np.float32)
    if spec.min_wh > 0 and pred.ndim == 3:
        pred = layout.drop_small(pred, spec.min_wh)
    return layout.postprocess(pred, spec.conf_thres, spec.iou_thres, spec.max_det)


def detections_of(
    spec: DetectionSpec, runners: Sequence[str], samples: Iterable[Mapping[str, Mapping[str, np.ndarray]]]
) -> dict[str, list[Detections | None]]:
    """Post-process each runner's `spec.output`, sample by sample, into detections per image (batches
    flattened; None where a runner gave no such output)."""
    found_by_runner: dict[str, list[Detections | None]] = {runner: [] for runner in runners}
    for sample in samples:
        found = {
            runner: detect(spec, sample[runner][spec.output]) if spec.output in sample[runner] else None
            for runner in runners
        }
        batch = max((len(per_image) for per_image in found.values() if per_image is not None), default=0)
        for runner, per_image in found.items():
            found_by_runner[runner] += [
                per_image[i] if per_image is not None and i < len(per_image) else None for i in range(batch)
            ]
    return found_by_runner


def compare_pair(
    spec: DetectionSpec,
    ref: str,
    cand: str,
    precision: str,
    ref_images: Sequence[Detections | None],
    cand_images: Sequence[Detections | None],
) -> DetectionPair:
    images = []
    for index, (ref_dets, cand_dets) in enumerate(zip(ref_images, cand_images, strict=True)):
        absent = tuple(name for name, dets in ((ref, ref_dets), (cand, cand_dets)) if dets is None)
        if absent or ref_dets is None or cand_dets is None:
            images.append(ImageAgreement(index, None, absent, spec.output))
            continue
        images.append(
            ImageAgreement(
                index,
                compare_detections(ref_dets, cand_dets, spec.tolerance, spec.iou_match),
                output=spec.output,
            )
        )
    return DetectionPair(ref, cand, precision, precision in spec.gated_precisions, tuple(images))


def input_images(feeds: Iterable[Mapping[str, Any]], input_name: str) -> Iterable[np.ndarray]:
    """Each image of each feed's `input_name` ((N, 3, H, W) floats in [0, 1]) as (H, W, 3) uint8 RGB."""
    for feed in feeds:
        batch = np.asarray(feed[input_name])
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise UsageError(
                f"input '{input_name}' has shape {batch.shape}; detection images need (N, 3, H, W) RGB floats "
                "in [0, 1], so the detection spec fits only recipes whose first input is such an image batch"
            )
        pixels = np.clip(np.rint(batch.astype(np.float32) * 255), 0, 255).astype(np.uint8)
        yield from np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))


def write_detection_images(feeds: Iterable[Mapping[str, Any]], input_name: str, target: Path) -> int:
    """Save each image of the feeds' `input_name` as a compressed .npz with one uint8 (H, W, 3) array per
    image, named `image_<index>`; returns the number of images. Same images, same bytes."""
    count = 0
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for image in input_images(feeds, input_name):
            entry = zipfile.ZipInfo(f"image_{count}.npy", date_time=_ZIP_DATE)
            entry.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(entry, "w") as stream:
                np.lib.format.write_array(stream, image, allow_pickle=False)
            count += 1
    return count


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.1f}".rstrip("0").rstrip(".") + "%"


def brief_failures(image: ImageAgreement) -> str:
    """The criteria one image failed, briefly: "matched 40% < 95%, mean IoU 0.712 < 0.95"."""
    match = image.match
    if match is None:
        return image.failures[0]
    tol = match.tolerance
    found = []
    if not match.matched_fraction >= tol.min_matched_fraction:
        found.append(f"matched {_percent(match.matched_fraction)} < {_percent(tol.min_matched_fraction)}")
    if match.mean_iou is not None and not match.mean_iou >= tol.min_mean_iou:
        found.append(f"mean IoU {match.mean_iou:.3f} < {tol.min_mean_iou:g}")
    if match.max_score_delta is not None and not match.max_score_delta <= tol.max_score_delta:
        found.append(f"max |score delta| {match.max_score_delta:.3g} > {tol.max_score_delta:g}")
    return ", ".join(found)


def gate_failures(detections: DetectionsReport | None, display: Callable[[str], str]) -> list[str]:
    """One line per failing image of a gated pair: "Torch vs ORT on image 2: matched 40% < 95%"."""
    if detections is None:
        return []
    return [
        f"{display(pair.ref_backend)} vs {display(pair.cand_backend)} on image {image.image}: "
        + brief_failures(image)
        for pair in detections.pairs
        if pair.gated
        for image in pair.images
        if not image.passed
    ]
