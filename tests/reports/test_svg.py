from __future__ import annotations

import base64
import io
import re

import numpy as np
from PIL import Image
from trt_harness.harness.comparison import OutputAccumulator
from trt_harness.harness.heatmap import ErrorHeatmap
from trt_harness.models.recipe import Tolerance
from trt_harness.reports.svg import heatmap_svg, histogram_svg

from tests.reports.page import Element, parse

ABOVE_ATOL = "#e45756"


def histogram_for(errors: np.ndarray, atol: float) -> list[list[float]]:
    accumulator = OutputAccumulator("y", "torch", "onnxrt", Tolerance(atol=atol, rtol=0.0))
    accumulator.update(np.zeros_like(errors), errors)
    return [list(b) for b in accumulator.result().abs_err_histogram]


def bars(svg: Element) -> list[tuple[str, int, str]]:
    """(tooltip, count, fill) of every bar."""
    found = []
    for rect in svg.find_all("rect"):
        titles = rect.find_all("title")
        if titles:
            count = int(re.search(r": ([\d,]+)", titles[0].text)[1].replace(",", ""))
            found.append((titles[0].text, count, rect.attrs["fill"]))
    return found


def test_histogram_bars_hold_every_element_and_mark_those_above_atol() -> None:
    rng = np.random.default_rng(0)
    errors = np.concatenate([np.zeros(50), 10.0 ** rng.uniform(-9, -1, size=5000), [1e-30]])
    svg = parse(histogram_svg(histogram_for(errors, 1e-4), atol=1e-4, label="h")).find_all("svg")[0]
    found = bars(svg)
    assert sum(n for _, n, _ in found) == errors.size
    assert any(tip.startswith("exact zeros: 50") for tip, _, _ in found)
    assert any(tip.startswith("below ") and n == 1 for tip, n, _ in found)  # 1e-30 lies off the axis
    above = sum(n for _, n, fill in found if fill == ABOVE_ATOL)
    assert abs(above - int((errors > 1e-4).sum())) <= 0.1 * above  # bars straddling atol go by their centre
    assert "atol 1e-4" in svg.text
    assert svg.attrs["role"] == "img"


def test_histogram_of_identical_outputs_is_one_zero_bar() -> None:
    svg = parse(histogram_svg([[0.0, 1e-309, 7]], atol=1e-5, label="h")).find_all("svg")[0]
    assert [(n, tip) for tip, n, _ in bars(svg)] == [(7, "exact zeros: 7")]


def test_chart_text_is_escaped() -> None:
    hostile = "<script>alert(1)</script>"
    markup = str(histogram_svg([[1e-3, 1.1e-3, 2]], atol=1e-4, label=hostile))
    assert "<script>" not in markup and "&lt;script&gt;" in markup
    heatmap = ErrorHeatmap((0, 1))
    heatmap.update(np.zeros((4, 4)), np.ones((4, 4)))
    markup = str(
        heatmap_svg(heatmap.record("y", "torch", "onnxrt"), atol=1e-4, label=hostile, uid='x" onload="y')
    )
    assert "<script>" not in markup and 'onload="y"' not in markup


def test_heatmap_image_keeps_the_source_aspect_and_puts_the_hot_spot_in_place() -> None:
    ref = np.zeros((1, 40, 80))
    cand = ref.copy()
    cand[0, 0:10, 60:80] = 1e-2  # top right
    cand[0, 10:, :] = 1e-6
    heatmap = ErrorHeatmap((1, 2), max_side=16)
    heatmap.update(ref, cand)
    svg = parse(heatmap_svg(heatmap.record("y", "torch", "onnxrt"), atol=1e-4, label="m", uid="u")).find_all(
        "svg"
    )[0]
    (image,) = svg.find_all("image")
    png = base64.b64decode(image.attrs["href"].removeprefix("data:image/png;base64,"))
    picture = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    height, width = picture.shape[:2]
    assert (width, height) == (int(image.attrs["width"]), int(image.attrs["height"]))
    assert abs(width / height - 2.0) < 0.05
    hot, cold = picture[2, width - 3], picture[height - 3, 2]
    assert hot.sum() > cold.sum() + 200  # viridis: bright yellow hot spot, dark blue elsewhere
    assert svg.find_all("lineargradient")[0].attrs["id"] == "viridis-u"
