"""What the report shows, derived from results.json: the template only lays it out.

Works on any results a run saved, including those of runs that stopped early: every section
copes with a stage that was skipped, failed or never ran. Strings that come from a model stay
plain strings here; the template escapes them. Only the charts of `reports.svg` are markup.
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from reports import formatting as fmt
from reports.svg import heatmap_svg, histogram_svg

BACKEND_DISPLAY = {"torch": "Torch", "onnxrt": "ORT", "tensorrt": "TensorRT"}
EXECUTED, BUILT_NOT_EXECUTED, NOT_EXECUTED = "executed", "built, not executed", "not executed"
DONE = ("ok", "cached")
SAMPLES = "samples"  # the recipe's own sample set (harness.pipeline.SAMPLES; reports import no harness code)  # stage statuses whose details hold results (cached: reused from an earlier run)


def display_name(backend: str, run_backends: Mapping[str, Any] | None = None) -> str:
    info = (run_backends or {}).get(backend) or {}
    return str(info.get("display_name") or BACKEND_DISPLAY.get(backend, backend))


def slugify(name: str) -> str:
    """An id-safe form of an output name: lower case ASCII letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def pair_key(ref: str, cand: str) -> str:
    return f"{ref}-{cand}"


def _stages(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in results.get("stages", [])}


def _details(results: Mapping[str, Any], stage: str) -> dict[str, Any]:
    return _stages(results).get(stage, {}).get("details") or {}


def expected_pairs(backends: Sequence[str]) -> list[tuple[str, str]]:
    """(reference, candidate) over every two backends, neighbours first, as `harness.comparison.default_pairs`.

    `backends` must already be in rank order (the run stage records them so).
    """
    return [
        (backends[i], backends[i + gap])
        for gap in range(1, len(backends))
        for i in range(len(backends) - gap)
    ]


@dataclass(frozen=True)
class BackendStatus:
    name: str
    display_name: str
    state: str  # EXECUTED, BUILT_NOT_EXECUTED or NOT_EXECUTED
    reason: str | None
    samples: int | None = None
    median_latency_s: float | None = None

    @property
    def executed(self) -> bool:
        return self.state == EXECUTED


def backend_statuses(results: Mapping[str, Any]) -> list[BackendStatus]:
    run_backends = _details(results, "run").get("backends", {})
    build = _stages(results).get("build", {})
    build_details = build.get("details") or {}
    engines = build_details.get("engines") or {"fp32": {"built": bool(build_details.get("engine"))}}
    statuses = []
    for name, info in run_backends.items():
        engine_built = build.get("status") in DONE and bool(
            engines.get(info.get("precision", "fp32"), {}).get("built")
        )
        display = display_name(name, run_backends)
        if info.get("executed"):
            statuses.append(
                BackendStatus(
                    name, display, EXECUTED, None, info.get("samples"), info.get("median_latency_s")
                )
            )
        elif info.get("backend", name) == "tensorrt" and engine_built:
            statuses.append(BackendStatus(name, display, BUILT_NOT_EXECUTED, info.get("reason")))
        else:
            statuses.append(BackendStatus(name, display, NOT_EXECUTED, info.get("reason")))
    return statuses


def tolerance_text(tolerance: Mapping[str, Any]) -> str:
    """The pass criterion in words, e.g. "atol 1e-4 + rtol 1e-3·|ref|"."""
    atol, rtol = fmt.compact(tolerance.get("atol")), fmt.compact(tolerance.get("rtol"))
    check = tolerance.get("check", "elemwise")
    if check == "elemwise":
        return f"atol {atol} + rtol {rtol}·|ref|"
    stat = _quantile_label(tolerance) if check == "quantile" else check
    return f"{stat} abs ≤ {atol} or {stat} rel ≤ {rtol}"


def _quantile_label(tolerance: Mapping[str, Any]) -> str:
    q = fmt.as_float(tolerance.get("quantile")) or 0.99
    return f"p{100 * q:g}"


def worst_error_text(comparison: Mapping[str, Any]) -> str:
    """The statistic the verdict was decided on, e.g. "max abs 2.0e-1"."""
    check = comparison["tolerance"].get("check", "elemwise")
    if check in ("elemwise", "max"):
        text = f"max abs {fmt.sci(comparison['max_abs_err'])}"
        return text if check == "elemwise" else f"{text}, max rel {fmt.sci(comparison['max_rel_err'])}"
    if check == "mean":
        return (
            f"mean abs {fmt.sci(comparison['mean_abs_err'])}, mean rel {fmt.sci(comparison['mean_rel_err'])}"
        )
    stat, abs_key, rel_key = (
        ("median", "median_abs_err", "median_rel_err")
        if check == "median"
        else (_quantile_label(comparison["tolerance"]), "quantile_abs_err", "quantile_rel_err")
    )
    return f"{stat} abs ≈{fmt.sci(comparison[abs_key])}, {stat} rel ≈{fmt.sci(comparison[rel_key])}"


@dataclass(frozen=True)
class StatRow:
    label: str
    cells: tuple[str, ...]
    bad: tuple[bool, ...]


@dataclass(frozen=True)
class PairResult:
    """One backend pair's result for one output: compared, missing on one side, or not compared."""

    ref: str
    cand: str
    label: str
    state: str  # "pass", "fail" or "skipped"
    summary: str
    output: str = ""
    uid: str = ""  # unique within the page, for ids inside charts
    comparison: dict[str, Any] | None = None
    heatmap: dict[str, Any] | None = None
    sample_set: str = SAMPLES

    @property
    def key(self) -> str:
        return pair_key(self.ref, self.cand)

    @property
    def _atol(self) -> float | None:
        return fmt.as_float(self.comparison["tolerance"].get("atol")) if self.comparison else None

    @functools.cached_property
    def histogram(self) -> Markup | None:
        if self.comparison is None:
            return None
        return histogram_svg(
            self.comparison.get("abs_err_histogram", []),
            atol=self._atol,
            label=f"abs error histogram of {self.output}, {self.label}",
        )

    @functools.cached_property
    def heatmap_chart(self) -> Markup | None:
        if not self.heatmap:
            return None
        label = f"abs error heatmap of {self.output}, {self.label}"
        return heatmap_svg(self.heatmap, atol=self._atol, label=label, uid=self.uid)

    @property
    def worst(self) -> list[dict[str, str]]:
        if self.comparison is None:
            return []
        return [
            {
                "index": "[" + ", ".join(str(i) for i in w["index"]) + "]",
                "ref": fmt.precise(w["ref"]),
                "cand": fmt.precise(w["cand"]),
                "abs_err": fmt.sci(w["abs_err"], 2),
            }
            for w in self.comparison.get("worst", [])
        ]


