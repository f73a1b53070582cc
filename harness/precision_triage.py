"""Reduced-precision triage, shared by FP16 and INT8: the smallest set of nodes found to leave at FP32
(FP16: keep in FP32; INT8: leave unquantized) that brings every output within the precision's tolerance.

Candidates are the mapped modules of the precision's layer curve (`harness.localize`), its first
divergence first, then by largest error jump; each is one group of ONNX nodes (only those the precision can change, `eligible`).
Greedy: groups are added in that order, each step checked by a real ONNX Runtime run of the model the
set makes (`make`), until every output passes. Then the set is reduced: each group is dropped if the
rest still passes, and each remaining group is bisected (halves, then nodes from either end, dropped
while the outputs still pass). The result is measured once more, with a model made from exactly the
proposed set.

Every check judges the outputs by the same streaming statistics as the compare stage, over the feeds
given: for a median or quantile tolerance those must be all the samples the stage compared, as a
statistic over the worst samples alone is not the one the gate judged.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from trt_harness.conversions.ort_session import OrtSettings, create_session
from trt_harness.harness.comparison import OutputAccumulator
from trt_harness.harness.localize import error_ratio
from trt_harness.models.recipe import Feed, Tolerance
from trt_harness.models.results.comparisons import OutputComparison
from trt_harness.models.results.localize import BlockedNode, LayerCurve, ModuleMap

MAX_GROUPS = 16  # greedy steps before giving up: each one converts and runs the model once
MAX_CHECKS = 60

# (the nodes to leave at FP32, where to write the model) -> writes the reduced-precision model
MakeModel = Callable[[Sequence[str], Path], None]


@dataclasses.dataclass(frozen=True)
class SearchOutcome:
    """What the search found; each precision's wrapper turns it into its typed result."""

    ratio_before: float  # worst output's error over its tolerance with `base` only
    ratio_after: float  # with `proposed`, measured on a model made from exactly that set
    passed_before: bool
    fixed: bool  # every output within tolerance with `proposed`
    base: tuple[str, ...]  # the set given to start from (the recipe's, the range check's)
    proposed: tuple[BlockedNode, ...]  # base plus the nodes found, in the order given
    modules: tuple[str, ...]  # the deepest mapped modules of the nodes found (not base), as found
    checks: int  # models made and run
    groups: int  # candidate modules in the greedy order


def tolerance_ratio(result: OutputComparison, elementwise: float) -> float:
    """How far an output is from passing, as its check judges it: 1 is the tolerance.

    An `elemwise` check judges the worst element: `elementwise` (|cand - ref| / (atol + rtol |ref|), the max
    over samples); the statistic checks (Polygraphy's semantics: abs OR rel) the smaller of
    statistic(abs err) / atol and statistic(rel err) / rtol. Median and quantile values are the
    comparison's histogram estimates (within 12.5%); pass/fail stays the exact decision."""
    tol = result.tolerance
    if result.nonfinite_mismatches:
        return math.inf
    stats = {
        "max": (result.max_abs_err, result.max_rel_err),
        "mean": (result.mean_abs_err, result.mean_rel_err),
        "median": (result.median_abs_err, result.median_rel_err),
        "quantile": (result.quantile_abs_err, result.quantile_rel_err),
    }
    if tol.check not in stats:
        return elementwise
    abs_err, rel_err = stats[tol.check]
    if abs_err is None or rel_err is None:
        return 0.0  # nothing finite compared

    def over(value: float, limit: float) -> float:
        return value / limit if limit > 0 else (math.inf if value > 0 else 0.0)

    return min(over(abs_err, tol.atol), over(rel_err, tol.rtol))


class Checker:
    """Runs the model of one set of nodes (left at FP32) on the feeds; passed, and the worst output's
    tolerance ratio."""

    def __init__(
        self,
        make: MakeModel,
        feeds: Sequence[Feed],
        references: Sequence[Mapping[str, np.ndarray]],
        tolerances: Mapping[str, Tolerance],
        workdir: Path,
        settings: OrtSettings,
        what: str,
    ) -> None:
        self.make, self.feeds, self.references, self.tolerances = make, feeds, references, tolerances
        self.workdir, self.settings, self.what = workdir, settings, what
        self.checks = 0

    def __call__(self, kept: Sequence[str]) -> tuple[bool, float]:
        self.checks += 1
        target = self.workdir / "triage.onnx"
        self.make(kept, target)
        session = create_session(target, self.settings, self.what)
        names = [o.name for o in session.get_outputs() if o.name in self.tolerances]
        accumulators = {
            n: OutputAccumulator(n, "torch", "onnxrt", self.tolerances[n], worst_k=1) for n in names
        }
        elementwise = dict.fromkeys(names, 0.0)
        for feed, reference in zip(self.feeds, self.references, strict=True):
            for name, value in zip(names, session.run(names, dict(feed)), strict=True):
                ref = np.asarray(reference[name], dtype=np.float32)
                cand = np.asarray(value, dtype=np.float32)
                accumulators[name].update(ref, cand)
                if ref.shape == cand.shape and self.tolerances[name].check == "elemwise":
                    elementwise[name] = max(elementwise[name], error_ratio(ref, cand, self.tolerances[name]))
        results = {n: a.result() for n, a in accumulators.items()}
        worst = max((tolerance_ratio(results[n], elementwise[n]) for n in names), default=0.0)
        return all(r.passed for r in results.values()), worst


