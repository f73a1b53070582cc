"""FP16 triage: the smallest set of nodes found to keep in FP32 that brings every output within the FP16
tolerance (the search is `harness.precision_triage`'s; here the FP16 model it makes and the result).

ONNX Runtime's CPU provider has FP16 kernels for few ops (Cast, Concat, Slice, Transpose, ...); it runs
the others in FP32 between casts it inserts and merges, so on CPU an intermediate is rounded to FP16
only where it passes through such a kernel. The set found is what ORT needs; an FP16 TensorRT engine
rounds every tensor and may need more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from trt_harness.conversions.ort_session import OrtSettings
from trt_harness.conversions.precision.fp16 import fp16_onnx
from trt_harness.harness.precision_triage import MAX_CHECKS, MAX_GROUPS, search
from trt_harness.models.recipe import Feed, Tolerance
from trt_harness.models.results.localize import Fp16Triage, LayerCurve, ModuleMap

__all__ = ["CPU_CAVEAT", "MAX_CHECKS", "MAX_GROUPS", "triage_fp16"]

CPU_CAVEAT = (
    "Validated with ONNX Runtime on CPU, which computes FP16 arithmetic that has no FP16 kernel there in "
    "FP32 (only tensors between FP16 kernels are FP16): a TensorRT FP16 engine may need more of these "
    "modules' nodes in FP32."
)


def triage_fp16(
    source: Path,
    module_map: ModuleMap,
    feeds: Sequence[Feed],
    references: Sequence[Mapping[str, np.ndarray]],
    tolerances: Mapping[str, Tolerance],
    curve: LayerCurve | None,
    already_blocked: Sequence[str] = (),
    settings: OrtSettings | None = None,
) -> Fp16Triage:
    """Search the nodes of `source` (the FP32 model) to keep in FP32, on `feeds` against `references`."""
    import onnx

    proto = onnx.load(str(source), load_external_data=False)
    op_of = {node.name: node.op_type for node in proto.graph.node}

    def make(block_list: Sequence[str], target: Path) -> None:
        fp16_onnx(source, target, block_list=block_list)

    found = search(
        make,
        op_of,
        module_map,
        feeds,
        references,
        tolerances,
        curve,
        base=already_blocked,
        settings=settings,
        what="the FP16 triage model",
    )
    proposed = [b.node for b in found.proposed]
    extra = len(proposed) - len(found.base)
    # what ORT's CPU provider runs is not what an FP16 engine runs: see the module doc
    note = CPU_CAVEAT if found.fixed and not found.passed_before else ""
    if found.passed_before:
        note = "the FP16 model already passes on these samples; nothing to add"
    elif not found.fixed:
        note = f"no set of the {found.groups} largest-jump modules brings every output within tolerance"
    return Fp16Triage(
        tolerance_ratio_before=found.ratio_before,
        tolerance_ratio_after=found.ratio_after,
        fixed=found.fixed,
        block_list=found.proposed,
        candidates_tried=found.checks,
        recipe_option=f"fp16_block_list={tuple(proposed)!r}",
        polygraphy_option="--precision-constraints obey --layer-precisions "
        + " ".join(f"{n}:float32" for n in proposed),
        note=" ".join(
            t
            for t in (
                f"{extra} node(s) added to the {len(found.base)} the range check keeps."
                if found.base
                else "",
                note,
            )
            if t
        ),
    )
