"""Typed results of the detection-level comparison: boxes per runner and image, agreement per pair."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from trt_harness.models.detection import DetectionMatch, Detections
from trt_harness.models.recipe import DetectionSpec


@dataclass(frozen=True)
class ImageAgreement:
    """How one pair's detections agree on one image; `match` is None when a side has no output there."""

    image: int
    match: DetectionMatch | None
    missing_from: tuple[str, ...] = ()
    output: str = ""  # the detection output the runners gave (or did not give) for this image

    @property
    def passed(self) -> bool:
        return self.match is not None and bool(self.match)

    @property
    def failures(self) -> tuple[str, ...]:
        if self.match is None:
            what = f"'{self.output}'" if self.output else "output"
            return (f"no {what} from {' and '.join(self.missing_from)} for this image",)
        return self.match.failures


@dataclass(frozen=True)
class DetectionPair:
    """One runner pair's agreement, image by image; only pairs at a gated precision decide the verdict."""

    ref_backend: str
    cand_backend: str
    precision: str
    gated: bool
    images: tuple[ImageAgreement, ...]

    @property
    def passed(self) -> bool:
        return all(image.passed for image in self.images)

    @property
    def failing_images(self) -> tuple[int, ...]:
        return tuple(image.image for image in self.images if not image.passed)


@dataclass(frozen=True)
class DetectionsReport:
    """Detections of every runner on every image (None where it gave no output), and their agreement.

    Image i is the i-th image over all samples, batches flattened. `images_file` names the archive of
    input images the report draws on, in the run folder.
    """

    output: str
    spec: DetectionSpec
    images: int
    images_file: str | None
    runners: Mapping[str, tuple[Detections | None, ...]]
    pairs: tuple[DetectionPair, ...]

    @property
    def passed(self) -> bool:
        return all(pair.passed for pair in self.pairs if pair.gated)
