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
from trt_harness.reports.formatting import as_float, compact, count_label, number, sci

# Histogram: bars per decade of abs error (more when few decades are shown), and how many decades
# below the largest error are shown (smaller errors share one "below" bar).
BINS_PER_DECADE = 4
BINS_PER_DECADE_NARROW = 8
NARROW_DECADES = 6
MAX_DECADES = 14
# Heatmap: the largest map in px (width, height), the shortest side and smallest cell it is
# stretched to (a 18 x 384 sequence state must not become a strip 15 px high), and how many decades
# below the largest cell the colours span.
HEATMAP_MAX_W = 420.0
HEATMAP_MAX_H = 280.0
HEATMAP_MIN_SIDE = 96.0
HEATMAP_MIN_CELL = 3.0
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


# Advance widths in 1/1000 em of DejaVu Sans, the widest of the fonts `system-ui`/sans-serif resolve to
# on common systems (Helvetica and Arial are narrower): labels placed apart by these widths never
# overlap in a browser. Characters not listed count as the widest listed.
_ADVANCE = {
    **dict.fromkeys("0123456789", 636), ".": 318, ",": 318, ":": 337, "-": 361, "+": 838, "<": 838,
    ">": 838, "=": 838, "−": 838, "×": 838, "≤": 838, "≥": 838, " ": 318, "(": 390, ")": 390,
    "[": 390, "]": 390, "|": 337, "/": 337, "%": 950, "_": 500, "·": 318,
    "a": 613, "b": 635, "c": 550, "d": 635, "e": 615, "f": 352, "g": 635, "h": 634, "i": 278,
    "j": 278, "k": 579, "l": 278, "m": 974, "n": 634, "o": 612, "p": 635, "q": 635, "r": 411,
    "s": 521, "t": 392, "u": 634, "v": 592, "w": 818, "x": 592, "y": 592, "z": 525,
}  # fmt: skip
_WIDEST = 1000
FONT_SIZE = 11.0
# Space kept free between two neighbouring tick labels, px.
LABEL_GAP = 6.0


def text_width(text: str, font_size: float = FONT_SIZE) -> float:
    """Width in px of `text` at `font_size` px: upper case counts as 750/1000 em, unknown as 1 em."""
    total = 0
    for char in text:
        total += _ADVANCE.get(char, 750 if char.isupper() and char.isascii() else _WIDEST)
    return total * font_size / 1000


Interval = tuple[float, float]


def _overlaps(span: Interval, taken: Sequence[Interval]) -> bool:
    return any(span[0] < hi and lo < span[1] for lo, hi in taken)


def fit_labels(
    labels: Sequence[tuple[float, str]],
    *,
    vertical: bool = False,
    taken: Sequence[Interval] = (),
    gap: float = LABEL_GAP,
) -> list[tuple[float, str]]:
    """The labels (centre position, text), in order of priority, that fit without overlapping each
    other or the `taken` spans: along a horizontal axis by measured text width, along a vertical one
    by the line height. Returned in position order."""
    kept: list[tuple[float, str]] = []
    spans = list(taken)
    for position, text in labels:
        extent = FONT_SIZE if vertical else text_width(text)
        span = (position - extent / 2 - gap / 2, position + extent / 2 + gap / 2)
        if not _overlaps(span, spans):
            kept.append((position, text))
            spans.append(span)
    return sorted(kept)


def regular_labels(
    labels: Sequence[tuple[float, str]], *, taken: Sequence[Interval] = (), vertical: bool = False
) -> list[tuple[float, str]]:
    """Every n-th of `labels` (in position order), n the smallest that lets them all fit; a label
    running into a `taken` span is left out first."""
    labels = [label for label in labels if fit_labels([label], taken=taken, vertical=vertical)]
    for step in range(1, len(labels) + 1):
        chosen = list(labels[::step])
        if len(fit_labels(chosen, taken=taken, vertical=vertical)) == len(chosen):
            return chosen
    return []


def _span(position: float, text: str, anchor: str = "middle") -> Interval:
    width = text_width(text)
    start = {"middle": position - width / 2, "start": position, "end": position - width}[anchor]
    return (start - LABEL_GAP / 2, start + width + LABEL_GAP / 2)


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
    # each extra bar gets a slot as wide as its label, so no label runs into the next
    slots = [max(30.0, text_width(text) + LABEL_GAP) for text, _ in extra]
    # and the first decade's label, centred on the plot's left edge, clears the last of them
    extra_w = sum(slots) + (
        max(14.0, text_width(_decade_label(bottom)) / 2 + LABEL_GAP + 8) if extra else 0.0
    )
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
    extra_spans: list[Interval] = []
    for i, (text, n) in enumerate(extra):
        x = left + 8 + sum(slots[:i]) + (slots[i] - 18) / 2
        extra_spans.append(_span(x + 9, text))
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
    decade_ticks = [(plot_x0 + k * per_decade_w, _decade_label(bottom + k)) for k in range(0, decades + 1)]
    for x, _ in decade_ticks:
        parts.append(
            _element("line", x1=f"{x:.1f}", x2=f"{x:.1f}", y1=baseline, y2=baseline + 4, stroke=_INK)
        )
    # every n-th decade, n by the labels' measured widths; none may run into the extra bars' labels
    for x, text in regular_labels(decade_ticks, taken=extra_spans):
        parts.append(_element("text", text, x=f"{x:.1f}", y=baseline + 15, text_anchor="middle", fill=_INK))
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


