"""The HTML report's page: its sections, each built from the typed results, in the order they are shown."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

from trt_harness.models.results.document import Results
from trt_harness.reports.sections.baseline import BaselineSection
from trt_harness.reports.sections.checks import ChecksSection
from trt_harness.reports.sections.common import RunView
from trt_harness.reports.sections.conversion import ConversionSection
from trt_harness.reports.sections.detections import DetectionsSection
from trt_harness.reports.sections.divergence import DivergenceSection
from trt_harness.reports.sections.ordering import OrderingSection
from trt_harness.reports.sections.outputs import OutputSection, OutputsSection
from trt_harness.reports.sections.summary import SummarySection


class ReportView(RunView):
    """Everything the report template shows of one run; works for runs that stopped at any stage."""

    def __init__(self, results: Results, run_dir: Path | None = None) -> None:
        super().__init__(results, run_dir)
        self.recipe = results.recipe
        self.verdict = results.verdict
        self.summary = SummarySection(self)
        self.outputs_section = OutputsSection(self)
        self.checks = ChecksSection(self)
        self.ordering = OrderingSection(self)
        self.conversion = ConversionSection(self)
        self.baseline = BaselineSection(self)
        self.divergence = DivergenceSection(self)

    @property
    def outputs(self) -> list[OutputSection]:
        return self.outputs_section.outputs

    @functools.cached_property
    def detections(self) -> DetectionsSection | None:
        return DetectionsSection.of(self)

    def sections(self) -> Iterator[tuple[str, str]]:
        """(anchor, title) of the page's sections, for the contents line."""
        if self.baseline.view is not None:
            yield "baseline", "Baseline"
        yield "outputs", "Outputs"
        if self.checks.shown:
            yield "checks", "Checks"
        if self.divergence.present:
            yield "divergence", "Where it diverges"
        if self.detections is not None:
            yield "detections", "Detections"
        yield "io-order", "I/O order"
        yield "crossmatch", "Cross-match"
        yield "backends", "Backends"
        yield "stages", "Stages"
        if self.conversion.has_scan_section:
            yield "scan", "Scan & replacements"
        yield "surgery", "Graph surgery"
        if self.conversion.has_precision_section:
            yield "precision", "Precision variants"
        yield "build", "TensorRT build"
        yield "environment", "Environment"
