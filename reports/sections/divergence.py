"""Where it diverges: the error of every mapped module's output along the network (from
`Results.localization`), the first divergence highlighted, the largest jumps, and the FP16 and INT8 triages."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from markupsafe import Markup
from trt_harness.models.results.localize import (
    Fp16Triage,
    Int8Triage,
    LayerCurve,
    LayerError,
    MarkedBuild,
    TensorRTMarking,
)
from trt_harness.reports import formatting as fmt
from trt_harness.reports.sections.common import RunView

_FONT = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:11px"
_INK, _GRID, _PASS, _FAIL, _FIRST = "#57606a", "#d8dee4", "#4c78a8", "#e45756", "#b8860b"
_WIDTH, _HEIGHT, _LEFT, _RIGHT, _TOP, _BOTTOM = 720.0, 240.0, 56.0, 12.0, 14.0, 34.0
_FLOOR = 1e-6  # ratios below this (float noise) are drawn on the bottom line


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def error_curve_svg(curve: LayerCurve, label: str) -> Markup:
    """Each layer's worst error over its scaled tolerance, log scale, in topological order; 1 = the tolerance."""
    layers = curve.layers
    finite = [layer.error_ratio for layer in layers if math.isfinite(layer.error_ratio)]
    top = max([1.0, *finite]) if finite else 1.0
    high = math.ceil(math.log10(top * 2))
    low = math.floor(math.log10(max(min([*finite, 1.0]), _FLOOR)))
    low = min(low, high - 1)
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM

    def y_of(ratio: float) -> float:
        value = min(max(ratio, 10.0**low), 10.0**high) if math.isfinite(ratio) else 10.0**high
        return _TOP + plot_h * (1 - (math.log10(value) - low) / (high - low))

    def x_of(i: int) -> float:
        return _LEFT + (plot_w * (i + 0.5) / len(layers) if layers else 0)

    parts = [
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="{_GRID}"/>'
    ]
    for exponent in range(low, high + 1):
        y = y_of(10.0**exponent)
        parts.append(f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="{_GRID}"/>')
        parts.append(
            f'<text x="{_LEFT - 4}" y="{y + 3.5:.1f}" text-anchor="end" fill="{_INK}">1e{exponent}</text>'
        )
    y1 = y_of(1.0)
    parts.append(
        f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y1:.1f}" y2="{y1:.1f}" stroke="{_FAIL}" '
        f'stroke-dasharray="4 3"><title>scaled tolerance</title></line>'
    )
    points = " ".join(f"{x_of(i):.1f},{y_of(layer.error_ratio):.1f}" for i, layer in enumerate(layers))
    if points:
        parts.append(f'<polyline points="{points}" fill="none" stroke="{_INK}" stroke-width="1"/>')
    for i, layer in enumerate(layers):
        first = layer.module == curve.first_divergence
        colour = _FIRST if first else (_PASS if layer.passed else _FAIL)
        tip = (
            f"{layer.module} ({layer.class_name}) {layer.source or ''}: error {fmt.sci(layer.error_ratio)}"
            f" x tolerance, max abs {fmt.sci(layer.max_abs_err)}"
        )
        ring = ' stroke="#000"' if first else ""
        parts.append(
            f'<circle cx="{x_of(i):.1f}" cy="{y_of(layer.error_ratio):.1f}" r="{5 if first else 2.5}" '
            f'fill="{colour}"{ring}><title>{_esc(tip)}</title></circle>'
        )
        if first:
            parts.append(
                f'<text x="{x_of(i) + 7:.1f}" y="{y_of(layer.error_ratio) - 7:.1f}" fill="#000">'
                f"{_esc(layer.module)}</text>"
            )
    parts.append(
        f'<text x="{_LEFT + plot_w / 2}" y="{_HEIGHT - 8}" text-anchor="middle" fill="{_INK}">'
        f"{len(layers)} module outputs in topological order</text>"
    )
    parts.append(
        f'<text x="12" y="{_TOP + plot_h / 2}" text-anchor="middle" fill="{_INK}" '
        f'transform="rotate(-90 12 {_TOP + plot_h / 2})">error / tolerance</text>'
    )
    return Markup(
        f'<svg class="chart divergence" viewBox="0 0 {_WIDTH:g} {_HEIGHT:g}" width="{_WIDTH:g}" '
        f'height="{_HEIGHT:g}" role="img" aria-label="{_esc(label)}" style="{_FONT}">'
        f"<title>{_esc(label)}</title>{''.join(parts)}</svg>"
    )


@dataclass(frozen=True)
class LayerRow:
    module: str
    class_name: str
    op_types: str
    source: str
    source_title: str
    error_ratio: str
    jump: str
    max_abs_err: str
    passed: bool
    first: bool


