from __future__ import annotations

import base64
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trt_harness.reports.drawing as drawing
from PIL import Image
from trt_harness.models.core.errors import UsageError
from trt_harness.models.detection import Detections
from trt_harness.reports.drawing import MAX_SIDE, class_colour, draw_detections, png_data_uri


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise: compresses like a photo, not like a flat test card."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) * 127 / (width + height)], axis=-1)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def test_draws_a_valid_bounded_png_of_a_large_image() -> None:
    height, width = 720, 1280
    dets = Detections([[100, 100, 400, 300], [700, 200, 1200, 700]], [0.9, 0.4], [0, 1])
    png = draw_detections(photo(height, width), dets, ["person", "car"], title="TensorRT fp16")
    image = decode(png)
    assert image.format == "PNG" and image.mode == "RGB"
    assert image.width <= MAX_SIDE
    scale = image.width / width
    # The photo keeps its aspect ratio; the rest of the height is the title band.
    title_band = image.height - round(height * scale)
    assert 0 < title_band < 40
    assert len(png) < image.width * image.height * 3


def test_small_images_are_not_upscaled_and_untitled_images_get_no_band() -> None:
    png = draw_detections(photo(60, 100), Detections.empty(), None, title="")
    assert decode(png).size == (100, 60)


def test_tall_images_are_bounded_in_height_too() -> None:
    image = decode(draw_detections(photo(1600, 200), Detections.empty()))
    assert image.height <= MAX_SIDE and image.width == round(200 * MAX_SIDE / 1600)


def test_boxes_are_drawn_in_their_class_colour() -> None:
    picture = np.full((200, 300, 3), 128, dtype=np.uint8)
    dets = Detections([[20, 60, 120, 180], [160, 60, 280, 180]], [0.8, 0.7], [0, 5])
    drawn = np.asarray(decode(draw_detections(picture, dets, ["a", "b", "c", "d", "e", "f"])))
    untouched = np.asarray(decode(draw_detections(picture, Detections.empty())))
    assert (untouched == 128).all()
    # Midpoints of the left edges of both boxes carry their class colours, which differ.
    left_edge_0, left_edge_5 = tuple(drawn[120, 20]), tuple(drawn[120, 160])
    assert left_edge_0 == class_colour(0) and left_edge_5 == class_colour(5)
    assert class_colour(0) != class_colour(5)
    # Inside a box (away from its label) the image is unchanged.
    assert (drawn[150, 60] == 128).all()


def test_non_finite_and_out_of_image_boxes_do_not_break_drawing() -> None:
    dets = Detections(
        [[np.nan, 0, 10, 10], [-50, -50, 500, 500], [10, 10, 5, 5]], [0.5, 0.6, 0.7], [0, 1, 99]
    )
    image = decode(draw_detections(photo(100, 100), dets, ["only one name"], title="odd boxes"))
    assert image.width == 100


def test_rejects_images_that_are_not_uint8_rgb() -> None:
    with pytest.raises(UsageError, match="uint8"):
        draw_detections(np.zeros((10, 10, 3), dtype=np.float32), Detections.empty())
    with pytest.raises(UsageError, match=r"\(H, W, 3\)"):
        draw_detections(np.zeros((10, 10, 4), dtype=np.uint8), Detections.empty())


def test_png_data_uri_round_trips() -> None:
    png = draw_detections(photo(40, 40), Detections.empty())
    uri = png_data_uri(png)
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    assert base64.b64decode(uri[len(prefix) :]) == png
    with pytest.raises(UsageError, match="not a PNG"):
        png_data_uri(b"GIF89a")


def test_module_imports_without_torch() -> None:
    code = "import sys, reports.drawing; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(drawing.__file__).resolve().parents[1])
