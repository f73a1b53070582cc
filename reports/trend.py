"""Each output's error over the recorded runs (`harness convert --history DIR`), for the index page.

One trend per model (the records' `key`: recipe, parameters, weights) and tensor comparison (output x
runner pair x sample set x precision): the max abs error of each run, oldest first, on a log axis,
drawn as a small inline SVG. Where a run's environment differs from the run before it (another
package version, Python, platform, GPU) a dashed line marks it and names what changed. Written from
the history records alone.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup
from trt_harness.models.results.document import Environment
from trt_harness.models.results.history import HistoryPoint, HistoryRecord
from trt_harness.reports.formatting import number, sci
from trt_harness.reports.svg import _element, _svg, _title

_WIDTH, _HEIGHT = 260.0, 72.0
_LEFT, _RIGHT, _TOP, _BOTTOM = 40.0, 8.0, 6.0, 14.0
_LINE = "#4c78a8"
_FAIL = "#cf222e"
_PASS = "#1a7f37"
_ENV = "#bf8700"
_INK = "#57606a"
_GRID = "#d8dee4"


def environment_facts(env: Environment) -> dict[str, str]:
    """The versions and machine facts a change of which is marked on a trend."""
    facts = {
        "python": env.python,
        "platform": env.platform,
        "machine": env.machine,
        "CPUs": str(env.processor_count),
        "GPUs": "; ".join(f"{g.name} (sm {g.compute_capability})" for g in env.gpus) or "none",
    }
    facts.update(dict(sorted(env.packages.items())))
    return facts


def environment_changes(before: Environment, after: Environment) -> tuple[str, ...]:
    """What differs, one phrase each: "onnxruntime 1.22.0 → 1.23.2"."""
    a, b = environment_facts(before), environment_facts(after)
    keys = [*a, *(k for k in b if k not in a)]
    return tuple(f"{k} {a.get(k, 'absent')} → {b.get(k, 'absent')}" for k in keys if a.get(k) != b.get(k))


@dataclass(frozen=True)
class TrendPoint:
    run_id: str
    created_unix: float
    value: float | None  # the max abs error; None: that run has no value (no finite element)
    quantile_abs_err: float | None
    passed: bool
    environment_changes: tuple[str, ...]  # since the record before it in the trend; () for the first

    @property
    def created(self) -> str:
        return datetime.datetime.fromtimestamp(self.created_unix, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class Trend:
    recipe: str
    params: str
    weights: str
    output: str
    pair: str  # "Torch vs ORT"
    sample_set: str
    precision: str
    atol: float  # the latest run's
    points: tuple[TrendPoint, ...]

    @property
    def latest(self) -> TrendPoint:
        return self.points[-1]

    @property
    def changes(self) -> tuple[tuple[int, TrendPoint], ...]:
        """(position, point) of each run whose environment changed."""
        return tuple((i, p) for i, p in enumerate(self.points) if p.environment_changes)

    @property
    def svg(self) -> Markup:
        return trend_svg(self)


def _params_text(params: Mapping[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "defaults"


def trends(records: Iterable[HistoryRecord]) -> tuple[Trend, ...]:
    """The trends of the records, by model then comparison, each over its runs oldest first."""
    by_key: dict[str, list[HistoryRecord]] = {}
    for record in records:
        by_key.setdefault(record.key, []).append(record)
    found = []
    for group in by_key.values():
        group.sort(key=lambda r: r.created_unix)
        first = group[0]
        series: dict[tuple[str, ...], list[tuple[HistoryRecord, HistoryPoint]]] = {}
        for record in group:
            for point in record.points:
                series.setdefault(point.series, []).append((record, point))
        for (output, _ref, _cand, sample_set, precision), members in series.items():
            points = []
            previous: HistoryRecord | None = None
            for record, p in members:
                changed = (
                    environment_changes(previous.environment, record.environment)
                    if previous is not None
                    and previous.environment_fingerprint != record.environment_fingerprint
                    else ()
                )
                points.append(
                    TrendPoint(
                        record.run_id,
                        record.created_unix,
                        p.max_abs_err,
                        p.quantile_abs_err,
                        p.passed,
                        changed,
                    )
                )
                previous = record
            last = members[-1][1]
            found.append(
                Trend(
                    recipe=first.recipe,
                    params=_params_text(first.params),
                    weights=f"sha256 {first.weights_sha256[:12]}"
                    if first.weights_sha256
                    else "the recipe's own",
                    output=output,
                    pair=f"{last.ref_display or last.ref_backend} vs {last.cand_display or last.cand_backend}",
                    sample_set=sample_set,
                    precision=precision,
                    atol=last.atol,
                    points=tuple(points),
                )
            )
    return tuple(found)


def _y_range(values: Sequence[float]) -> tuple[float, float]:
    """Decades (log10) spanning the positive values, at least one decade."""
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    if not positive:
        return -1.0, 0.0
    low, high = math.floor(math.log10(min(positive))), math.ceil(math.log10(max(positive)))
    return float(low), float(max(high, low + 1))


def trend_svg(trend: Trend) -> Markup:
    """The trend's max abs errors on a log axis; each point carries its exact value (`data-value`)."""
    values = [p.value for p in trend.points if p.value is not None]
    low, high = _y_range(values)
    plot_w = _WIDTH - _LEFT - _RIGHT
    plot_h = _HEIGHT - _TOP - _BOTTOM
    n = len(trend.points)

    def x_of(i: int) -> float:
        return _LEFT + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y_of(value: float) -> float:
        if not math.isfinite(value):
            return _TOP
        position = (math.log10(value) - low) / (high - low) if value > 0 else 0.0
        return _TOP + plot_h * (1.0 - min(max(position, 0.0), 1.0))

    parts: list[str] = []
    for exponent, y in ((high, _TOP), (low, _TOP + plot_h)):
        parts.append(
            _element("line", x1=_LEFT, x2=_WIDTH - _RIGHT, y1=f"{y:.1f}", y2=f"{y:.1f}", stroke=_GRID)
        )
        parts.append(
            _element(
                "text", f"1e{int(exponent)}", x=_LEFT - 4, y=f"{y + 3.5:.1f}", text_anchor="end", fill=_INK
            )
        )
    for i, point in trend.changes:
        x = x_of(i) - (plot_w / (n - 1) / 2 if n > 1 else 0.0)
        parts.append(
            _element(
                "line",
                children=[_title("environment changed: " + "; ".join(point.environment_changes))],
                x1=f"{x:.1f}",
                x2=f"{x:.1f}",
                y1=_TOP,
                y2=_TOP + plot_h,
                stroke=_ENV,
                stroke_width=1.5,
                stroke_dasharray="3 2",
                class_="env-change",
                data_run=point.run_id,
            )
        )
    drawn = [(x_of(i), y_of(p.value)) for i, p in enumerate(trend.points) if p.value is not None]
    if len(drawn) > 1:
        parts.append(
            _element(
                "polyline",
                points=" ".join(f"{x:.1f},{y:.1f}" for x, y in drawn),
                fill="none",
                stroke=_LINE,
                stroke_width=1.2,
            )
        )
    for i, point in enumerate(trend.points):
        if point.value is None:
            continue
        tip = (
            f"{point.created}: max abs error {number(point.value)}, p99 {number(point.quantile_abs_err)}, "
            f"{'pass' if point.passed else 'FAIL'}"
        )
        parts.append(
            _element(
                "circle",
                children=[_title(tip)],
                cx=f"{x_of(i):.1f}",
                cy=f"{y_of(point.value):.1f}",
                r=2.8,
                fill=_PASS if point.passed else _FAIL,
                class_="point",
                data_value=repr(point.value),
                data_run=point.run_id,
            )
        )
    parts.append(_element("text", f"{n} run{'s' if n != 1 else ''}", x=_LEFT, y=_HEIGHT - 2, fill=_INK))
    label = (
        f"max abs error of {trend.output} ({trend.pair}) over {n} recorded runs, latest "
        f"{sci(trend.latest.value, 2)}"
    )
    return _svg(_WIDTH, _HEIGHT, label, parts, "trend")
