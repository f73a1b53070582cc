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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError, UsageError
from models.detection import Detections, compare_detections, postprocess_anchor_free, postprocess_yolov5
from models.recipe import DetectionSpec

DETECTION_IMAGES = "detection_images.npz"
INPUTS_FILE = "inputs.json"  # written by the run stage beside the saved outputs
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


def _ordered_unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def compare_run_detections(
    recipe_json: Mapping[str, Any], run_details: Mapping[str, Any], paths: Mapping[str, Path]
) -> dict[str, Any] | None:
    """Detections of every runner and their agreement per pair and image; None without a detection spec.

    `paths` maps artifact keys to saved RunResults files, as for `compare_run_outputs`; the images
    the report draws on are written beside them from the run's `inputs.json`.
    """
    from harness.comparing import comparison_groups, iterate_saved_outputs
    from harness.pipeline import SAMPLES, artifact_key

    if not recipe_json.get("detection"):
        return None
    spec = DetectionSpec.from_json(recipe_json["detection"])
    if spec.output not in recipe_json["output_names"]:
        raise UsageError(
            f"the detection spec of recipe '{recipe_json['name']}' reads output '{spec.output}', which the "
            f"recipe does not have; set DetectionSpec(output=...) to one of {list(recipe_json['output_names'])}"
        )
    pairs = [
        (ref, cand, group["precision"])
        for group in comparison_groups(run_details)
        if group["sample_set"] == SAMPLES
        for ref, cand in group["pairs"]
    ]
    runners = _ordered_unique(name for ref, cand, _ in pairs for name in (ref, cand))
    try:
        outputs = {runner: paths[artifact_key(runner, SAMPLES)] for runner in runners}
    except KeyError as e:
        raise HarnessError(f"saved outputs {e} are missing from the run; re-run `harness convert`") from e

    detections: dict[str, list[Detections | None]] = {runner: [] for runner in runners}
    for sample in iterate_saved_outputs(outputs):
        found = {
            runner: detect(spec, sample[runner][spec.output]) if spec.output in sample[runner] else None
            for runner in runners
        }
        batch = max((len(per_image) for per_image in found.values() if per_image is not None), default=0)
        for runner, per_image in found.items():
            detections[runner] += [
                per_image[i] if per_image is not None and i < len(per_image) else None for i in range(batch)
            ]

    images = len(detections[runners[0]]) if runners else 0
    pair_results = [
        _compare_pair(spec, ref, cand, precision, detections[ref], detections[cand])
        for ref, cand, precision in pairs
    ]
    run_dir = next(iter(outputs.values())).parent if outputs else None
    images_file = _images_for_report(recipe_json, run_dir)
    return {
        "output": spec.output,
        "spec": spec.to_json(),
        "images": images,
        "images_file": images_file,
        "runners": {
            runner: [None if found is None else found.to_json() for found in per_image]
            for runner, per_image in detections.items()
        },
        "pairs": pair_results,
        "passed": all(p["passed"] for p in pair_results if p["gated"]),
    }


def _compare_pair(
    spec: DetectionSpec,
    ref: str,
    cand: str,
    precision: str,
    ref_images: list[Detections | None],
    cand_images: list[Detections | None],
) -> dict[str, Any]:
    images = []
    for index, (ref_dets, cand_dets) in enumerate(zip(ref_images, cand_images, strict=True)):
        absent = [name for name, dets in ((ref, ref_dets), (cand, cand_dets)) if dets is None]
        if absent:
            reason = f"no '{spec.output}' from {' and '.join(absent)} for this image"
            images.append({"image": index, "passed": False, "failures": [reason], "missing_from": absent})
            continue
        match = compare_detections(ref_dets, cand_dets, spec.tolerance, spec.iou_match)
        images.append({"image": index, **match.to_json()})
    return {
        "ref_backend": ref,
        "cand_backend": cand,
        "precision": precision,
        "gated": precision in spec.gated_precisions,
        "passed": all(image["passed"] for image in images),
        "failing_images": [image["image"] for image in images if not image["passed"]],
        "images": images,
    }


def _images_for_report(recipe_json: Mapping[str, Any], run_dir: Path | None) -> str | None:
    """Write the letterboxed inputs the report draws on; their file name, or None without inputs.json."""
    if run_dir is None or not (run_dir / INPUTS_FILE).is_file():
        return None
    write_detection_images(
        run_dir / INPUTS_FILE, recipe_json["inputs"][0]["name"], run_dir / DETECTION_IMAGES
    )
    return DETECTION_IMAGES


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


def write_detection_images(inputs_path: Path, input_name: str, target: Path) -> int:
    """Save the images of a run's `inputs.json` (Polygraphy JSON of the feeds) as a compressed .npz
    with one uint8 (H, W, 3) array per image, named `image_<index>`; returns the number of images."""
    from polygraphy.json import load_json

    from harness.artifacts import atomic_path

    feeds = load_json(str(inputs_path))
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


def failure_text(image: Mapping[str, Any]) -> str:
    """The criteria one image failed, briefly: "matched 40% < 95%, mean IoU 0.712 < 0.95"."""
    if image.get("missing_from"):
        return image["failures"][0]
    tol = image["tolerance"]
    found = []
    if not image["matched_fraction"] >= tol["min_matched_fraction"]:
        found.append(
            f"matched {_percent(image['matched_fraction'])} < {_percent(tol['min_matched_fraction'])}"
        )
    if image["mean_iou"] is not None and not image["mean_iou"] >= tol["min_mean_iou"]:
        found.append(f"mean IoU {image['mean_iou']:.3f} < {tol['min_mean_iou']:g}")
    if image["max_score_delta"] is not None and not image["max_score_delta"] <= tol["max_score_delta"]:
        found.append(f"max |score delta| {image['max_score_delta']:.3g} > {tol['max_score_delta']:g}")
    return ", ".join(found)


def gate_failures(detections: Mapping[str, Any] | None, display: Callable[[str], str]) -> list[str]:
    """One line per failing image of a gated pair: "Torch vs ORT on image 2: matched 40% < 95%"."""
    if not detections:
        return []
    return [
        f"{display(pair['ref_backend'])} vs {display(pair['cand_backend'])} on image {image['image']}: "
        + failure_text(image)
        for pair in detections["pairs"]
        if pair["gated"]
        for image in pair["images"]
        if not image["passed"]
    ]