@dataclass(frozen=True)
class OutputSection:
    name: str
    slug: str
    pairs: tuple[PairResult, ...]
    note: str | None = None  # why nothing was compared

    @property
    def state(self) -> str:
        states = {p.state for p in self.pairs}
        if "fail" in states:
            return "fail"
        return "pass" if "pass" in states else "skipped"

    @property
    def compared(self) -> tuple[PairResult, ...]:
        return tuple(p for p in self.pairs if p.comparison is not None)

    @property
    def failing_pairs(self) -> tuple[PairResult, ...]:
        return tuple(p for p in self.pairs if p.state == "fail")

    @property
    def tolerance(self) -> str | None:
        """The output's pass criterion (one per output, shared by its backend pairs)."""
        texts = dict.fromkeys(
            tolerance_text(p.comparison["tolerance"]) for p in self.compared if p.comparison
        )
        return " / ".join(texts) or None

    @property
    def stat_groups(self) -> list[tuple[str, list[StatRow]]]:
        return _stat_groups([p.comparison for p in self.compared if p.comparison is not None])


def _stat_groups(comparisons: Sequence[dict[str, Any]]) -> list[tuple[str, list[StatRow]]]:
    """The statistics of each compared pair, in two tables: absolute error, then relative error and agreement."""
    if not comparisons:
        return []

    def row(label: str, value: Any, bad: Any = None) -> StatRow:
        return StatRow(
            label,
            tuple(value(c) for c in comparisons),
            tuple(bool(bad(c)) if bad else False for c in comparisons),
        )

    def estimate(key: str) -> Any:
        return lambda c: "≈" + fmt.sci(c[key], 2)

    def out_of_tolerance(c: dict[str, Any]) -> str:
        return f"{c['out_of_tolerance']:,} ({fmt.percent(c['out_of_tolerance'] / c['elements'] if c['elements'] else 0)})"

    quantiles = {_quantile_label(c["tolerance"]) for c in comparisons}
    q = quantiles.pop() if len(quantiles) == 1 else "quantile"
    absolute = [
        row("verdict", lambda c: "pass" if c["passed"] else "FAIL", lambda c: not c["passed"]),
        row("samples × elements", lambda c: f"{c['samples']:,} × {c['elements'] // max(c['samples'], 1):,}"),
        row("out of tolerance", out_of_tolerance, lambda c: c["out_of_tolerance"] > 0),
        row("max abs error", lambda c: fmt.sci(c["max_abs_err"], 2)),
        row("mean abs error", lambda c: fmt.sci(c["mean_abs_err"], 2)),
        row("median abs error", estimate("median_abs_err")),
        row(f"{q} abs error", estimate("quantile_abs_err")),
        row("RMSE", lambda c: fmt.sci(c["rmse"], 2)),
    ]
    relative = [
        row("max rel error", lambda c: fmt.sci(c["max_rel_err"], 2)),
        row("mean rel error", lambda c: fmt.sci(c["mean_rel_err"], 2)),
        row("median rel error", estimate("median_rel_err")),
        row(f"{q} rel error", estimate("quantile_rel_err")),
        row("cosine similarity", lambda c: fmt.closeness(c["cosine_similarity"])),
        row(
            "non-finite mismatches",
            lambda c: f"{c['nonfinite_mismatches']:,}",
            lambda c: c["nonfinite_mismatches"],
        ),
        row(
            "NaN ref / cand",
            lambda c: f"{c['ref_nan']:,} / {c['cand_nan']:,}",
            lambda c: c["ref_nan"] != c["cand_nan"],
        ),
        row(
            "Inf ref / cand",
            lambda c: f"{c['ref_inf']:,} / {c['cand_inf']:,}",
            lambda c: c["ref_inf"] != c["cand_inf"],
        ),
    ]
    if any(c.get("argmax_agreement") is not None for c in comparisons):
        relative.append(
            row(
                "argmax agreement",
                lambda c: (
                    fmt.MISSING
                    if c.get("argmax_agreement") is None
                    else f"{fmt.percent(c['argmax_agreement'])} of {c['argmax_positions']:,}"
                ),
                lambda c: c.get("argmax_agreement") is not None and fmt.as_float(c["argmax_agreement"]) < 1.0,
            )
        )
    if any(c.get("within_atol") is not None for c in comparisons):
        absolute.append(
            row(
                "within atol / rtol",
                lambda c: (
                    fmt.MISSING
                    if c.get("within_atol") is None
                    else f"{c['within_atol']:,} / {c['within_rtol']:,}"
                ),
            )
        )
    return [("absolute error", absolute), ("relative error", relative)]


@dataclass(frozen=True)
class IOColumn:
    title: str
    source: str
    inputs: tuple[str, ...] | None  # None: not available
    outputs: tuple[str, ...] | None
    reason: str | None = None


@dataclass(frozen=True)
class IORow:
    kind: str  # "input" or "output"
    position: int
    cells: tuple[str | None, ...]  # None: column not available; "" : no such position
    differs: tuple[bool, ...]


@dataclass(frozen=True)
class CrossMatchView:
    ref_label: str
    cand_label: str
    ref_outputs: tuple[str, ...]
    rows: tuple[tuple[str, tuple[dict[str, Any], ...]], ...]
    mismatches: tuple[str, ...]
    unmatched: tuple[str, ...]
    samples: int


