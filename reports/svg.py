"""Inline SVG charts for the HTML report: the error histogram and the error heatmap.

Every piece of text is escaped here (it may come from a model); the returned strings are safe to
insert into the page unescaped. No scripts, fonts or external references: a heatmap's pixels are an
embedded PNG `data:` URI. The <svg> elements carry no xmlns: the HTML parser puts inline SVG in the
SVG namespace itself, and the page then holds no http(s) URL at all.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from markupsafe import Markup
from trt_harness.models.results.comparisons import ErrorMap
from trt_harness.reports.formatting import as_float, compact, count_label, number, sci

# Histogram: bars per decade of abs error (more when few decades are shown), and how many decades
# below the largest error are shown (smaller errors share one "below" bar).
BINS_PER_DECADE = 4
BINS_PER_DECADE_NARROW = 8
NARROW_DECADES = 6
MAX_DECADES = 14
# Heatmap: longest displayed side in px, and how many decades below the largest cell the colours span.
HEATMAP_SIDE = 320
HEATMAP_DECADES = 4

_FONT = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:11px"
_INK = "#57606a"
_GRID = "#d8dee4"
_BELOW_COLOUR = "#4c78a8"
_ABOVE_COLOUR = "#e45756"
_ZERO_COLOUR = "#9aa4ae"
_NO_DATA = (216, 222, 228)
# viridis at 0, 1/8, ..., 1 (matplotlib's values): perceptually even, readable in grey and for colour blindness.
_VIRIDIS = np.array(
    [
        (68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
        (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37),
    ],
    dtype=np.float64,
)  # fmt: skip


def _attrs(attributes: dict[str, Any]) -> str:
    return "".join(
        f' {name.rstrip("_").replace("_", "-")}="{html.escape(str(value), quote=True)}"'
        for name, value in attributes.items()
        if value is not None
    )


def _element(tag: str, text: str | None = None, children: Iterable[str] = (), **attributes: Any) -> str:
    inner = (html.escape(text, quote=False) if text is not None else "") + "".join(children)
    return f"<{tag}{_attrs(attributes)}>{inner}</{tag}>" if inner else f"<{tag}{_attrs(attributes)}/>"


def _title(text: str) -> str:
    """A native tooltip (no script needed)."""
    return _element("title", text)


def _svg(width: float, height: float, label: str, children: Iterable[str], css_class: str) -> Markup:
    body = _element(
        "svg",
        children=[_title(label), *children],
        viewBox=f"0 0 {width:g} {height:g}",
        width=f"{width:g}",
        height=f"{height:g}",
        role="img",
        aria_label=label,
        class_=css_class,
        style=_FONT,
    )
    return Markup(body)


def _decade_label(exponent: int) -> str:
    """Axis label of 10**exponent: 1, 10, 100, 1000, else 1e-4 style, so one axis uses one notation."""
    return f"{10**exponent:d}" if 0 <= exponent <= 3 else f"1e{exponent}"


# --- histogram ----------------------------------------------------------------------------------


def _split_bins(bins: Sequence[Sequence[Any]]) -> tuple[int, list[tuple[float, int]]]:
    """(exact zeros, [(geometric centre, count)] of the other non-empty bins)."""
    zeros = 0
    positive: list[tuple[float, int]] = []
    for lo, hi, n in bins:
        lo_f, hi_f = as_float(lo) or 0.0, as_float(hi) or 0.0
        if lo_f <= 0.0:
            zeros += int(n)
        elif int(n) > 0:
            positive.append((math.sqrt(lo_f * hi_f), int(n)))
    return zeros, positive


def _decade_range(positive: Sequence[tuple[float, int]], atol: float | None) -> tuple[int, int]:
    """(lowest, highest) decade exponent shown: every error down to MAX_DECADES below the largest, and atol."""
    top = math.ceil(math.log10(max(v for v, _ in positive)) + 1e-12)
    bottom = max(math.floor(math.log10(min(v for v, _ in positive))), top - MAX_DECADES)
    if atol is not None and atol > 0:
        atol_exp = math.log10(atol)
        if top - MAX_DECADES <= atol_exp < bottom:
            bottom = math.floor(atol_exp)
        elif top <= atol_exp < bottom + MAX_DECADES:
            top = math.floor(atol_exp) + 1
    return bottom, max(top, bottom + 1)


def histogram_svg(bins: Sequence[Sequence[Any]], *, atol: float | None, label: str) -> Markup:
    """Bars of the abs-error histogram on decades of error, counts on a log scale, atol marked.

    `bins` are `OutputComparison.abs_err_histogram` rows [lower edge, upper edge, count]; a bin
    starting at 0 holds exact zeros and gets its own bar, as do errors too small for the axis.
    """
    zeros, positive = _split_bins(bins)
    atol_f = as_float(atol)
    bottom, top = _decade_range(positive, atol_f) if positive else (0, 1)
    decades = top - bottom
    per_decade = BINS_PER_DECADE_NARROW if decades <= NARROW_DECADES else BINS_PER_DECADE
    bars: dict[int, int] = {}
    below = 0
    for value, n in positive:
        position = math.log10(value)
        if position < bottom:
            below += n
        else:
            index = min(int((position - bottom) * per_decade), decades * per_decade - 1)
            bars[index] = bars.get(index, 0) + n

    width, height = 600.0, 210.0
    left, right, upper, lower = 46.0, 14.0, 22.0, 40.0
    extra = [(text, n) for text, n in (("0", zeros), (f"<{_decade_label(bottom)}", below)) if n]
    extra_w = 30.0 * len(extra) + (14.0 if extra else 0.0)
    plot_x0 = left + extra_w
    plot_w = width - right - plot_x0
    plot_h = height - upper - lower
    baseline = upper + plot_h
    max_count = max([*bars.values(), *(n for _, n in extra)], default=1)
    log_max = math.log10(max_count + 1)

    def bar_height(n: int) -> float:
        return plot_h * math.log10(n + 1) / log_max

    parts: list[str] = [
        _element(
            "text",
            "count (log scale)",
            x=11,
            y=f"{upper + plot_h / 2:.1f}",
            text_anchor="middle",
            fill=_INK,
            transform=f"rotate(-90 11 {upper + plot_h / 2:.1f})",
        )
    ]
    for k in range(0, int(math.floor(math.log10(max_count))) + 1):
        y = baseline - bar_height(10**k)
        parts.append(_element("line", x1=left, x2=width - right, y1=f"{y:.1f}", y2=f"{y:.1f}", stroke=_GRID))
        parts.append(
            _element("text", count_label(10**k), x=left - 4, y=f"{y + 3.5:.1f}", text_anchor="end", fill=_INK)
        )
    for i, (text, n) in enumerate(extra):
        x = left + 8 + 30.0 * i
        h = bar_height(n)
        tip = f"exact zeros: {number(n)}" if text == "0" else f"below {text[1:]}: {number(n)}"
        parts.append(
            _element(
                "rect",
                children=[_title(tip)],
                x=f"{x:.1f}",
                y=f"{baseline - h:.1f}",
                width=18,
                height=f"{max(h, 0.5):.1f}",
                fill=_ZERO_COLOUR,
            )
        )
        parts.append(
            _element("text", text, x=f"{x + 9:.1f}", y=baseline + 15, text_anchor="middle", fill=_INK)
        )

    per_decade_w = plot_w / decades
    bar_w = per_decade_w / per_decade
    for index, n in sorted(bars.items()):
        lo_exp = bottom + index / per_decade
        hi_exp = lo_exp + 1 / per_decade
        above = atol_f is not None and 10 ** ((lo_exp + hi_exp) / 2) > atol_f
        h = bar_height(n)
        parts.append(
            _element(
                "rect",
                children=[_title(f"{compact(10**lo_exp)} – {compact(10**hi_exp)}: {number(n)} elements")],
                x=f"{plot_x0 + index * bar_w + 0.5:.1f}",
                y=f"{baseline - h:.1f}",
                width=f"{max(bar_w - 1.0, 0.5):.1f}",
                height=f"{max(h, 0.5):.1f}",
                fill=_ABOVE_COLOUR if above else _BELOW_COLOUR,
            )
        )
    parts.append(_element("line", x1=left, x2=width - right, y1=baseline, y2=baseline, stroke=_INK))
    label_step = max(1, math.ceil(decades / 12))  # labels never overlap
    for k in range(0, decades + 1):
        x = plot_x0 + k * per_decade_w
        parts.append(
            _element("line", x1=f"{x:.1f}", x2=f"{x:.1f}", y1=baseline, y2=baseline + 4, stroke=_INK)
        )
        if k % label_step == 0:
            parts.append(
                _element(
                    "text",
                    _decade_label(bottom + k),
                    x=f"{x:.1f}",
                    y=baseline + 15,
                    text_anchor="middle",
                    fill=_INK,
                )
            )
    parts.append(
        _element("text", "|cand − ref|", x=width - right, y=height - 6, text_anchor="end", fill=_INK)
    )
    if atol_f is not None and atol_f > 0 and positive:
        position = (math.log10(atol_f) - bottom) / decades
        if 0 <= position <= 1:
            x = plot_x0 + position * plot_w
            parts.append(
                _element(
                    "line",
                    x1=f"{x:.1f}",
                    x2=f"{x:.1f}",
                    y1=upper - 6,
                    y2=baseline,
                    stroke="#1f2328",
                    stroke_width=1.5,
                    stroke_dasharray="4 3",
                )
            )
            anchor = "end" if position > 0.8 else "start"
            parts.append(
                _element(
                    "text",
                    f"atol {compact(atol_f)}",
                    x=f"{x + (-4 if anchor == 'end' else 4):.1f}",
                    y=upper - 8,
                    text_anchor=anchor,
                    fill="#1f2328",
                    font_weight="600",
                )
            )
    if not positive and not zeros:
        parts.append(
            _element(
                "text",
                "no finite elements",
                x=width / 2,
                y=upper + plot_h / 2,
                text_anchor="middle",
                fill=_INK,
            )
        )
    return _svg(width, height, label, parts, "chart histogram")


# --- heatmap ------------------------------------------------------------------------------------


def _colours(fractions: np.ndarray) -> np.ndarray:
    """viridis colour (float RGB) of each fraction in [0, 1]."""
    position = np.clip(fractions, 0.0, 1.0) * (len(_VIRIDIS) - 1)
    lower = np.minimum(np.floor(position).astype(int), len(_VIRIDIS) - 2)
    weight = (position - lower)[..., None]
    return _VIRIDIS[lower] * (1 - weight) + _VIRIDIS[lower + 1] * weight


def _hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{round(c):02x}" for c in rgb)


def _heatmap_png(values: np.ndarray, low: float, high: float, size: tuple[int, int]) -> str:
    from PIL import Image
    from trt_harness.reports.drawing import png_data_uri

    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = (np.log10(np.maximum(values, low)) - math.log10(low)) / (
            math.log10(high) - math.log10(low)
        )
    rgb = _colours(np.nan_to_num(fraction, nan=0.0))
    rgb[np.isnan(values)] = _NO_DATA
    image = Image.fromarray(np.round(rgb).astype(np.uint8), "RGB").resize(size, Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return png_data_uri(buffer.getvalue())


def heatmap_svg(heatmap: ErrorMap, *, atol: float | None, label: str, uid: str) -> Markup:
    """An output's error map (`ErrorMap`) with a log colour bar, atol marked.

    `uid` makes the colour bar's gradient id unique within the page.
    """
    values = np.array(
        [[np.nan if v is None else float(v) for v in row] for row in heatmap.values], dtype=np.float64
    ).reshape(heatmap.shape)
    source_h, source_w = heatmap.source_hw
    finite = values[np.isfinite(values)]
    high = float(finite.max()) if finite.size else 0.0
    positive = finite[finite > 0]
    low = max(high / 10**HEATMAP_DECADES, float(positive.min()) if positive.size else high)
    atol_f = as_float(atol)
    if high <= 0:
        high, low = 1.0, 0.1  # all zero: the whole map in the lowest colour
    else:
        if atol_f is not None and high / 10**MAX_DECADES <= atol_f < low:
            low = atol_f  # keep atol on the colour bar
        if low >= high:
            low = high / 10
    scale = HEATMAP_SIDE / max(source_h, source_w)
    map_w, map_h = max(8, round(source_w * scale)), max(8, round(source_h * scale))
    left, upper, gap, bar_w = 34.0, 8.0, 18.0, 14.0
    width = left + map_w + gap + bar_w + 64.0
    height = upper + map_h + 34.0
    bar_x = left + map_w + gap
    gradient_id = f"viridis-{uid}"
    stops = [
        _element("stop", offset=f"{i / (len(_VIRIDIS) - 1):.3f}", stop_color=_hex(rgb))
        for i, rgb in enumerate(_VIRIDIS)
    ]
    parts = [
        _element(
            "defs",
            children=[_element("linearGradient", children=stops, id=gradient_id, x1=0, y1=1, x2=0, y2=0)],
        ),
        _element(
            "image",
            href=_heatmap_png(values, low, high, (map_w, map_h)),
            x=left,
            y=upper,
            width=map_w,
            height=map_h,
            preserveAspectRatio="none",
        ),
        _element("rect", x=left, y=upper, width=map_w, height=map_h, fill="none", stroke=_INK),
        _element("text", "0", x=left, y=upper + map_h + 13, text_anchor="middle", fill=_INK),
        _element(
            "text", str(source_w), x=left + map_w, y=upper + map_h + 13, text_anchor="middle", fill=_INK
        ),
        _element("text", "0", x=left - 4, y=upper + 9, text_anchor="end", fill=_INK),
        _element("text", str(source_h), x=left - 4, y=upper + map_h, text_anchor="end", fill=_INK),
        _element("text", "width", x=left + map_w / 2, y=upper + map_h + 26, text_anchor="middle", fill=_INK),
        _element(
            "text",
            "height",
            x=left - 8,
            y=upper + map_h / 2,
            text_anchor="middle",
            fill=_INK,
            transform=f"rotate(-90 {left - 8:g} {upper + map_h / 2:g})",
        ),
        _element(
            "rect", x=bar_x, y=upper, width=bar_w, height=map_h, fill=f"url(#{gradient_id})", stroke=_INK
        ),
    ]
    span = math.log10(high) - math.log10(low)

    def bar_y(value: float) -> float:
        return upper + map_h * (1 - (math.log10(value) - math.log10(low)) / span)

    decades = range(math.ceil(math.log10(low)), math.floor(math.log10(high)) + 1)
    ticks = [(high, sci(high)), (low, sci(low)), *((10.0**k, _decade_label(k)) for k in decades)]
    shown: list[float] = []
    for value, text in ticks:  # the extremes first; a decade too close to one is left out
        y = bar_y(value)
        if any(abs(y - other) < 11 for other in shown):
            continue
        shown.append(y)
        parts.append(
            _element(
                "line", x1=bar_x + bar_w, x2=bar_x + bar_w + 3, y1=f"{y:.1f}", y2=f"{y:.1f}", stroke=_INK
            )
        )
        parts.append(_element("text", text, x=bar_x + bar_w + 5, y=f"{y + 3.5:.1f}", fill=_INK))
    if atol_f is not None and low <= atol_f <= high:
        y = bar_y(atol_f)
        parts.append(
            _element(
                "line",
                children=[_title(f"atol {compact(atol_f)}")],
                x1=bar_x - 3,
                x2=bar_x + bar_w + 3,
                y1=f"{y:.1f}",
                y2=f"{y:.1f}",
                stroke="#e45756",
                stroke_width=2,
            )
        )
    return _svg(width, height, label, parts, "chart heatmap")
