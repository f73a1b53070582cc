"""Detection-level comparison: do the boxes move between backends, not only the numbers?

For a recipe with a `DetectionSpec`, each runner's detection output on the recipe's samples is
post-processed into boxes per image (batches flattened: image i is the i-th image over all samples,
in order), or read as it is for the "postprocessed" layout (the model's own boxes, scores and labels
per image), and every runner pair of the comparison groups is compared image by image, as sets, with
`compare_detections` (boxes at the conf_thres / max_det cutoff left out, see there). Pairs at a precision in `gated_precisions` decide `passed`; the others are
informational. Outputs are read sample by sample; only the (small) detections are kept.

Boxes stay in the letterboxed input's pixels, so the report draws them on the inputs themselves:
`write_detection_images` saves those as uint8 images once per run.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from trt_harness.models.core.artifacts import atomic_path
from trt_harness.models.core.errors import UsageError
from trt_harness.models.detection import (
    Cutoffs,
    Detections,
    compare_detections,
    postprocess_anchor_free,
    postprocess_yolov5,
    ranked_scores,
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
    """The detections of each image of one batch of `spec.output` (a raw layout), boxes in
    letterboxed-input pixels."""
    if spec.layout not in _LAYOUTS:
        raise UsageError(
            f"detect() decodes the raw layouts {sorted(_LAYOUTS)}; layout '{spec.layout}' is read with "
            "detect_outputs(spec, outputs)"
        )
    layout = _LAYOUTS[spec.layout]
    pred = np.asarray(pred, dtype=np.float32)
    if spec.min_wh > 0 and pred.ndim == 3:
        pred = layout.drop_small(pred, spec.min_wh)
    return layout.postprocess(
        pred, spec.conf_thres, spec.iou_thres, spec.max_det, score_resolution=spec.score_resolution
    )


# --- the "postprocessed" layout: the model's own detections ----------------------------------------


def _image_detections(spec: DetectionSpec, fields: Mapping[str, np.ndarray], where: str) -> Detections:
    """One image's detections from its (K, ...) arrays: padding cut, `conf_thres` and `max_det` applied,
    best first (ranked as the raw layouts rank)."""
    boxes = np.asarray(fields["boxes"], dtype=np.float32)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise UsageError(f"{where}: '{spec.output}' must be xyxy boxes (K, 4) per image, got {boxes.shape}")
    count = len(boxes)
    if "count" in fields:
        count = min(count, int(np.asarray(fields["count"]).reshape(-1)[0]))
    scores = np.asarray(fields["scores"], dtype=np.float32).reshape(-1)
    labels = np.asarray(fields["labels"]).reshape(-1)
    if len(scores) != len(boxes) or len(labels) != len(boxes):
        raise UsageError(
            f"{where}: {len(boxes)} boxes but {len(scores)} '{spec.scores_output}' and {len(labels)} "
            f"'{spec.labels_output}'; a post-processed detector gives one score and one label per box"
        )
    labels = np.rint(labels.astype(np.float64)).astype(np.int64)  # exports may carry labels as floats
    keypoints = None
    if "keypoints" in fields:
        keypoints = np.asarray(fields["keypoints"], dtype=np.float32)
        if keypoints.ndim != 3 or len(keypoints) != len(boxes) or keypoints.shape[2] < 2:
            raise UsageError(f"{where}: keypoints must be (K, P, 2 or 3) per image, got {keypoints.shape}")
        keypoints = keypoints[..., :2]
    masks = None
    if "masks" in fields:
        masks = np.asarray(fields["masks"])
        if masks.ndim == 4 and masks.shape[1] == 1:  # torchvision's (K, 1, H, W)
            masks = masks[:, 0]
        if masks.ndim != 3 or len(masks) != len(boxes):
            raise UsageError(f"{where}: masks must be (K, [1,] H, W) per image, got {masks.shape}")
        masks = masks > 0.5
    # padding rows (a score of 0, a label of -1) fall under the threshold or out with the label
    keep = np.flatnonzero((np.arange(len(boxes)) < count) & (scores > spec.conf_thres) & (labels >= 0))
    best_first = keep[np.argsort(-ranked_scores(scores[keep], spec.score_resolution), kind="stable")]
    best_first = best_first[: spec.max_det]
    return Detections(
        boxes[best_first],
        scores[best_first],
        labels[best_first],
        None if keypoints is None else keypoints[best_first],
        None if masks is None else masks[best_first],
    )


def _postprocessed_fields(
    spec: DetectionSpec, outputs: Mapping[str, np.ndarray]
) -> list[dict[str, Any]] | None:
    """Each image's arrays by field: batched or one image under the names themselves, or one image per
    `<i>.<name>` (a list of dicts); None when the boxes are not among `outputs`."""
    names = spec.postprocessed_outputs
    if spec.output in outputs:
        arrays = {
            field_name: np.asarray(outputs[name]) for field_name, name in names.items() if name in outputs
        }
        if arrays["boxes"].ndim == 2:  # one image
            return [arrays]
        batch = len(arrays["boxes"])
        return [{f: (a[i] if f != "count" or a.ndim else a) for f, a in arrays.items()} for i in range(batch)]
    pattern = re.compile(rf"(.*?)(\d+)\.{re.escape(spec.output)}")
    images = sorted(
        (int(m.group(2)), m.group(1)) for name in outputs if (m := pattern.fullmatch(name)) is not None
    )
    if not images:
        return None
    return [
        {
            field_name: outputs[f"{prefix}{i}.{name}"]
            for field_name, name in names.items()
            if f"{prefix}{i}.{name}" in outputs
        }
        for i, prefix in images
    ]


def detect_outputs(spec: DetectionSpec, outputs: Mapping[str, np.ndarray]) -> list[Detections] | None:
    """The detections of each image in one sample's `outputs` (name -> array) of a runner; None when the
    runner gave no detection output."""
    if spec.layout in _LAYOUTS:
        return detect(spec, outputs[spec.output]) if spec.output in outputs else None
    per_image = _postprocessed_fields(spec, outputs)
    if per_image is None:
        return None
    found = []
    for index, fields in enumerate(per_image):
        where = f"post-processed detections of image {index}"
        required = {"boxes", "scores", "labels"} - set(fields)
        if required:
            raise UsageError(
                f"{where}: no {sorted(required)} beside '{spec.output}' (outputs: {sorted(outputs)}); set the "
                "DetectionSpec's scores_output/labels_output to the model's names"
            )
        found.append(_image_detections(spec, fields, where))
    return found


def is_set_compared(spec: DetectionSpec, output: str) -> bool:
    """Whether `output` is one the "postprocessed" layout reads (compared as sets, not by position)."""
    if spec.layout in _LAYOUTS:
        return False
    return any(
        output == name or re.fullmatch(rf".*?\d+\.{re.escape(name)}", output)
        for name in spec.postprocessed_outputs.values()
    )


def detections_compared(detections: DetectionsReport | None) -> bool:
    """Whether a gated pair compared any box: detections empty on both sides compare nothing."""
    if detections is None:
        return False
    return any(
        image.match is None or image.match.num_ref or image.match.num_cand
        for pair in detections.pairs
        if pair.gated
        for image in pair.images
    )


def spec_output_problem(spec: DetectionSpec, output_names: Sequence[str]) -> str | None:
    """Why `spec` cannot read a recipe with these outputs; None when it can (or names are derived)."""
    if not output_names:
        return None  # named by the structure the model returns: known once it ran
    if spec.layout in _LAYOUTS:
        readable = spec.output in output_names
    else:
        readable = spec.output in output_names or any(
            re.fullmatch(rf".*?\d+\.{re.escape(spec.output)}", name) for name in output_names
        )
    if readable:
        return None
    return (
        f"the detection spec reads output '{spec.output}', which the recipe does not have; set "
        f"DetectionSpec(output=...) to one of {list(output_names)}"
    )


def detections_of(
    spec: DetectionSpec, runners: Sequence[str], samples: Iterable[Mapping[str, Mapping[str, np.ndarray]]]
) -> dict[str, list[Detections | None]]:
    """Post-process (or read) each runner's detection output, sample by sample, into detections per
    image (batches flattened; None where a runner gave no such output)."""
    found_by_runner: dict[str, list[Detections | None]] = {runner: [] for runner in runners}
    for sample in samples:
        found: dict[str, list[Detections] | None] = {}
        unreadable: list[UsageError] = []
        for runner in runners:
            try:
                found[runner] = detect_outputs(spec, sample[runner])
            except UsageError as error:
                # one backend's output of another shape (a mislabel, exit 3 by itself) is data: that
                # runner has no detections there; only a spec no runner's output fits is the recipe's error
                found[runner] = None
                unreadable.append(error)
        if unreadable and all(per_image is None for per_image in found.values()):
            raise unreadable[0]
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
        match = compare_detections(
            ref_dets, cand_dets, spec.tolerance, spec.iou_match, Cutoffs(spec.conf_thres, spec.max_det)
        )
        images.append(ImageAgreement(index, match, output=spec.output))
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
    if (
        tol.max_box_delta is not None
        and match.max_box_delta is not None
        and not match.max_box_delta <= tol.max_box_delta
    ):
        found.append(f"box moved {match.max_box_delta:.3g} px > {tol.max_box_delta:g} px")
    if match.mean_mask_iou is not None and not match.mean_mask_iou >= tol.min_mean_mask_iou:
        found.append(f"mask IoU {match.mean_mask_iou:.3f} < {tol.min_mean_mask_iou:g}")
    if match.max_keypoint_delta is not None and not match.max_keypoint_delta <= tol.max_keypoint_delta:
        found.append(f"keypoint moved {match.max_keypoint_delta:.3g} px > {tol.max_keypoint_delta:g} px")
    return ", ".join(found)


def _counts(image: ImageAgreement, ref: str, cand: str) -> str:
    """ " (Torch 13 boxes, ORT 25)" where the two sides found different numbers of boxes."""
    match = image.match
    if match is None or match.num_ref == match.num_cand:
        return ""
    return f" ({ref} {match.num_ref} boxes, {cand} {match.num_cand})"


def gate_failures(detections: DetectionsReport | None, display: Callable[[str], str]) -> list[str]:
    """One line per failing image of a gated pair: "Torch vs ORT on image 2: matched 40% < 95%"."""
    if detections is None:
        return []
    return [
        f"{display(pair.ref_backend)} vs {display(pair.cand_backend)} on image {image.image}: "
        + brief_failures(image)
        + _counts(image, display(pair.ref_backend), display(pair.cand_backend))
        for pair in detections.pairs
        if pair.gated
        for image in pair.images
        if not image.passed
    ]