@dataclass(frozen=True)
class OpCountRow:
    op: str
    counts: tuple[int, ...]
    changed: tuple[bool, ...]


@dataclass(frozen=True)
class Fact:
    label: str
    value: str
    mono: bool = False


# --- scan, replacements, precision variants, engines -------------------------------------------------

# What conversions.scan writes for a finding no replacement covers.
NO_REPLACEMENT = "no replacement known"
_LOCATION = re.compile(r"^(?P<file>.+):(?P<line>\d+) in (?P<function>.+)$")


@dataclass(frozen=True)
class CallSite:
    line: str  # "" when the location names no line
    function: str
    count: int


@dataclass(frozen=True)
class SourceSites:
    """The call sites of one op or replacement in one source file, by line."""

    file: str
    sites: tuple[CallSite, ...]


def source_sites(located: Sequence[tuple[str, int]]) -> tuple[SourceSites, ...]:
    """("path:line in function", count) pairs grouped per file, so a long list of sites stays short."""
    files: dict[str, dict[tuple[str, str], int]] = {}
    for location, count in located:
        match = _LOCATION.match(location)
        file, line, function = (
            (match["file"], match["line"], match["function"]) if match else (location, "", "")
        )
        sites = files.setdefault(file, {})
        sites[line, function] = sites.get((line, function), 0) + int(count)
    return tuple(
        SourceSites(
            file,
            tuple(
                CallSite(line, function, count)
                for (line, function), count in sorted(sites.items(), key=lambda s: int(s[0][0] or 0))
            ),
        )
        for file, sites in files.items()
    )


@dataclass(frozen=True)
class FindingGroup:
    """One problem op of the scan, with every call site where it was found."""

    op: str
    reason: str
    replacement: str | None  # None: no replacement known
    fixed_by_recipe: bool
    count: int
    sources: tuple[SourceSites, ...]


@dataclass(frozen=True)
class ReplacementCallGroup:
    """The calls one replacement handled the same way during export (replaced, or kept for one reason)."""

    replacement: str
    action: str  # "replaced" or "kept original"
    detail: str
    count: int
    sources: tuple[SourceSites, ...]


