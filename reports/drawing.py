"""Detections drawn onto an image, as a small PNG or JPEG the HTML report can inline.

Uses only numpy and Pillow, with Pillow's bundled default font (never a font file from disk or
the network), so a report renders on any machine.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from trt_harness.models.core.errors import UsageError
from trt_harness.models.detection import Detections

# Neither side of a drawn image exceeds this, to keep the HTML report small.
MAX_SIDE = 480
# Drawn sample photos come out ~4x smaller as JPEG than as PNG; at this quality labels stay legible.
JPEG_QUALITY = 80
_SAVE_OPTIONS = {"PNG": {"optimize": True}, "JPEG": {"quality": JPEG_QUALITY, "optimize": True}}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
# One colour per class (cycled), distinct on photos and from each other.
_PALETTE = (
    (255, 56, 56), (255, 157, 151), (255, 112, 31), (255, 178, 29), (207, 210, 49),
    (72, 249, 10), (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187),
    (44, 153, 168), (0, 194, 255), (52, 69, 147), (100, 115, 255), (0, 24, 236),
    (132, 56, 255), (82, 0, 133), (203, 56, 255), (255, 149, 200), (255, 55, 199),
)  # fmt: skip
_LINE_WIDTH = 2
_TEXT_PAD = 2
# Box states of a comparison (draw_detections' `states`): how a box without a match stands out.
BoxState = Literal["matched", "unmatched", "cutoff"]
_UNMATCHED_COLOUR = (255, 0, 255)  # magenta: in no class's colour, visible on photos
_CUTOFF_COLOUR = (160, 160, 160)
_STATE_SUFFIX = {"matched": "", "unmatched": " NO MATCH", "cutoff": " at cutoff"}


def class_colour(class_id: int) -> tuple[int, int, int]:
    return _PALETTE[class_id % len(_PALETTE)]


def _text_colour_on(background: tuple[int, int, int]) -> tuple[int, int, int]:
    red, green, blue = background
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else (255, 255, 255)


def _label(class_id: int, score: float, class_names: Sequence[str] | None) -> str:
    name = class_names[class_id] if class_names is not None and 0 <= class_id < len(class_names) else None
    return f"{name or f'class {class_id}'} {score:.2f}"


def _draw_box(
    draw: ImageDraw.ImageDraw,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    box: np.ndarray,
    label: str,
    colour: tuple[int, int, int],
    width: int = _LINE_WIDTH,
) -> None:
    x1, y1, x2, y2 = (float(v) for v in box)
    draw.rectangle((x1, y1, max(x1, x2), max(y1, y2)), outline=colour, width=width)
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    text_w, text_h = right - left + 2 * _TEXT_PAD, bottom - top + 2 * _TEXT_PAD
    # Above the box where there is room, else just inside its top edge.
    label_y = y1 - text_h if y1 >= text_h else y1
    draw.rectangle((x1, label_y, x1 + text_w, label_y + text_h), fill=colour)
    draw.text(
        (x1 + _TEXT_PAD - left, label_y + _TEXT_PAD - top), label, fill=_text_colour_on(colour), font=font
    )


def draw_detections(
    image: np.ndarray,
    dets: Detections,
    class_names: Sequence[str] | None = None,
    title: str = "",
    *,
    max_side: int = MAX_SIDE,
    image_format: Literal["PNG", "JPEG"] = "PNG",
    states: Sequence[BoxState] | None = None,
) -> bytes:
    """PNG (or JPEG) of `image` (H, W, 3) uint8 RGB with `dets` drawn on it and `title` in a band above.

    Boxes are in `image`'s pixel coordinates (map letterboxed detections back first with
    `Detections.to_original`). The image is downscaled so neither of its sides exceeds
    `max_side` (the title band adds one line of text on top); boxes are drawn after scaling so
    lines and labels stay legible. Boxes with non-finite coordinates are left out: they cannot be
    drawn, and the comparison reports them. `states` (one per box) marks how each box fared in a
    comparison: "unmatched" boxes are drawn thick in magenta labelled NO MATCH, boxes "at the cutoff"
    thin in grey; "matched" ones (the default) in their class colour.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise UsageError(
            f"draw_detections needs an (H, W, 3) uint8 RGB image, got {image.dtype} of shape {image.shape}; "
            "convert with np.clip(x, 0, 255).astype(np.uint8) and drop any alpha channel"
        )
    height, width = image.shape[:2]
    scale = min(1.0, max_side / width, max_side / height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    picture = Image.fromarray(image)
    if scale < 1.0:
        picture = picture.resize(size, Image.Resampling.LANCZOS)

    font = ImageFont.load_default()
    draw = ImageDraw.Draw(picture)
    boxes = dets.boxes.astype(np.float64) * scale
    drawable = np.isfinite(boxes).all(axis=1)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, size[0] - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, size[1] - 1)
    # Lowest score first, so the most confident boxes and labels end up on top.
    for index in np.argsort(dets.scores, kind="stable"):
        if drawable[index]:
            class_id = int(dets.classes[index])
            label = _label(class_id, float(dets.scores[index]), class_names)
            state = states[index] if states is not None else "matched"
            colour = {"unmatched": _UNMATCHED_COLOUR, "cutoff": _CUTOFF_COLOUR}.get(
                state, class_colour(class_id)
            )
            width = {"unmatched": 2 * _LINE_WIDTH, "cutoff": 1}.get(state, _LINE_WIDTH)
            _draw_box(draw, font, boxes[index], label + _STATE_SUFFIX[state], colour, width)

    if title:
        left, top, right, bottom = draw.textbbox((0, 0), title, font=font)
        band = bottom - top + 2 * _TEXT_PAD
        canvas = Image.new("RGB", (size[0], size[1] + band), (255, 255, 255))
        ImageDraw.Draw(canvas).text((_TEXT_PAD - left, _TEXT_PAD - top), title, fill=(0, 0, 0), font=font)
        canvas.paste(picture, (0, band))
        picture = canvas

    buffer = io.BytesIO()
    picture.save(buffer, format=image_format, **_SAVE_OPTIONS[image_format])
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    """`png` as a `data:` URI for an <img src=...> in a self-contained HTML file."""
    if not png.startswith(_PNG_SIGNATURE):
        raise UsageError(
            "png_data_uri was given bytes that are not a PNG (no PNG signature); pass draw_detections' output"
        )
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def jpeg_data_uri(jpeg: bytes) -> str:
    """`jpeg` as a `data:` URI for an <img src=...> in a self-contained HTML file."""
    if not jpeg.startswith(_JPEG_SIGNATURE):
        raise UsageError(
            "jpeg_data_uri was given bytes that are not a JPEG (no JPEG signature); "
            "pass draw_detections(..., image_format='JPEG') output"
        )
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
