"""How the model was converted: the stage ledger, the scan and replacements, graph surgery, precision
variants with the FP16 range check, and the TensorRT engines."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from trt_harness.models.results.stages import (
    BuildDetails,
    EngineRecord,
    ExportDetails,
    PrecisionDetails,
    PrecisionVariant,
    RangeReport,
    ScanDetails,
    StageRecord,
    SurgeryDetails,
    TensorRange,
)
from trt_harness.reports import formatting as fmt
from trt_harness.reports.sections.common import Fact, OpCountRow, RunView, op_count_rows

_LOCATION = re.compile(r"^(?P<file>.+):(?P<line>\d+) in (?P<function>.+)$")


@dataclass(frozen=True)
class BuildWarningRow:
    precisions: str
    phase: str
    source: str
    message: str


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
class TensorRangeRow:
    name: str
    producer: str
    max_abs: str
    subnormal: str
    flush: str
    nonfinite: int
    flags: tuple[str, ...]


def _tensor_range_row(tensor: TensorRange) -> TensorRangeRow:
    return TensorRangeRow(
        name=tensor.name,
        producer=f"{tensor.producer} ({tensor.op_type})" if tensor.producer else "graph input or initializer",
        max_abs=fmt.compact(tensor.max_abs),
        subnormal=fmt.percent(tensor.subnormal_fraction),
        flush=fmt.percent(tensor.flush_fraction),
        nonfinite=tensor.nonfinite,
        flags=tensor.flags,
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


def fp16_range_view(ranges: RangeReport, fp16_variant: PrecisionVariant | None) -> Fp16RangeView:
    limits = ranges.thresholds
    applied = None if fp16_variant is None else set(ranges.block_list) <= set(fp16_variant.block_list)
    return Fp16RangeView(
        checked=f"{fmt.number(ranges.tensors_checked)} tensors of {ranges.model} over {fmt.number(ranges.feeds)} feed(s)",
        thresholds=(
            Fact("overflow", f"flagged where max |x| > {limits.overflow_above:g}"),
            Fact(
                "underflow",
                f"flagged where more than {fmt.percent(limits.underflow_fraction)} of the nonzero "
                f"values are below {fmt.sci(limits.min_normal, 2)}, FP16's smallest normal "
                "(FP16 holds them as subnormals, with fewer significant bits)",
            ),
            Fact("flushed to 0", f"|x| < {fmt.sci(limits.min_subnormal, 2)}: FP16 rounds it to 0"),
        ),
        flagged=tuple(_tensor_range_row(t) for t in ranges.flagged),
        top=tuple(_tensor_range_row(t) for t in ranges.top),
        block_list=ranges.block_list,
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


def engine_row(engine: EngineRecord) -> EngineRow:
    if engine.built:
        return EngineRow(
            engine.precision,
            True,
            engine.engine or fmt.MISSING,
            fmt.size(engine.plan_size_bytes),
            fmt.number(engine.network_layers),
            fmt.duration(engine.build_seconds),
        )
    reason = engine.reason or "the builder refused it"
    messages = tuple(m for m in engine.messages if m not in reason)
    missing = fmt.MISSING
    return EngineRow(
        engine.precision, False, missing, missing, missing, missing, reason, engine.phase, messages
    )


class ConversionSection:
    def __init__(self, run: RunView) -> None:
        self.run = run

    # --- stages -------------------------------------------------------------------------------

    @property
    def stages(self) -> tuple[StageRecord, ...]:
        return self.run.results.stages

    def artifacts_of(self, stage: StageRecord) -> list[str]:
        return [f"{a.path} ({fmt.size(a.size_bytes)})" for a in stage.artifacts.values()]

    # --- scan and replacements ------------------------------------------------------------------

    @property
    def has_scan_section(self) -> bool:
        """Whether the scan stage ran or the export recorded what its replacements did."""
        export = self.run.details(ExportDetails)
        replaced = export is not None and bool(export.replacement_calls or export.unused_replacements)
        return self.run.stage("scan").status != "skipped" or replaced

    @property
    def finding_groups(self) -> list[FindingGroup]:
        """The scan's findings, one group per op and fix; those the recipe leaves unfixed first."""
        scan = self.run.details(ScanDetails)
        groups: dict[tuple[str, str, str | None, bool], list[tuple[str, int]]] = {}
        for f in scan.findings if scan else ():
            groups.setdefault((f.op, f.reason, f.replacement, f.fixed_by_recipe), []).append(
                (f.location, f.count)
            )
        found = [
            FindingGroup(op, reason, replacement, fixed, sum(n for _, n in sites), source_sites(sites))
            for (op, reason, replacement, fixed), sites in groups.items()
        ]
        return sorted(found, key=lambda g: g.fixed_by_recipe)

    @property
    def finding_sites(self) -> int:
        scan = self.run.details(ScanDetails)
        return len(scan.findings) if scan else 0

    @property
    def requested_replacements(self) -> tuple[str, ...]:
        export = self.run.details(ExportDetails)
        return export.replacements if export else ()

    @property
    def replacement_call_groups(self) -> list[ReplacementCallGroup]:
        export = self.run.details(ExportDetails)
        groups: dict[tuple[str, str, str], list[tuple[str, int]]] = {}
        for call in export.replacement_calls if export else ():
            groups.setdefault((call.replacement, call.action, call.detail), []).append(
                (call.location, call.count)
            )
        return [
            ReplacementCallGroup(replacement, action, detail, sum(n for _, n in sites), source_sites(sites))
            for (replacement, action, detail), sites in groups.items()
        ]

    @property
    def unused_replacements(self) -> tuple[str, ...]:
        export = self.run.details(ExportDetails)
        return export.unused_replacements if export else ()

    # --- surgery ----------------------------------------------------------------------------------

    @property
    def surgery_passes(self) -> tuple:
        surgery = self.run.details(SurgeryDetails)
        return surgery.passes if surgery else ()

    @property
    def op_count_columns(self) -> list[str]:
        return ["export", *(p.name for p in self.surgery_passes)]

    @property
    def op_count_rows(self) -> list[OpCountRow]:
        passes = self.surgery_passes
        if not passes:
            return []
        snapshots = [dict(passes[0].op_counts_before), *(dict(p.op_counts_after) for p in passes)]
        return op_count_rows(snapshots, baseline_first=False)

    # --- precision --------------------------------------------------------------------------------

    @property
    def has_precision_section(self) -> bool:
        return self.run.stage("precision").status != "skipped"

    @property
    def precision_variants(self) -> list[PrecisionVariant]:
        precision = self.run.details(PrecisionDetails)
        return list(precision.variants.values()) if precision else []

    @property
    def _final_op_counts(self) -> dict[str, int] | None:
        """Node count per op type of the FP32 model the variants were made from."""
        surgery = self.run.details(SurgeryDetails)
        if surgery is not None and surgery.op_counts_after is not None:
            return dict(surgery.op_counts_after)
        export = self.run.details(ExportDetails)
        return dict(export.op_counts) if export else None

    @property
    def variant_op_columns(self) -> list[str]:
        variants = [v.precision.upper() for v in self.precision_variants]
        return variants if self._final_op_counts is None else ["FP32 (final)", *variants]

    @property
    def variant_op_rows(self) -> list[OpCountRow]:
        """Node counts of the ops a variant adds or removes (all ops when the FP32 counts are unknown)."""
        snapshots = [dict(v.op_counts) for v in self.precision_variants]
        baseline = self._final_op_counts
        if baseline is None:
            return op_count_rows(snapshots, baseline_first=True) if snapshots else []
        rows = op_count_rows([baseline, *snapshots], baseline_first=True)
        return [row for row in rows if any(row.changed) or row.op == "all nodes"]

    @property
    def unchanged_op_types(self) -> int:
        """How many op types the op count table leaves out, because no variant changed their count."""
        shown = {row.op for row in self.variant_op_rows}
        ops = {op for v in self.precision_variants for op in v.op_counts}
        return len((ops | set(self._final_op_counts or {})) - shown)

    @property
    def fp16_range(self) -> Fp16RangeView | None:
        precision = self.run.details(PrecisionDetails)
        if precision is None or precision.fp16_range is None:
            return None
        return fp16_range_view(precision.fp16_range, precision.variants.get("fp16"))

    # --- build ------------------------------------------------------------------------------------

    @property
    def engine_rows(self) -> list[EngineRow]:
        build = self._build_details()
        return [engine_row(engine) for engine in build.engines.values()] if build else []

    def _build_details(self) -> BuildDetails | None:
        # a failed build records the refusal in its details too
        stage = self.run.stage("build")
        return stage.details if isinstance(stage.details, BuildDetails) else None

    @property
    def build_facts(self) -> list[Fact]:
        build = self._build_details()
        if build is None:
            return []
        flavor = build.flavor
        facts = [Fact("flavor", f"{flavor.display_name} {flavor.version} (module {flavor.module_name})")]
        primary = build.primary
        if primary is not None and primary.built:
            facts.append(Fact("engine file", primary.engine or fmt.MISSING, True))
            facts.append(Fact("targets", ", ".join(primary.targets) or fmt.MISSING, True))
            facts.append(Fact("network layers", fmt.number(primary.network_layers)))
            facts.append(Fact("plan size", fmt.size(primary.plan_size_bytes)))
            facts.append(Fact("build time", fmt.duration(primary.build_seconds)))
            facts.append(Fact("workspace", fmt.size(primary.workspace_bytes)))
            for name, profile in primary.profile.items():
                facts.append(
                    Fact(
                        f"profile of {name}",
                        f"min {list(profile.min)} · opt {list(profile.opt)} · max {list(profile.max)}",
                        True,
                    )
                )
        elif primary is not None and primary.phase:
            facts.append(Fact("failed in phase", primary.phase))
            if primary.failing_node is not None:
                op = f" ({primary.failing_op})" if primary.failing_op else ""
                facts.append(Fact("failing node", f"{primary.failing_node}{op}", True))
        return facts

    @property
    def build_messages(self) -> list[str]:
        build = self._build_details()
        primary = build.primary if build else None
        return list(primary.messages) if primary is not None and not primary.built else []

    @property
    def build_warnings(self) -> list[BuildWarningRow]:
        """Each warning the parser, builder or Polygraphy gave once, with the precisions it came in."""
        build = self._build_details()
        if build is None:
            return []
        found: dict[tuple[str, str, str], list[str]] = {}
        for engine in build.engines.values():
            for warning in engine.warnings:
                key = (warning.phase, warning.source, warning.message)
                found.setdefault(key, []).append(engine.precision.upper())
        return [
            BuildWarningRow(", ".join(precisions), phase, source, message)
            for (phase, source, message), precisions in found.items()
        ]