@dataclass(frozen=True)
class PrecisionVariant:
    precision: str
    path: str
    library: str
    library_version: str
    block_list: tuple[str, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class TensorRangeRow:
    name: str
    producer: str
    max_abs: str
    subnormal: str
    flush: str
    nonfinite: int
    flags: tuple[str, ...]


def _tensor_range_row(tensor: Mapping[str, Any]) -> TensorRangeRow:
    producer = tensor.get("producer")
    op_type = tensor.get("op_type")
    return TensorRangeRow(
        name=str(tensor["name"]),
        producer=f"{producer} ({op_type})" if producer else "graph input or initializer",
        max_abs=fmt.compact(tensor.get("max_abs")),
        subnormal=fmt.percent(tensor.get("subnormal_fraction")),
        flush=fmt.percent(tensor.get("flush_fraction")),
        nonfinite=int(tensor.get("nonfinite") or 0),
        flags=tuple(map(str, tensor.get("flags", ()))),
    )


@dataclass(frozen=True)
class Fp16RangeView:
    """The FP16 range check of the precision stage: which tensors FP16 cannot hold, and the block list."""

    checked: str
    thresholds: tuple[Fact, ...]
    flagged: tuple[TensorRangeRow, ...]
    top: tuple[TensorRangeRow, ...]
    block_list: tuple[str, ...]  # the nodes the check says must stay FP32
    applied: bool | None  # whether the FP16 variant keeps them in FP32; None: no FP16 variant


def fp16_range_view(ranges: Mapping[str, Any], fp16_variant: Mapping[str, Any] | None) -> Fp16RangeView:
    thresholds = ranges.get("thresholds", {})
    overflow = fmt.as_float(thresholds.get("overflow_above"))
    block_list = tuple(map(str, ranges.get("block_list", ())))
    applied = None
    if fp16_variant is not None:
        applied = set(block_list) <= set(fp16_variant.get("block_list", ()))
    return Fp16RangeView(
        checked=(
            f"{fmt.number(ranges.get('tensors_checked'))} tensors of {ranges.get('model', 'the FP32 model')} "
            f"over {fmt.number(ranges.get('feeds'))} feed(s)"
        ),
        thresholds=(
            Fact(
                "overflow", f"flagged where max |x| > {fmt.MISSING if overflow is None else f'{overflow:g}'}"
            ),
            Fact(
                "underflow",
                f"flagged where more than {fmt.percent(thresholds.get('underflow_fraction'))} of the nonzero "
                f"values are below {fmt.sci(thresholds.get('min_normal'), 2)}, FP16's smallest normal "
                "(FP16 holds them as subnormals, with fewer significant bits)",
            ),
            Fact("flushed to 0", f"|x| < {fmt.sci(thresholds.get('min_subnormal'), 2)}: FP16 rounds it to 0"),
        ),
        flagged=tuple(_tensor_range_row(t) for t in ranges.get("flagged", ())),
        top=tuple(_tensor_range_row(t) for t in ranges.get("top", ())),
        block_list=block_list,
        applied=applied,
    )


@dataclass(frozen=True)
class EngineRow:
    """One precision's TensorRT engine, or the builder's refusal of it."""

    precision: str
    built: bool
    engine: str
    plan_size: str
    network_layers: str
    build_time: str
    reason: str | None = None
    phase: str | None = None
    messages: tuple[str, ...] = ()  # TensorRT's messages not already quoted in the reason


def engine_row(precision: str, engine: Mapping[str, Any]) -> EngineRow:
    if engine.get("built"):
        return EngineRow(
            precision,
            True,
            str(engine.get("engine", fmt.MISSING)),
            fmt.size(engine.get("plan_size_bytes")),
            fmt.number(engine.get("network_layers")),
            fmt.duration(engine.get("build_seconds")),
        )
    reason = str(engine.get("reason") or "the builder refused it")
    messages = tuple(str(m) for m in engine.get("messages", ()) if str(m) not in reason)
    missing = fmt.MISSING
    phase = engine.get("phase")
    return EngineRow(
        precision, False, missing, missing, missing, missing, reason, phase and str(phase), messages
    )


# --- detections -------------------------------------------------------------------------------------

# The report draws at most this many images (failing ones first), each once per runner, to stay small.
MAX_DRAWN_IMAGES = 8
DRAWN_IMAGE_SIDE = 400
# Boxes listed by name per side in the agreement table; the counts say how many there are in all.
LISTED_BOXES = 4


def class_label(class_id: int, class_names: Sequence[str]) -> str:
    return class_names[class_id] if 0 <= class_id < len(class_names) else f"class {class_id}"


def _box_labels(dets: Mapping[str, Any], class_names: Sequence[str]) -> tuple[str, ...]:
    labels = [
        f"{class_label(int(c), class_names)} {float(s):.2f}"
        for c, s in zip(dets["classes"], dets["scores"], strict=True)
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
    bad: frozenset[str]  # the criteria that failed: "matched", "iou", "score"
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


@dataclass
class DetectionsView:
    """The detection section: agreement per runner pair and image, and the images drawn per runner."""

    detections: dict[str, Any]
    display: Callable[[str], str]  # runner name -> display name
    run_dir: Path | None

    @property
    def spec(self) -> dict[str, Any]:
        return self.detections["spec"]

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.spec.get("class_names", ()))

    @property
    def passed(self) -> bool:
        return bool(self.detections["passed"])

    @property
    def gated_precisions(self) -> str:
        return ", ".join(p.upper() for p in self.spec["gated_precisions"]) or "none"

    @property
    def informational_precisions(self) -> str:
        gated = set(self.spec["gated_precisions"])
        shown = dict.fromkeys(
            p["precision"].upper() for p in self.detections["pairs"] if p["precision"] not in gated
        )
        return ", ".join(shown)

    @property
    def postprocessing(self) -> str:
        spec = self.spec
        text = (
            f"{spec['layout']} layout, score > {fmt.compact(spec['conf_thres'])}, class-aware NMS at IoU "
            f"{fmt.compact(spec['iou_thres'])}, at most {spec['max_det']} boxes per image"
        )
        if spec.get("min_wh"):
            text += f", boxes under {fmt.compact(spec['min_wh'])} px wide or high dropped"
        return text

    @property
    def criterion(self) -> str:
        tol = self.spec["tolerance"]
        return (
            f"same class and IoU ≥ {fmt.compact(self.spec['iou_match'])}, one to one; an image agrees with "
            f"matched ≥ {fmt.percent(tol['min_matched_fraction'])}, mean IoU ≥ {fmt.compact(tol['min_mean_iou'])} "
            f"and max |score delta| ≤ {fmt.compact(tol['max_score_delta'])}"
        )

    @functools.cached_property
    def pairs(self) -> list[DetectionPairRows]:
        pairs = []
        for pair in self.detections["pairs"]:
            ref, cand = pair["ref_backend"], pair["cand_backend"]
            label = f"{self.display(ref)} vs {self.display(cand)}"
            rows = tuple(self._row(pair, ref, cand, label, image) for image in pair["images"])
            pairs.append(DetectionPairRows(label, pair["precision"], bool(pair["gated"]), rows))
        return pairs

    @property
    def rows(self) -> list[DetectionRow]:
        return [row for pair in self.pairs for row in pair.rows]

    def _row(
        self, pair: Mapping[str, Any], ref: str, cand: str, label: str, image: Mapping[str, Any]
    ) -> DetectionRow:
        common = {
            "ref": ref,
            "cand": cand,
            "label": label,
            "precision": pair["precision"],
            "image": int(image["image"]),
            "gated": bool(pair["gated"]),
            "passed": bool(image["passed"]),
            "failures": tuple(image.get("failures", ())),
        }
        if image.get("missing_from"):
            return DetectionRow(
                **common, num_ref=None, num_cand=None, matched=fmt.MISSING, mean_iou=fmt.MISSING,
                max_score_delta=fmt.MISSING, bad=frozenset({"matched"}), only_ref_count=None,
                only_cand_count=None, only_ref=(), only_cand=(),
            )  # fmt: skip
        tol = image["tolerance"]
        bad = {
            name
            for name, failed in (
                ("matched", not image["matched_fraction"] >= tol["min_matched_fraction"]),
                ("iou", image["mean_iou"] is not None and not image["mean_iou"] >= tol["min_mean_iou"]),
                (
                    "score",
                    image["max_score_delta"] is not None
                    and not image["max_score_delta"] <= tol["max_score_delta"],
                ),
            )
            if failed
        }
        matches = len(image["pairs"])
        return DetectionRow(
            **common,
            num_ref=int(image["num_ref"]),
            num_cand=int(image["num_cand"]),
            matched=f"{fmt.percent(image['matched_fraction'])} ({matches})",
            mean_iou=fmt.MISSING if image["mean_iou"] is None else f"{image['mean_iou']:.4f}",
            max_score_delta=fmt.sci(image["max_score_delta"], 2),
            bad=frozenset(bad),
            only_ref_count=len(image["only_ref"]["scores"]),
            only_cand_count=len(image["only_cand"]["scores"]),
            only_ref=_box_labels(image["only_ref"], self.class_names),
            only_cand=_box_labels(image["only_cand"], self.class_names),
        )

    @property
    def failing_rows(self) -> list[DetectionRow]:
        return [row for row in self.rows if row.state == "fail"]

    @property
    def found_boxes(self) -> bool:
        """Whether any runner found any box; if none did, agreement says nothing about the boxes."""
        return any(
            dets is not None and len(dets["scores"]) > 0
            for per_image in self.detections["runners"].values()
            for dets in per_image
        )

    @property
    def image_count(self) -> int:
        return int(self.detections["images"])

    @functools.cached_property
    def drawn_indices(self) -> list[int]:
        """The images drawn: those a gated pair disagrees on first, then the rest, in order, up to the cap."""
        failing = {row.image for row in self.failing_rows}
        ordered = sorted(range(self.image_count), key=lambda i: (i not in failing, i))
        return sorted(ordered[:MAX_DRAWN_IMAGES])

    @property
    def images_note(self) -> str | None:
        """Why no image is drawn, or None when they are."""
        name = self.detections.get("images_file")
        if not name:
            return "the run saved no input images (no inputs.json)"
        if self.run_dir is None:
            return "the report was rendered without its run directory"
        if not (self.run_dir / name).is_file():
            return f"{name} is missing from the run directory; re-run `harness compare`"
        return None

    @functools.cached_property
    def images(self) -> list[DetectionImage]:
        """Each drawn image once per runner, side by side: boxes, class and score, as inline JPEGs."""
        if self.images_note is not None or self.run_dir is None:
            return []
        import numpy as np

        failing = {row.image for row in self.failing_rows}
        drawn = []
        with np.load(self.run_dir / self.detections["images_file"]) as archive:
            for index in self.drawn_indices:
                if f"image_{index}" in archive.files:
                    picture = archive[f"image_{index}"]
                    panels = tuple(
                        self._panel(runner, picture, index) for runner in self.detections["runners"]
                    )
                    drawn.append(DetectionImage(index, "fail" if index in failing else "pass", panels))
        return drawn

    def _panel(self, runner: str, picture: Any, index: int) -> DetectionPanel:
        """`runner`'s detections drawn on image `index`, captioned with its agreement with the first runner."""
        from models.detection import Detections
        from reports.drawing import draw_detections, jpeg_data_uri

        title = self.display(runner)
        per_image = self.detections["runners"][runner]
        if index >= len(per_image) or per_image[index] is None:
            return DetectionPanel(title, "", f"no {self.spec['output']} for this image")
        dets = Detections.from_json(per_image[index])
        jpeg = draw_detections(
            picture, dets, self.class_names, title, max_side=DRAWN_IMAGE_SIDE, image_format="JPEG"
        )
        caption = f"{len(dets)} box{'es' if len(dets) != 1 else ''}"
        reference = next(iter(self.detections["runners"]))
        versus = next(
            (
                pair["images"][index]
                for pair in self.detections["pairs"]
                if (pair["ref_backend"], pair["cand_backend"]) == (reference, runner)
            ),
            {},
        )
        if versus.get("num_ref") == 0 and versus.get("num_cand") == 0:
            caption += f", as {self.display(reference)}"
        elif "matched_fraction" in versus:
            caption += (
                f"; {len(versus['pairs'])} matched with {self.display(reference)} "
                f"({fmt.percent(versus['matched_fraction'])})"
            )
        return DetectionPanel(title, jpeg_data_uri(jpeg), caption)


@dataclass
class ReportView:
    results: dict[str, Any]
    # where the run's files are (the drawn detection images come from there); None: results only
    run_dir: Path | None = None
    _stages: dict[str, dict[str, Any]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._stages = _stages(self.results)

    # --- header -----------------------------------------------------------------------------

    @property
    def recipe(self) -> dict[str, Any]:
        return self.results["recipe"]

    @property
    def verdict(self) -> dict[str, Any]:
        return self.results["verdict"]

    @property
    def environment(self) -> dict[str, Any]:
        return self.results.get("environment", {})

    @property
    def stages(self) -> list[dict[str, Any]]:
        return self.results.get("stages", [])

    @property
    def created(self) -> str:
        created = self.results.get("created_unix")
        if created is None:
            return ""
        return datetime.datetime.fromtimestamp(created, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")

    def stage(self, name: str) -> dict[str, Any]:
        return self._stages.get(
            name, {"name": name, "status": "skipped", "details": {}, "reason": "not recorded"}
        )

    def details(self, name: str) -> dict[str, Any]:
        return self.stage(name).get("details") or {}

    @property
    def recipe_facts(self) -> list[Fact]:
        recipe = self.recipe
        facts = []
        if recipe.get("params"):
            facts.append(Fact("parameters", ", ".join(f"{k}={v}" for k, v in recipe["params"].items()), True))
        inputs = [f"{i['name']} {list(i['shape'])} {i['dtype']}" for i in recipe.get("inputs", [])]
        facts.append(Fact("inputs", "; ".join(inputs) or fmt.MISSING, True))
        facts.append(Fact("outputs", ", ".join(recipe.get("output_names", [])) or fmt.MISSING, True))
        facts.append(Fact("default tolerance", tolerance_text(recipe.get("default_tolerance", {}))))
        for output, tolerance in recipe.get("tolerances", {}).items():
            facts.append(Fact(f"tolerance of {output}", tolerance_text(tolerance)))
        overrides = self.results.get("overrides") or {}
        given = [f"{key} {value}" for key, value in overrides.items() if value not in (None, {}, [])]
        if given:
            facts.append(Fact("command-line overrides", "; ".join(given), True))
        facts.append(
            Fact("weights", recipe.get("weights") or "seeded random initialisation (no weights file)", True)
        )
        return facts

    # --- backends and outputs ---------------------------------------------------------------

    @property
    def run_backends(self) -> dict[str, Any]:
        return self.details("run").get("backends", {})

    @property
    def backends(self) -> list[BackendStatus]:
        return backend_statuses(self.results)

    def display(self, backend: str) -> str:
        return display_name(backend, self.run_backends)

    def pair_label(self, ref: str, cand: str) -> str:
        return f"{self.display(ref)} vs {self.display(cand)}"

    @property
    def pairs(self) -> list[tuple[str, str, str]]:
        """(reference, candidate, sample set) rows: every compared pair in its group's order, then the
        FP32 pairs of the run's backends that were not compared (e.g. TensorRT built, not executed)."""
        groups = self.details("compare").get("groups") or [
            {"sample_set": SAMPLES, "pairs": self.details("compare").get("pairs", [])}
        ]
        compared = [(str(ref), str(cand), g["sample_set"]) for g in groups for ref, cand in g["pairs"]]
        fp32 = [name for name, info in self.run_backends.items() if info.get("precision", "fp32") == "fp32"]
        every = [(ref, cand, SAMPLES) for ref, cand in expected_pairs(fp32)]
        return [*compared, *(p for p in every if p not in compared)]

    def sample_set_label(self, sample_set: str) -> str:
        if sample_set == SAMPLES:
            return ""
        shapes = self.details("run").get("sample_sets", {}).get(sample_set, {}).get("shapes", {})
        shown = ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in shapes.items())
        return f"at {shown}" if shown else f"at {sample_set}"

    @property
    def output_names(self) -> list[str]:
        compare = self.details("compare")
        names = list(self.recipe.get("output_names", []))
        for entry in [*compare.get("comparisons", []), *compare.get("missing", [])]:
            if entry["output"] not in names:
                names.append(entry["output"])
        return names

    def _not_compared_reason(self, ref: str, cand: str) -> str:
        statuses = {b.name: b for b in self.backends}
        for backend in (ref, cand):
            status = statuses.get(backend)
            if status is not None and not status.executed:
                return f"{status.display_name} {status.state}: {status.reason or 'no reason recorded'}"
        compare = self.stage("compare")
        if compare.get("status") not in DONE:
            return f"compare stage {compare.get('status')}: {compare.get('reason') or 'no reason recorded'}"
        return "not compared"

    @functools.cached_property
    def outputs(self) -> list[OutputSection]:
        compare = self.details("compare")
        comparisons = {
            (c["output"], c["ref_backend"], c["cand_backend"], c.get("sample_set", SAMPLES)): c
            for c in compare.get("comparisons", [])
        }
        missing = {
            (m["output"], m["ref_backend"], m["cand_backend"], m.get("sample_set", SAMPLES)): m
            for m in compare.get("missing", [])
        }
        heatmaps = compare.get("heatmaps", {})
        sections = []
        used_slugs: set[str] = set()
        for index, output in enumerate(self.output_names):
            slug = slugify(output) or f"{index}"
            while slug in used_slugs:
                slug = f"{slug}-{index}"
            used_slugs.add(slug)
            pairs = [
                self._pair_result(output, ref, cand, sample_set, comparisons, missing, heatmaps, slug)
                for ref, cand, sample_set in self.pairs
            ]
            note = None
            if not any(p.comparison for p in pairs):
                compare_stage = self.stage("compare")
                note = compare_stage.get("reason") or "no backend pair compared this output"
            sections.append(OutputSection(output, slug, tuple(pairs), note))
        return sections

    def _pair_result(
        self,
        output: str,
        ref: str,
        cand: str,
        sample_set: str,
        comparisons: Mapping[tuple[str, str, str, str], dict[str, Any]],
        missing: Mapping[tuple[str, str, str, str], dict[str, Any]],
        heatmaps: Mapping[str, Mapping[str, Any]],
        slug: str,
    ) -> PairResult:
        label = " ".join(filter(None, (self.pair_label(ref, cand), self.sample_set_label(sample_set))))
        comparison = comparisons.get((output, ref, cand, sample_set))
        if comparison is not None:
            passed = bool(comparison["passed"])
            summary = f"{worst_error_text(comparison)} (tol {tolerance_text(comparison['tolerance'])})"
            if (
                comparison["tolerance"].get("check", "elemwise") == "elemwise"
                or comparison["out_of_tolerance"]
            ):
                summary += (
                    f", {comparison['out_of_tolerance']:,} of {comparison['elements']:,} out of tolerance"
                )
            heatmap = (heatmaps.get(output) or {}).get(pair_key(ref, cand)) if sample_set == SAMPLES else None
            state = "pass" if passed else "fail"
            uid = f"{slug}-{pair_key(ref, cand)}-{slugify(sample_set)}"
            return PairResult(ref, cand, label, state, summary, output, uid, comparison, heatmap, sample_set)
        gone = missing.get((output, ref, cand, sample_set))
        if gone is not None:
            absent_from = self.display(gone["missing_from"])
            return PairResult(
                ref,
                cand,
                label,
                "fail",
                f"missing from {absent_from} in {gone['samples_missing']} of {gone['samples']} samples",
                sample_set=sample_set,
            )
        return PairResult(
            ref, cand, label, "skipped", self._not_compared_reason(ref, cand), sample_set=sample_set
        )

    @property
    def failing_outputs(self) -> list[OutputSection]:
        return [o for o in self.outputs if o.state == "fail"]

    @functools.cached_property
    def detections(self) -> DetectionsView | None:
        found = self.details("compare").get("detections")
        return DetectionsView(found, self.display, self.run_dir) if found else None

    # --- I/O order and cross-match ----------------------------------------------------------

    @property
    def io_columns(self) -> list[IOColumn]:
        columns: list[IOColumn] = []
        statuses = {b.name: b for b in self.backends}

        def names(order: Any, key: str) -> tuple[str, ...]:
            return tuple(str(e["name"]) if isinstance(e, dict) else str(e) for e in order.get(key, []))

        def from_run(backend: str, title: str, source: str) -> IOColumn:
            info = self.run_backends.get(backend, {})
            order = info.get("io_order")
            if info.get("executed") and order:
                return IOColumn(title, source, names(order, "inputs"), names(order, "outputs"))
            status = statuses.get(backend)
            if status is not None:
                reason = f"{status.state}: {status.reason}"
            else:
                run = self.stage("run")
                reason = f"run stage {run.get('status')}: {run.get('reason') or 'no backend recorded'}"
            return IOColumn(title, source, None, None, reason)

        # Without a run stage, still show which orders are missing.
        for backend in self.run_backends or BACKEND_DISPLAY:
            if backend == "tensorrt":
                network_io = self.details("build").get("network_io")
                if network_io:
                    columns.append(
                        IOColumn(
                            "TensorRT",
                            "network (build)",
                            names(network_io, "inputs"),
                            names(network_io, "outputs"),
                        )
                    )
                else:
                    columns.append(from_run(backend, "TensorRT", "engine (run)"))
                continue
            title = self.display(backend)
            columns.append(
                from_run(backend, title, "returned order" if backend == "torch" else "session (run)")
            )
            if backend == "torch":
                columns.append(self._export_column())
        if "torch" not in self.run_backends:
            columns.insert(0, self._export_column())
        return columns

    def _export_column(self) -> IOColumn:
        export = self.stage("export")
        details = export.get("details") or {}
        if "outputs" in details:
            return IOColumn(
                "ONNX",
                "graph (export)",
                tuple(map(str, details.get("inputs", []))),
                tuple(map(str, details["outputs"])),
            )
        return IOColumn(
            "ONNX", "graph (export)", None, None, f"export {export.get('status')}: {export.get('reason')}"
        )

    @property
    def io_rows(self) -> list[IORow]:
        columns = self.io_columns
        rows = []
        for kind, attr in (("input", "inputs"), ("output", "outputs")):
            lists = [getattr(c, attr) for c in columns]
            length = max((len(names) for names in lists if names is not None), default=0)
            for position in range(length):
                cells = tuple(
                    None if names is None else (names[position] if position < len(names) else "")
                    for names in lists
                )
                # Which column is right is unknown: a position whose names disagree is marked in all of them.
                disagree = len({c for c in cells if c is not None}) > 1
                differs = tuple(c is not None and disagree for c in cells)
                rows.append(IORow(kind, position, cells, differs))
        return rows

    @property
    def crossmatches(self) -> list[CrossMatchView]:
        views = []
        for cm in self.details("compare").get("crossmatch", []):
            # crossmatch.py words each mismatch "... '<cand>' matches <ref backend> '<best>'".
            best_match = cm.get("best_match", {})
            mismatched_rows = {
                c
                for c in cm["cand_outputs"]
                if best_match.get(c) not in (None, c)
                and any(
                    f"'{c}' matches" in m and m.endswith(f"'{best_match[c]}'")
                    for m in cm.get("mismatches", [])
                )
            }
            rows = []
            for cand, scores in zip(cm["cand_outputs"], cm["scores"], strict=True):
                best = best_match.get(cand)
                cells = tuple(
                    {
                        "text": fmt.MISSING if score is None else fmt.number(fmt.as_float(score)),
                        "title": "shapes not compatible" if score is None else f"score {score}",
                        "best": ref == best,
                        "same": ref == cand,
                        "mismatch": cand in mismatched_rows and ref == best,
                        "expected": cand in mismatched_rows and ref == cand,
                    }
                    for ref, score in zip(cm["ref_outputs"], scores, strict=True)
                )
                rows.append((cand, cells))
            views.append(
                CrossMatchView(
                    self.display(cm["ref_backend"]),
                    self.display(cm["cand_backend"]),
                    tuple(cm["ref_outputs"]),
                    tuple(rows),
                    tuple(cm.get("mismatches", [])),
                    tuple(cm.get("unmatched", [])),
                    int(cm.get("samples", 0)),
                )
            )
        return views

    @property
    def mismatches(self) -> list[str]:
        return [m for cm in self.crossmatches for m in cm.mismatches]

    # --- stages, surgery, build, environment -------------------------------------------------

    def artifacts_of(self, stage: Mapping[str, Any]) -> list[str]:
        return [
            f"{a['path']} ({fmt.size(a.get('size_bytes'))})" for a in (stage.get("artifacts") or {}).values()
        ]

    @property
    def has_scan_section(self) -> bool:
        """Whether the scan stage ran or the export recorded what its replacements did."""
        export = self.details("export")
        return self.stage("scan").get("status") != "skipped" or bool(
            export.get("replacement_calls") or export.get("unused_replacements")
        )

    @property
    def finding_groups(self) -> list[FindingGroup]:
        """The scan's findings, one group per op and fix; those the recipe leaves unfixed first."""
        groups: dict[tuple[str, str, str | None, bool], list[dict[str, Any]]] = {}
        for finding in self.details("scan").get("findings", []):
            replacement = finding.get("replacement")
            key = (
                str(finding["op"]),
                str(finding.get("reason", "")),
                None if replacement in (None, NO_REPLACEMENT) else str(replacement),
                bool(finding.get("fixed_by_recipe")),
            )
            groups.setdefault(key, []).append(finding)
        found = [
            FindingGroup(
                op,
                reason,
                replacement,
                fixed,
                sum(int(f.get("count", 1)) for f in findings),
                source_sites([(str(f.get("location", "")), int(f.get("count", 1))) for f in findings]),
            )
            for (op, reason, replacement, fixed), findings in groups.items()
        ]
        return sorted(found, key=lambda g: g.fixed_by_recipe)

    @property
    def finding_sites(self) -> int:
        return len(self.details("scan").get("findings", []))

    @property
    def requested_replacements(self) -> list[str]:
        return [str(r) for r in self.details("export").get("replacements", [])]

    @property
    def replacement_call_groups(self) -> list[ReplacementCallGroup]:
        groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for call in self.details("export").get("replacement_calls", []):
            key = (str(call["replacement"]), str(call.get("action", "")), str(call.get("detail") or ""))
            groups.setdefault(key, []).append(call)
        return [
            ReplacementCallGroup(
                replacement,
                action,
                detail,
                sum(int(c.get("count", 1)) for c in calls),
                source_sites([(str(c.get("location", "")), int(c.get("count", 1))) for c in calls]),
            )
            for (replacement, action, detail), calls in groups.items()
        ]

    @property
    def unused_replacements(self) -> list[str]:
        return [str(r) for r in self.details("export").get("unused_replacements", [])]

    @property
    def has_precision_section(self) -> bool:
        return self.stage("precision").get("status") != "skipped"

    @property
    def precision_variants(self) -> list[PrecisionVariant]:
        return [
            PrecisionVariant(
                str(variant.get("precision", precision)),
                str(variant.get("path", fmt.MISSING)),
                str(variant.get("library", fmt.MISSING)),
                str(variant.get("library_version", fmt.MISSING)),
                tuple(map(str, variant.get("block_list", ()))),
                tuple(map(str, variant.get("notes", ()))),
            )
            for precision, variant in (self.details("precision").get("variants") or {}).items()
        ]

    @property
    def _final_op_counts(self) -> dict[str, int] | None:
        """Node count per op type of the FP32 model the variants were made from."""
        surgery = self.stage("surgery")
        if surgery.get("status") in DONE and "op_counts_after" in (surgery.get("details") or {}):
            return surgery["details"]["op_counts_after"]
        return self.details("export").get("op_counts")

    @property
    def variant_op_columns(self) -> list[str]:
        variants = [v.precision.upper() for v in self.precision_variants]
        return variants if self._final_op_counts is None else ["FP32 (final)", *variants]

    @property
    def variant_op_rows(self) -> list[OpCountRow]:
        """Node counts of the ops a variant adds or removes (all ops when the FP32 counts are unknown)."""
        variants = (self.details("precision").get("variants") or {}).values()
        snapshots = [v.get("op_counts", {}) for v in variants]
        baseline = self._final_op_counts
        if baseline is not None:
            snapshots = [baseline, *snapshots]
        ops = sorted({op for snapshot in snapshots for op in snapshot})
        rows = []
        for op in [*ops, "all nodes"]:
            counts = tuple(
                sum(snapshot.values()) if op == "all nodes" else int(snapshot.get(op, 0))
                for snapshot in snapshots
            )
            changed = tuple(baseline is not None and i > 0 and n != counts[0] for i, n in enumerate(counts))
            if baseline is None or any(changed) or op == "all nodes":
                rows.append(OpCountRow(op, counts, changed))
        return rows

    @property
    def unchanged_op_types(self) -> int:
        """How many op types the op count table leaves out, because no variant changed their count."""
        shown = {row.op for row in self.variant_op_rows}
        ops = {
            op
            for v in (self.details("precision").get("variants") or {}).values()
            for op in v.get("op_counts", {})
        }
        return len((ops | set(self._final_op_counts or {})) - shown)

    @property
    def fp16_range(self) -> Fp16RangeView | None:
        precision = self.details("precision")
        ranges = precision.get("fp16_range")
        if not ranges:
            return None
        return fp16_range_view(ranges, (precision.get("variants") or {}).get("fp16"))

    @property
    def engine_rows(self) -> list[EngineRow]:
        engines = self.details("build").get("engines") or {}
        return [engine_row(precision, engine) for precision, engine in engines.items()]

    @property
    def surgery_passes(self) -> list[dict[str, Any]]:
        return self.details("surgery").get("passes", [])

    @property
    def op_count_columns(self) -> list[str]:
        return ["export", *(p["name"] for p in self.surgery_passes)]

    @property
    def op_count_rows(self) -> list[OpCountRow]:
        passes = self.surgery_passes
        if not passes:
            return []
        snapshots = [passes[0].get("op_counts_before", {}), *(p.get("op_counts_after", {}) for p in passes)]
        ops = sorted({op for snapshot in snapshots for op in snapshot})
        rows = []
        for op in [*ops, "all nodes"]:
            counts = tuple(
                sum(snapshot.values()) if op == "all nodes" else int(snapshot.get(op, 0))
                for snapshot in snapshots
            )
            changed = (False, *(counts[i] != counts[i - 1] for i in range(1, len(counts))))
            rows.append(OpCountRow(op, counts, changed))
        return rows

    @property
    def build_facts(self) -> list[Fact]:
        build = self.details("build")
        facts = []
        flavor = build.get("flavor")
        if flavor:
            facts.append(
                Fact(
                    "flavor", f"{flavor.get('name')} {flavor.get('version')} (module {flavor.get('module')})"
                )
            )
        if "engine" in build:
            facts.append(Fact("engine file", str(build["engine"]), True))
            facts.append(Fact("targets", ", ".join(build.get("targets", [])) or fmt.MISSING, True))
            facts.append(Fact("network layers", fmt.number(build.get("network_layers"))))
            facts.append(Fact("plan size", fmt.size(build.get("plan_size_bytes"))))
            if "build_seconds" in build:
                facts.append(Fact("build time", fmt.duration(build["build_seconds"])))
            if "workspace_bytes" in build:
                facts.append(Fact("workspace", fmt.size(build["workspace_bytes"])))
            for name, profile in (build.get("profile") or {}).items():
                facts.append(
                    Fact(
                        f"profile of {name}",
                        f"min {profile.get('min')} · opt {profile.get('opt')} · max {profile.get('max')}",
                        True,
                    )
                )
        if "phase" in build:
            facts.append(Fact("failed in phase", str(build["phase"])))
        return facts

    @property
    def build_messages(self) -> list[str]:
        return [str(m) for m in self.details("build").get("messages", [])]

    @property
    def environment_facts(self) -> list[Fact]:
        env = self.environment
        gpus = env.get("gpus") or []
        gpu_text = "; ".join(f"{g.get('name')} (sm {g.get('compute_capability')})" for g in gpus) or "none"
        facts = [
            Fact("python", str(env.get("python", fmt.MISSING))),
            Fact("platform", str(env.get("platform", fmt.MISSING)), True),
            Fact("CPUs", fmt.number(env.get("processor_count"))),
            Fact("GPUs", gpu_text),
        ]
        facts += [Fact(name, str(version), True) for name, version in (env.get("packages") or {}).items()]
        return facts

    def sections(self) -> Iterator[tuple[str, str]]:
        """(anchor, title) of the page's sections, for the contents line."""
        yield "outputs", "Outputs"
        if self.detections is not None:
            yield "detections", "Detections"
        yield "io-order", "I/O order"
        yield "crossmatch", "Cross-match"
        yield "backends", "Backends"
        yield "stages", "Stages"
        if self.has_scan_section:
            yield "scan", "Scan & replacements"
        yield "surgery", "Graph surgery"
        if self.has_precision_section:
            yield "precision", "Precision variants"
        yield "build", "TensorRT build"
        yield "environment", "Environment"