def _index_ticks(size: int, length: float, *, vertical: bool) -> list[tuple[float, str]]:
    """Tick labels for positions 0..size along an axis `length` px long: 0 and `size` first, then the
    multiples of the smallest 1/2/5 x 10^k step whose labels fit."""
    ends = [(0.0, "0"), (length, str(size))]
    for exponent in range(0, max(1, len(str(size))) + 1):
        for mantissa in (1, 2, 5):
            step = mantissa * 10**exponent
            inner = [(length * i / size, str(i)) for i in range(step, size, step)]
            fitted = fit_labels([*ends, *inner], vertical=vertical)
            if len(fitted) == len(ends) + len(inner):
                return fitted
    return fit_labels(ends, vertical=vertical)


def error_map_scale(maps: Iterable[Any]) -> tuple[float, float]:
    """(low, high) of the log colour scale shared by `maps` (ErrorMap / SampleErrorMap values)."""
    finite = [v for m in maps for row in m.values for v in row if v is not None and math.isfinite(v)]
    high = max(finite, default=0.0)
    positive = [v for v in finite if v > 0]
    low = max(high / 10**HEATMAP_DECADES, min(positive) if positive else high)
    return low, high


def heatmap_svg(
    heatmap: Any,
    *,
    atol: float | None,
    label: str,
    uid: str,
    axis_names: tuple[str, str] = ("height", "width"),
    scale: tuple[float, float] | None = None,
    max_size: tuple[float, float] = (HEATMAP_MAX_W, HEATMAP_MAX_H),
) -> Markup:
    """An output's error map (`ErrorMap` or `SampleErrorMap`) with a log colour bar, atol marked.

    The map keeps the output's aspect while its short side is at least HEATMAP_MIN_SIDE px and each
    cell HEATMAP_MIN_CELL px; a long thin map (a sequence x hidden state) is stretched to that and
    says so. Axis titles are `axis_names` (the recipe's, else height and width); tick labels are
    thinned by their measured width. `scale` (low, high) shares one colour scale between maps; `uid`
    makes the colour bar's gradient id unique within the page.
    """
    values = np.array(
        [[np.nan if v is None else float(v) for v in row] for row in heatmap.values], dtype=np.float64
    ).reshape(heatmap.shape)
    source_h, source_w = heatmap.source_hw
    low, high = scale if scale is not None else error_map_scale([heatmap])
    atol_f = as_float(atol)
    if high <= 0:
        high, low = 1.0, 0.1  # all zero: the whole map in the lowest colour
    else:
        if atol_f is not None and high / 10**MAX_DECADES <= atol_f < low:
            low = atol_f  # keep atol on the colour bar
        if low >= high:
            low = high / 10
    max_w, max_h = max_size
    fit = min(max_w / source_w, max_h / source_h)
    cells_h, cells_w = heatmap.shape
    map_w = min(max_w, max(source_w * fit, HEATMAP_MIN_SIDE, cells_w * HEATMAP_MIN_CELL))
    map_h = min(max_h, max(source_h * fit, HEATMAP_MIN_SIDE, cells_h * HEATMAP_MIN_CELL))
    map_w, map_h = round(map_w), round(map_h)
    stretched = abs((map_w / map_h) / (source_w / source_h) - 1) > 0.05
    y_ticks = _index_ticks(source_h, map_h, vertical=True)
    x_ticks = _index_ticks(source_w, map_w, vertical=False)
    y_label_w = max(text_width(text) for _, text in y_ticks)
    left, upper, gap, bar_w = 20.0 + y_label_w + 6.0, 8.0, 18.0, 14.0
    width = left + max(map_w, text_width(axis_names[1]) + 8) + gap + bar_w + 64.0
    bar_x = left + map_w + gap
    x_title = axis_names[1] + (" (stretched to fit)" if stretched else "")
    height = upper + map_h + 38.0
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
        _element("text", x_title, x=left + map_w / 2, y=upper + map_h + 32, text_anchor="middle", fill=_INK),
        _element(
            "text",
            axis_names[0],
            x=10,
            y=upper + map_h / 2,
            text_anchor="middle",
            fill=_INK,
            transform=f"rotate(-90 10 {upper + map_h / 2:g})",
        ),
        _element(
            "rect", x=bar_x, y=upper, width=bar_w, height=map_h, fill=f"url(#{gradient_id})", stroke=_INK
        ),
    ]
    for x, text in x_ticks:
        parts.append(
            _element(
                "line",
                x1=f"{left + x:.1f}",
                x2=f"{left + x:.1f}",
                y1=upper + map_h,
                y2=upper + map_h + 3,
                stroke=_INK,
            )
        )
        parts.append(
            _element("text", text, x=f"{left + x:.1f}", y=upper + map_h + 14, text_anchor="middle", fill=_INK)
        )
    for y, text in y_ticks:
        parts.append(
            _element("line", x1=left - 3, x2=left, y1=f"{upper + y:.1f}", y2=f"{upper + y:.1f}", stroke=_INK)
        )
        parts.append(
            _element("text", text, x=left - 5, y=f"{upper + y + 3.5:.1f}", text_anchor="end", fill=_INK)
        )
    span = math.log10(high) - math.log10(low)

    def bar_y(value: float) -> float:
        return upper + map_h * (1 - (math.log10(value) - math.log10(low)) / span)

    decades = range(math.ceil(math.log10(low)), math.floor(math.log10(high)) + 1)
    ticks = [(high, sci(high)), (low, sci(low)), *((10.0**k, _decade_label(k)) for k in decades)]
    # the extremes first; a decade too close to one is left out
    for y, text in fit_labels([(bar_y(value), text) for value, text in ticks], vertical=True, gap=0.0):
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
