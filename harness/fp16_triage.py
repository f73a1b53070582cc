"""FP16 triage: the smallest set of nodes found to keep in FP32 that brings every output within the FP16
tolerance.

Candidates are the mapped modules of the FP16 layer curve (`harness.localize`), largest error jump
first; each is one group of ONNX nodes. Greedy: groups are added in that order, each step checked
by a real ONNX Runtime run of the FP16 model the block list makes, until every output passes.
Then the set is reduced: each group is dropped if the rest still passes, and each remaining group is
bisected (halves, then nodes from either end, dropped while the outputs still pass). The result is
measured once more, with a model made from exactly the proposed list.

ONNX Runtime's CPU provider has FP16 kernels for few ops (Cast, Concat, Slice, Transpose, ...); it runs
the others in FP32 between casts it inserts and merges, so on CPU an intermediate is rounded to FP16
only where it passes through such a kernel. The set found is what ORT needs; an FP16 TensorRT engine
rounds every tensor and may need more.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from trt_harness.conversions.ort_session import OrtSettings, create_session
from trt_harness.conversions.precision.fp16 import fp16_onnx
from trt_harness.harness.comparison import OutputAccumulator
from trt_harness.harness.localize import error_ratio
from trt_harness.models.recipe import Feed, Tolerance
from trt_harness.models.results.localize import BlockedNode, Fp16Triage, LayerCurve, ModuleMap

CPU_CAVEAT = (
    "Validated with ONNX Runtime on CPU, which computes FP16 arithmetic that has no FP16 kernel there in "
    "FP32 (only tensors between FP16 kernels are FP16): a TensorRT FP16 engine may need more of these "
    "modules' nodes in FP32."
)
MAX_GROUPS = 16  # greedy steps before giving up: each one converts and runs the model once
MAX_CHECKS = 60


class _Checker:
    """Runs the FP16 model of a block list on the feeds; the worst output error over its tolerance."""

    def __init__(
        self,
        source: Path,
        feeds: Sequence[Feed],
        references: Sequence[Mapping[str, np.ndarray]],
        tolerances: Mapping[str, Tolerance],
        workdir: Path,
        settings: OrtSettings,
    ) -> None:
        self.settings = settings
        self.source, self.feeds, self.references, self.tolerances = source, feeds, references, tolerances
        self.workdir = workdir
        self.checks = 0

    def __call__(self, block_list: Sequence[str]) -> tuple[bool, float]:
        self.checks += 1
        target = self.workdir / "triage.fp16.onnx"
        fp16_onnx(self.source, target, block_list=block_list)
        session = create_session(target, self.settings, "the FP16 triage model")
        names = [o.name for o in session.get_outputs() if o.name in self.tolerances]
        accumulators = {
            n: OutputAccumulator(n, "torch", "onnxrt", self.tolerances[n], worst_k=1) for n in names
        }
        worst = 0.0
        for feed, reference in zip(self.feeds, self.references, strict=True):
            for name, value in zip(names, session.run(names, dict(feed)), strict=True):
                ref = np.asarray(reference[name], dtype=np.float32)
                cand = np.asarray(value, dtype=np.float32)
                accumulators[name].update(ref, cand)
                if ref.shape == cand.shape:
                    worst = max(worst, error_ratio(ref, cand, self.tolerances[name]))
        return all(a.result().passed for a in accumulators.values()), worst


def _bisect(group: list[str], passes: Callable[[list[str]], bool]) -> list[str]:
    """A smaller run of `group` (nodes in graph order) that still passes with the rest of the list:
    halved while one half passes, then trimmed node by node from either end (an overflow is
    usually a run of nodes in the middle of a module)."""
    while len(group) > 1:
        half = len(group) // 2
        if passes(group[:half]):
            group = group[:half]
        elif passes(group[half:]):
            group = group[half:]
        else:
            break
    while len(group) > 1 and passes(group[1:]):
        group = group[1:]
    while len(group) > 1 and passes(group[:-1]):
        group = group[:-1]
    return group


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
    base = [n for n in already_blocked if n in op_of]
    by_path = module_map.by_path()
    ranked = sorted(curve.layers, key=lambda layer: -layer.jump) if curve else []
    groups: list[list[str]] = []
    taken: set[str] = set(base)
    for layer in ranked:
        if layer.jump <= 0 and layer.passed:
            continue
        nodes = [n for n in by_path[layer.module].nodes if n in op_of and n not in taken]
        if nodes:
            groups.append(nodes)
            taken.update(nodes)
        if len(groups) == MAX_GROUPS:
            break

    with tempfile.TemporaryDirectory(prefix="fp16_triage_") as workdir:
        check = _Checker(source, feeds, references, tolerances, Path(workdir), settings or OrtSettings())
        passed, before = check(base)
        chosen: list[list[str]] = []
        fixed = passed
        for group in groups:
            if fixed or check.checks >= MAX_CHECKS:
                break
            chosen.append(group)
            fixed, _ = check(base + [n for g in chosen for n in g])

        def flat(selection: Sequence[Sequence[str]]) -> list[str]:
            return base + [n for g in selection for n in g]

        if fixed and chosen:
            for group in list(chosen[:-1]):  # the last one was needed: without it the greedy went on
                rest = [g for g in chosen if g is not group]
                if check.checks < MAX_CHECKS and check(flat(rest))[0]:
                    chosen = rest
            for i, group in enumerate(list(chosen)):

                def passes(part: list[str], i: int = i) -> bool:
                    trial = [*chosen[:i], part, *chosen[i + 1 :]]
                    return check.checks < MAX_CHECKS and check(flat(trial))[0]

                chosen[i] = _bisect(group, passes)
        proposed = flat(chosen)
        after_passed, after = check(proposed)  # re-validated: a model made from exactly this list
        tried = check.checks
    module_of = _deepest_module(module_map)
    extra = [n for n in proposed if n not in base]
    # what ORT's CPU provider runs is not what an FP16 engine runs: see the module doc
    note = CPU_CAVEAT if after_passed and not passed else ""
    if passed:
        note = "the FP16 model already passes on these samples; nothing to add"
    elif not after_passed:
        note = f"no set of the {len(groups)} largest-jump modules brings every output within tolerance"
    return Fp16Triage(
        tolerance_ratio_before=before if math.isfinite(before) else math.inf,
        tolerance_ratio_after=after,
        fixed=after_passed,
        block_list=tuple(BlockedNode(n, op_of[n], module_of.get(n)) for n in proposed),
        candidates_tried=tried,
        recipe_option=f"fp16_block_list={tuple(proposed)!r}",
        polygraphy_option="--precision-constraints obey --layer-precisions "
        + " ".join(f"{n}:float32" for n in proposed),
        note=" ".join(
            t
            for t in (
                f"{len(extra)} node(s) added to the {len(base)} the range check keeps." if base else "",
                note,
            )
            if t
        ),
    )


def _deepest_module(module_map: ModuleMap) -> dict[str, str]:
    owner: dict[str, str] = {}
    for boundary in sorted(module_map.modules, key=lambda b: b.depth):
        for node in boundary.nodes:
            owner[node] = boundary.path  # deeper modules come later and win
    return owner