def _short_source(source: str | None) -> str:
    if not source:
        return "—"
    file, _, line = source.rpartition(":")
    return f"{Path(file).name}:{line}"


def _row(layer: LayerError, first: str | None) -> LayerRow:
    return LayerRow(
        module=layer.module,
        class_name=layer.class_name.rsplit(".", 1)[-1],
        op_types=", ".join(layer.op_types),
        source=_short_source(layer.source),
        source_title=layer.source or "",
        error_ratio=fmt.sci(layer.error_ratio),
        jump=fmt.sci(layer.jump),
        max_abs_err=fmt.sci(layer.max_abs_err),
        passed=layer.passed,
        first=layer.module == first,
    )


@dataclass(frozen=True)
class CurveView:
    title: str
    curve: LayerCurve
    chart: Markup
    first: LayerRow | None
    jumps: Sequence[LayerRow]
    failed: int


def _curve_view(curve: LayerCurve, title: str) -> CurveView:
    divergence = curve.divergence
    return CurveView(
        title=title,
        curve=curve,
        chart=error_curve_svg(curve, f"error per layer, {title}"),
        first=_row(divergence, curve.first_divergence) if divergence else None,
        jumps=[_row(layer, curve.first_divergence) for layer in curve.largest_jumps(10)],
        failed=sum(not layer.passed for layer in curve.layers),
    )


class DivergenceSection:
    def __init__(self, run: RunView) -> None:
        self.localization = run.results.localization

    @property
    def present(self) -> bool:
        return self.localization is not None

    @property
    def curves(self) -> list[CurveView]:
        return [
            _curve_view(curve, f"Torch vs ORT {curve.precision.upper()} ({curve.model})")
            for curve in (self.localization.curves if self.localization else ())
        ]

    @property
    def tensorrt(self) -> TensorRTView | None:
        marking = self.localization.tensorrt_marking if self.localization else None
        return TensorRTView.of(marking) if marking is not None else None

    @property
    def tensorrt_curves(self) -> list[CurveView]:
        """Torch vs TensorRT, only where the engine executed (drawn as the ORT curves are)."""
        view = self.tensorrt
        curve = view.marking.curve if view else None
        if curve is None:
            return []
        title = f"Torch vs TensorRT {curve.precision.upper()} ({view.marking.flavor}, output-marked engine)"
        return [_curve_view(curve, title)]

    @property
    def triage(self) -> Fp16Triage | None:
        return self.localization.fp16_triage if self.localization else None

    @property
    def int8_triage(self) -> Int8Triage | None:
        return self.localization.int8_triage if self.localization else None

    @property
    def notes(self) -> tuple[str, ...]:
        return self.localization.notes if self.localization else ()


@dataclass(frozen=True)
class MarkedBuildRow:
    marking: str
    built: bool
    marked: str
    network_layers: str
    engine_layers: str
    materialized: str
    plan_size: str
    note: str


def _debug_note(build: MarkedBuild) -> str:
    if build.marking != "debug" or not build.built or build.marked_in_engine:
        return ""
    # measured: the builder accepted the marks; whether the tensors can be read needs an execution
    return "the builder's layer list names none of them as a layer output; reading them back needs a run"


@dataclass(frozen=True)
class TensorRTView:
    """The marked TensorRT builds (layer counts measured by building) and whether TensorRT executed."""

    marking: TensorRTMarking
    rows: Sequence[MarkedBuildRow]
    supported: str  # which marking the flavor supports, in words

    @classmethod
    def of(cls, marking: TensorRTMarking) -> TensorRTView:
        def count(value: int | None) -> str:
            return "—" if value is None else str(value)

        rows = [
            MarkedBuildRow(
                marking={"none": "unmarked", "debug": "debug tensors", "output": "outputs"}[b.marking],
                built=b.built,
                marked="—" if b.marking == "none" or not b.built else str(b.marked),
                network_layers=count(b.network_layers),
                engine_layers=count(b.engine_layers),
                materialized=", ".join(b.marked_in_engine) or "—",
                plan_size=fmt.size(b.plan_size_bytes) if b.plan_size_bytes is not None else "—",
                note=b.reason or _debug_note(b),
            )
            for b in marking.builds
        ]
        debug = marking.build("debug")
        output = marking.build("output")
        kinds = [
            name
            for name, build in (("debug tensors (mark_debug)", debug), ("outputs (mark_output)", output))
            if build is not None and build.built
        ]
        supported = (
            f"{marking.flavor} built with the mapped tensors marked as {' and as '.join(kinds)}"
            if kinds
            else f"{marking.flavor or 'TensorRT'} built no marked engine"
        )
        if not marking.supports_debug and marking.builds:
            supported += "; it has no mark_debug"
        return cls(marking, rows, supported)