def _bisect(group: list[str], passes: Callable[[list[str]], bool]) -> list[str]:
    """A smaller run of `group` (nodes in graph order) that still passes with the rest of the set:
    halved while one half passes, then trimmed node by node from either end (the cause is usually a
    run of nodes in the middle of a module)."""
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


def candidate_groups(
    curve: LayerCurve | None,
    module_map: ModuleMap,
    eligible: Callable[[str], bool],
    taken: set[str],
) -> list[list[str]]:
    """The nodes of the curve's modules, one group per module: the first divergence, then by largest
    error jump; a node is in the first group that holds it, and only nodes `eligible` (that the
    precision changes) count."""
    by_path = module_map.by_path()
    ranked = sorted(curve.layers, key=lambda layer: -layer.jump) if curve else []
    # the first divergence first: where the error leaves its tolerance while its inputs are within
    # theirs is the likeliest cause, even where a worst-element jump further on is larger (INT8: the
    # head's few huge elements outgrow the median error a cause upstream sets off)
    first = curve.divergence if curve else None
    if first is not None:
        ranked = [first, *(layer for layer in ranked if layer.module != first.module)]
    groups: list[list[str]] = []
    taken = set(taken)
    for layer in ranked:
        if layer.jump <= 0 and layer.passed:
            continue
        boundary = by_path.get(layer.module)
        nodes = [n for n in (boundary.nodes if boundary else ()) if eligible(n) and n not in taken]
        if nodes:
            groups.append(nodes)
            taken.update(nodes)
        if len(groups) == MAX_GROUPS:
            break
    return groups


def search(
    make: MakeModel,
    op_of: Mapping[str, str],
    module_map: ModuleMap,
    feeds: Sequence[Feed],
    references: Sequence[Mapping[str, np.ndarray]],
    tolerances: Mapping[str, Tolerance],
    curve: LayerCurve | None,
    *,
    eligible: Callable[[str], bool] | None = None,
    base: Sequence[str] = (),
    settings: OrtSettings | None = None,
    what: str = "the triage model",
) -> SearchOutcome:
    """Search the nodes (named in `op_of`, the FP32 model's node -> op type) to leave at FP32."""
    base = [n for n in base if n in op_of]
    allowed = eligible or (lambda node: node in op_of)
    groups = candidate_groups(curve, module_map, lambda n: n in op_of and allowed(n), set(base))

    def flat(selection: Sequence[Sequence[str]]) -> list[str]:
        return base + [n for g in selection for n in g]

    with tempfile.TemporaryDirectory(prefix="precision_triage_") as workdir:
        check = Checker(make, feeds, references, tolerances, Path(workdir), settings or OrtSettings(), what)
        passed, before = check(base)
        chosen: list[list[str]] = []
        fixed = passed
        for group in groups:
            if fixed or check.checks >= MAX_CHECKS:
                break
            chosen.append(group)
            fixed, _ = check(flat(chosen))
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
        proposed = flat(chosen)  # unfixed: the whole greedy set, measured for the report
        after_passed, after = check(proposed)  # re-validated: a model made from exactly this set
    module_of = deepest_module(module_map)
    found = [n for n in proposed if n not in base]
    return SearchOutcome(
        ratio_before=before if math.isfinite(before) else math.inf,
        ratio_after=after,
        passed_before=passed,
        fixed=after_passed,
        base=tuple(base),
        proposed=tuple(BlockedNode(n, op_of[n], module_of.get(n)) for n in proposed),
        modules=tuple(dict.fromkeys(m for n in found if (m := module_of.get(n)) is not None)),
        checks=check.checks,
        groups=len(groups),
    )


def deepest_module(module_map: ModuleMap) -> dict[str, str]:
    """ONNX node -> the deepest mapped module covering it."""
    owner: dict[str, str] = {}
    for boundary in sorted(module_map.modules, key=lambda b: b.depth):
        for node in boundary.nodes:
            owner[node] = boundary.path  # deeper modules come later and win
    return owner
