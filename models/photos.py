"""Sample inputs: the shipped photographs, letterboxed the way Ultralytics prepares YOLO inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from trt_harness.models.detection import Letterbox

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
LETTERBOX_FILL = 114  # Ultralytics' grey


@dataclass(frozen=True)
class Photo:
    name: str
    rgb: np.ndarray  # (H, W, 3) uint8


def sample_photos() -> list[Photo]:
    """The real photographs shipped with the project (see models/samples/make_samples.py), sorted by name."""
    from PIL import Image

    photos = []
    for path in sorted(SAMPLES_DIR.glob("*.jpg")):
        with Image.open(path) as image:
            photos.append(Photo(path.stem, np.asarray(image.convert("RGB"))))
    return photos


@dataclass(frozen=True)
class LetterboxedImage:
    chw: np.ndarray  # (3, size, size) float32 in [0, 1]
    letterbox: Letterbox  # how to map boxes back to the original photo


def letterbox(rgb: np.ndarray, size: int) -> LetterboxedImage:
    """Resize keeping the aspect ratio, then pad to `size`x`size` with grey, centred (Ultralytics `letterbox`
    with auto=False, scaleup=True); the same rounding rules, so boxes map back identically."""
    from PIL import Image

    h, w = rgb.shape[:2]
    scale = min(size / h, size / w)
    new_w, new_h = round(w * scale), round(h * scale)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, left = round(dh - 0.1), round(dw - 0.1)
    canvas = np.full((size, size, 3), LETTERBOX_FILL, dtype=np.uint8)
    resized = (
        rgb
        if (new_w, new_h) == (w, h)
        else np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BILINEAR))
    )
    canvas[top : top + new_h, left : left + new_w] = resized
    chw = np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
    geometry = Letterbox(scale=scale, pad=(float(left), float(top)), original_hw=(h, w), new_hw=(size, size))
    return LetterboxedImage(chw=chw, letterbox=geometry)


def letterboxed_batches(size: int, batch: int = 1) -> list[np.ndarray]:
    """The sample photos as (batch, 3, size, size) float32 arrays; photos are cycled to fill the last batch."""
    images = [letterbox(photo.rgb, size).chw for photo in sample_photos()]
    count = max(len(images), batch)
    n_batches = -(-count // batch)
    ordered = [images[i % len(images)] for i in range(n_batches * batch)]
    return [np.stack(ordered[i : i + batch]) for i in range(0, len(ordered), batch)]


def center_cropped_batches(
    size: int, mean: tuple[float, float, float], std: tuple[float, float, float], batch: int = 1
) -> list[np.ndarray]:
    """The sample photos the way torchvision classifiers are fed: shorter side to size*8/7, centre crop
    `size`, scaled to [0, 1] and normalized per channel; as (batch, 3, size, size) float32 arrays."""
    from PIL import Image

    resize_to = round(size * 8 / 7)  # 256 for 224, torchvision's evaluation transform
    crops = []
    for photo in sample_photos():
        image = Image.fromarray(photo.rgb)
        scale = resize_to / min(image.size)
        image = image.resize(
            (round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR
        )
        left, top = (image.width - size) // 2, (image.height - size) // 2
        rgb = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / np.float32(
            255.0
        )
        normalized = (rgb - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
        crops.append(np.ascontiguousarray(normalized.transpose(2, 0, 1)))
    count = -(-len(crops) // batch) * batch
    ordered = [crops[i % len(crops)] for i in range(count)]
    return [np.stack(ordered[i : i + batch]) for i in range(0, count, batch)]
