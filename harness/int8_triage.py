"""INT8 triage: the smallest set of nodes found to leave unquantized (ORT's `nodes_to_exclude`) that brings
every output within the INT8 tolerance (the search is `harness.precision_triage`'s; here the INT8 model
it makes and the result in the forms other tools take).

Only the weighted ops the quantizer places Q/DQ on (`QUANTIZED_OPS`) are candidates: excluding any other
node changes nothing. Every candidate model is calibrated as the precision stage's was (the same FP32
model, feeds and method); the ranges are computed once and read back from a calibration cache where
onnxruntime has one, as they do not depend on which nodes are excluded.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from trt_harness.conversions.ort_session import OrtSettings
from trt_harness.conversions.precision.int8 import QUANTIZED_OPS, CalibrationMethod, int8_qdq_onnx
from trt_harness.harness.precision_triage import search
from trt_harness.models.recipe import Feed, Tolerance
from trt_harness.models.results.localize import Int8Triage, LayerCurve, ModuleMap

CPU_CAVEAT = (
    "Validated with ONNX Runtime on CPU running the Q/DQ model: a TensorRT INT8 engine fuses the same "
    "Q/DQ pairs into its kernels and may round differently."
)


def triage_int8(
    source: Path,
    module_map: ModuleMap,
    calibration_feeds: Sequence[Feed],
    feeds: Sequence[Feed],
    references: Sequence[Mapping[str, np.ndarray]],
    tolerances: Mapping[str, Tolerance],
    curve: LayerCurve | None,
    already_excluded: Sequence[str] = (),
    settings: OrtSettings | None = None,
    method: CalibrationMethod = "percentile",
) -> Int8Triage:
    """Search the nodes of `source` (the FP32 model) to leave unquantized, judged on `feeds` against
    `references`; every candidate is calibrated on `calibration_feeds` (the precision stage's)."""
    import onnx

    proto = onnx.load(str(source), load_external_data=False)
    op_of = {node.name: node.op_type for node in proto.graph.node}
    with tempfile.TemporaryDirectory(prefix="int8_triage_") as workdir:
        cache = Path(workdir) / "calibration.json"

        def make(excluded: Sequence[str], target: Path) -> None:
            int8_qdq_onnx(
                source,
                target,
                calibration_feeds,
                exclude_nodes=excluded,
                method=method,
                calibration_cache=cache,
            )

        found = search(
            make,
            op_of,
            module_map,
            feeds,
            references,
            tolerances,
            curve,
            eligible=lambda node: op_of.get(node) in QUANTIZED_OPS,
            base=already_excluded,
            settings=settings,
            what="the INT8 triage model",
        )
    proposed = tuple(b.node for b in found.proposed)
    note = CPU_CAVEAT if found.fixed and not found.passed_before else ""
    if found.passed_before:
        note = "the INT8 model already passes on these samples; nothing to exclude"
    elif not found.fixed:
        note = (
            f"no set of the {found.groups} largest-jump modules' {'/'.join(QUANTIZED_OPS)} nodes brings "
            "every output within tolerance: the error is spread over the network, not one module's"
        )
    if found.base:
        note = f"{len(proposed) - len(found.base)} node(s) added to the {len(found.base)} the recipe excludes. {note}"
    quantizable = sum(op in QUANTIZED_OPS for op in op_of.values())
    return Int8Triage(
        tolerance_ratio_before=found.ratio_before,
        tolerance_ratio_after=found.ratio_after,
        fixed=found.fixed,
        excluded=found.proposed,
        modules=found.modules,
        quantizable_nodes=quantizable,
        candidates_tried=found.checks,
        samples=len(feeds),
        recipe_option=f"int8_exclude_nodes={proposed!r}",
        cli_option=f"-p int8_exclude_nodes={','.join(proposed)}",
        ort_option=f"nodes_to_exclude={list(proposed)!r}",
        polygraphy_option="--precision-constraints obey --layer-precisions "
        + " ".join(f"{n}:float32" for n in proposed),
        note=note.strip(),
    )
