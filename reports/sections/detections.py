"""Detections: agreement per runner pair and image, and each drawn image once per runner, side by side."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from trt_harness.models.detection import DetectionMatch, Detections
from trt_harness.models.results.detections import DetectionPair, DetectionsReport, ImageAgreement
from trt_harness.models.results.stages import CompareDetails
from trt_harness.reports import formatting as fmt
from trt_harness.reports.drawing import BoxState, draw_detections, jpeg_data_uri
from trt_harness.reports.sections.common import RunView

# The report draws at most this many images (failing ones first), each once per runner, to stay small.
MAX_DRAWN_IMAGES = 8
DRAWN_IMAGE_SIDE = 400
# Boxes listed by name per side in the agreement table; the counts say how many there are in all.
LISTED_BOXES = 4


def class_label(class_id: int, class_names: Sequence[str]) -> str:
    return class_names[class_id] if 0 <= class_id < len(class_names) else f"class {class_id}"


def _box_labels(dets: Detections, class_names: Sequence[str]) -> tuple[str, ...]:
    labels = [
        f"{class_label(int(c), class_names)} {float(s):.2f}"
        for c, s in zip(dets.classes.tolist(), dets.scores.tolist(), strict=True)
    ]
    if len(labels) > LISTED_BOXES:
        labels = [*labels[:LISTED_BOXES], f"+{len(labels) - LISTED_BOXES} more"]
    return tuple(labels)


@dataclass(frozen=True)
class DetectionRow:
    """The agreement of one runner pair on one image."""

    ref: str
    cand: str
    label: str
    precision: str
    image: int
    gated: bool
    passed: bool
    num_ref: int | None
    num_cand: int | None
    matched: str
    mean_iou: str
    max_score_delta: str
    max_box_delta: str  # pixels
    at_cutoff: str  # "ref / cand" boxes left out at a cutoff
    bad: frozenset[str]  # the criteria that failed: "matched", "iou", "score", "box", "mask", "keypoint"
    only_ref_count: int | None
    only_cand_count: int | None
    # "class score" of the boxes without a match on each side, the first few
    only_ref: tuple[str, ...]
    only_cand: tuple[str, ...]
    failures: tuple[str, ...]

    @property
    def state(self) -> str:
        """The badge: pass or fail for a gated pair; an informational pair that disagrees is "info"."""
        if self.passed:
            return "pass"
        return "fail" if self.gated else "info"


@dataclass(frozen=True)
class DetectionPairRows:
    """The rows of one runner pair, one per image."""

    label: str
    precision: str
    gated: bool
    rows: tuple[DetectionRow, ...]

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)


@dataclass(frozen=True)
class DetectionPanel:
    title: str
    src: str  # data: URI of the drawn JPEG
    caption: str


@dataclass(frozen=True)
class DetectionImage:
    index: int
    state: str  # "fail" when a gated pair disagrees on it
    panels: tuple[DetectionPanel, ...]


class DetectionsSection:
    def __init__(self, run: RunView, detections: DetectionsReport) -> None:
        self.run = run
        self.detections = detections
        self.spec = detections.spec

    @classmethod
    def of(cls, run: RunView) -> DetectionsSection | None:
        compare = run.details(CompareDetails)
        return cls(run, compare.detections) if compare is not None and compare.detections else None

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    @property
    def passed(self) -> bool:
        return self.detections.passed

    @property
    def gated_precisions(self) -> str:
        return ", ".join(p.upper() for p in self.spec.gated_precisions) or "none"

    @property
    def informational_precisions(self) -> str:
        gated = set(self.spec.gated_precisions)
        shown = dict.fromkeys(p.precision.upper() for p in self.detections.pairs if p.precision not in gated)
        return ", ".join(shown)

    @property
    def postprocessing(self) -> str:
        spec = self.spec
        if spec.layout == "postprocessed":
            parts = ", ".join(
                f"{field_name} '{name}'" for field_name, name in spec.postprocessed_outputs.items()
            )
            return (
                f"post-processed by the model ({parts}), score > {fmt.compact(spec.conf_thres)}, at most "
                f"{spec.max_det} boxes per image"
            )
        text = (
            f"{spec.layout} layout, score > {fmt.compact(spec.conf_thres)}, class-aware NMS at IoU "
            f"{fmt.compact(spec.iou_thres)}, at most {spec.max_det} boxes per image"
        )
        if spec.min_wh:
            text += f", boxes under {fmt.compact(spec.min_wh)} px wide or high dropped"
        return text

    @property
    def criterion(self) -> str:
        tol = self.spec.tolerance
        box = f", max |coordinate delta| ≤ {fmt.compact(tol.max_box_delta)} px" if tol.max_box_delta else ""
        return (
            f"same class and IoU ≥ {fmt.compact(self.spec.iou_match)}, one to one, in any order; an image "
            f"agrees with matched ≥ {fmt.percent(tol.min_matched_fraction)}, mean IoU ≥ "
            f"{fmt.compact(tol.min_mean_iou)}, max |score delta| ≤ {fmt.compact(tol.max_score_delta)}{box} "
            f"(mask IoU ≥ {fmt.compact(tol.min_mean_mask_iou)} and keypoints within "
            f"{fmt.compact(tol.max_keypoint_delta)} px where there are any). A box without a match scoring "
            f"within {fmt.compact(tol.max_score_delta)} of the other side's cutoff (score threshold, or its "
            f"weakest box when it holds {self.spec.max_det}) is left out of the matched fraction: boxes "
            "tied at a cutoff are interchangeable"
        )

    @functools.cached_property
    def pairs(self) -> list[DetectionPairRows]:
        pairs = []
        for pair in self.detections.pairs:
            label = self.run.pair_label(pair.ref_backend, pair.cand_backend)
            rows = tuple(self._row(pair, label, image) for image in pair.images)
            pairs.append(DetectionPairRows(label, pair.precision, pair.gated, rows))
        return pairs

    @property
    def rows(self) -> list[DetectionRow]:
        return [row for pair in self.pairs for row in pair.rows]

    def _row(self, pair: DetectionPair, label: str, image: ImageAgreement) -> DetectionRow:
        common: dict[str, Any] = {
            "ref": pair.ref_backend,
            "cand": pair.cand_backend,
            "label": label,
            "precision": pair.precision,
            "image": image.image,
            "gated": pair.gated,
            "passed": image.passed,
            "failures": image.failures,
        }
        match = image.match
        if match is None:
            return DetectionRow(
                **common, num_ref=None, num_cand=None, matched=fmt.MISSING, mean_iou=fmt.MISSING,
                max_score_delta=fmt.MISSING, max_box_delta=fmt.MISSING, at_cutoff=fmt.MISSING,
                bad=frozenset({"matched"}), only_ref_count=None,
                only_cand_count=None, only_ref=(), only_cand=(),
            )  # fmt: skip
        tol = match.tolerance
        bad = {
            name
            for name, failed in (
                ("matched", not match.matched_fraction >= tol.min_matched_fraction),
                ("iou", match.mean_iou is not None and not match.mean_iou >= tol.min_mean_iou),
                (
                    "score",
                    match.max_score_delta is not None and not match.max_score_delta <= tol.max_score_delta,
                ),
                (
                    "box",
                    tol.max_box_delta is not None
                    and match.max_box_delta is not None
                    and not match.max_box_delta <= tol.max_box_delta,
                ),
                (
                    "mask",
                    match.mean_mask_iou is not None and not match.mean_mask_iou >= tol.min_mean_mask_iou,
                ),
                (
                    "keypoint",
                    match.max_keypoint_delta is not None
                    and not match.max_keypoint_delta <= tol.max_keypoint_delta,
                ),
            )
            if failed
        }
        return DetectionRow(
            **common,
            num_ref=match.num_ref,
            num_cand=match.num_cand,
            matched=f"{fmt.percent(match.matched_fraction)} ({len(match.pairs)})",
            mean_iou=fmt.MISSING if match.mean_iou is None else f"{match.mean_iou:.4f}",
            max_score_delta=fmt.sci(match.max_score_delta, 2),
            max_box_delta=fmt.sci(match.max_box_delta, 2),
            at_cutoff=f"{len(match.at_cutoff_ref)} / {len(match.at_cutoff_cand)}",
            bad=frozenset(bad),
            only_ref_count=len(match.only_ref),
            only_cand_count=len(match.only_cand),
            only_ref=_box_labels(match.only_ref, self.class_names),
            only_cand=_box_labels(match.only_cand, self.class_names),
        )

    @property
    def failing_rows(self) -> list[DetectionRow]:
        return [row for row in self.rows if row.state == "fail"]

    @property
    def found_boxes(self) -> bool:
        """Whether any runner found any box; if none did, agreement says nothing about the boxes."""
        return any(
            dets is not None and len(dets) > 0
            for per_image in self.detections.runners.values()
            for dets in per_image
        )

    @property
    def image_count(self) -> int:
        return self.detections.images

    @functools.cached_property
    def drawn_indices(self) -> list[int]:
        """The images drawn: those a gated pair disagrees on first, then the rest, in order, up to the cap."""
        failing = {row.image for row in self.failing_rows}
        ordered = sorted(range(self.image_count), key=lambda i: (i not in failing, i))
        return sorted(ordered[:MAX_DRAWN_IMAGES])

    @property
    def images_note(self) -> str | None:
        """Why no image is drawn, or None when they are."""
        name = self.detections.images_file
        if not name:
            return "the run saved no input images"
        if self.run.run_dir is None:
            return "the report was rendered without its run directory"
        if not (self.run.run_dir / name).is_file():
            return f"{name} is missing from the run directory; re-run `harness compare`"
        return None

    @functools.cached_property
    def images(self) -> list[DetectionImage]:
        """Each drawn image once per runner, side by side: boxes, class and score, as inline JPEGs."""
        if self.images_note is not None or self.run.run_dir is None or not self.detections.images_file:
            return []
        failing = {row.image for row in self.failing_rows}
        drawn = []
        with np.load(self.run.run_dir / self.detections.images_file) as archive:
            for index in self.drawn_indices:
                if f"image_{index}" in archive.files:
                    picture = archive[f"image_{index}"]
                    panels = tuple(self._panel(runner, picture, index) for runner in self.detections.runners)
                    drawn.append(DetectionImage(index, "fail" if index in failing else "pass", panels))
        return drawn

    def _versus(self, runner: str, index: int) -> tuple[str, DetectionMatch | None, bool]:
        """The runner `runner`'s boxes on image `index` are marked against: the reference for a candidate,
        the first candidate for the reference; (that runner, the match, whether `runner` is its ref side)."""
        reference = next(iter(self.detections.runners))
        for pair in self.detections.pairs:
            if index >= len(pair.images):
                continue
            if runner != reference and (pair.ref_backend, pair.cand_backend) == (reference, runner):
                return reference, pair.images[index].match, False
            if runner == reference and pair.ref_backend == reference:
                return pair.cand_backend, pair.images[index].match, True
        return reference, None, False

    def _panel(self, runner: str, picture: Any, index: int) -> DetectionPanel:
        """`runner`'s detections drawn on image `index`, each box marked matched, without a match or at
        the cutoff against another runner, captioned with their agreement."""
        title = self.run.display(runner)
        per_image = self.detections.runners[runner]
        dets = per_image[index] if index < len(per_image) else None
        if dets is None:
            return DetectionPanel(title, "", f"no {self.spec.output} for this image")
        other, versus, as_ref = self._versus(runner, index)
        states: list[BoxState] | None = None
        if versus is not None:
            matched = {r if as_ref else c for r, c in versus.pairs}
            cutoff = set(versus.at_cutoff_ref if as_ref else versus.at_cutoff_cand)
            states = [
                "matched" if k in matched else "cutoff" if k in cutoff else "unmatched"
                for k in range(len(dets))
            ]
        jpeg = draw_detections(
            picture,
            dets,
            self.class_names,
            title,
            max_side=DRAWN_IMAGE_SIDE,
            image_format="JPEG",
            states=states,
        )
        caption = f"{len(dets)} box{'es' if len(dets) != 1 else ''}"
        if versus is not None and versus.num_ref == 0 and versus.num_cand == 0:
            caption += f", as {self.run.display(other)}"
        elif versus is not None and states is not None:
            unmatched, at_cutoff = states.count("unmatched"), states.count("cutoff")
            caption += (
                f"; {len(versus.pairs)} matched with {self.run.display(other)} "
                f"({fmt.percent(versus.matched_fraction)}), {unmatched} without a match"
            )
            if at_cutoff:
                caption += f", {at_cutoff} at the cutoff"
        return DetectionPanel(title, jpeg_data_uri(jpeg), caption)
