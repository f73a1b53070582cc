"""Compare two runs (`harness diff A B`) and gate a run on an earlier one (`harness convert --baseline`).

Pure logic over typed results: nothing is run and no output file is read, only the statistics both
`results.json` recorded. The rules (see `models.results.diff` for the values they fill):

- Tensor comparisons are matched by (output, reference, candidate, sample set, precision). Every
  statistic's change is kept; the gated ones are the quantile (p99 by default) and max abs error: a
  gated statistic regressed when B's value is above `factor` x A's *and* above the absolute `floor`.
- A comparison (or a gated detection pair) that passed in A and fails in B is a new failure; a
  gated detection pair regressed when an image whose detections agreed in A disagrees in B.
- A run whose verdict went from pass to fail is a regression even when no comparison says why
  (e.g. a stage failed): it names B's verdict.
- Environment differences (python, platform, GPUs, package versions, each runner's device and
  providers) and setting differences (recipe, parameters, weights, overrides, tolerances, samples)
  are listed as what could explain the changes; stage and runner times are listed, never gated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trt_harness.models.core.errors import ExitCode, UsageError
from trt_harness.models.recipe import Recipe, Tolerance
from trt_harness.models.results.comparisons import SAMPLES, OutputComparison
from trt_harness.models.results.detections import DetectionPair
from trt_harness.models.results.diff import (
    DEFAULT_FACTOR,
    DEFAULT_FLOOR,
    Better,
    ChangeStatus,
    ComparisonChange,
    DetectionChange,
    RunDiff,
    RunSide,
    StatChange,
    StatKind,
    TimingChange,
    ValueChange,
    check_gate,
)
from trt_harness.models.results.document import UNFINISHED, Environment, Results, Verdict, load_results
from trt_harness.models.results.stages import CompareDetails, RunDetails, SamplesDetails

Key = tuple[str, str, str, str, str]  # output, reference, candidate, sample set, precision


def _passed(side: OutputComparison | DetectionPair | None) -> bool | None:
    return None if side is None else side.passed


def _verdict_change(before: bool | None, after: bool | None, regressed: bool) -> ChangeStatus | None:
    """How a comparison's pass/fail moved from A to B (None on either side: absent there); None when
    it passed in both and did not regress, which the statistics then describe."""
    if before is None:
        return "added"
    if after is None:
        return "removed"
    if before and not after:
        return "new failure"
    if regressed:
        return "regressed"
    if not before:
        return "fixed" if after else "still failing"
    return None


@dataclass(frozen=True)
class _Stat:
    stat: str
    label: str
    kind: StatKind = "error"
    better: Better = "lower"
    gated: bool = False


def _stats(tolerance: Tolerance) -> tuple[_Stat, ...]:
    q = f"p{100 * tolerance.quantile:g}"
    return (
        _Stat("quantile_abs_err", f"{q} abs error", gated=True),
        _Stat("max_abs_err", "max abs error", gated=True),
        _Stat("mean_abs_err", "mean abs error"),
        _Stat("median_abs_err", "median abs error"),
        _Stat("rmse", "RMSE"),
        _Stat("cosine_similarity", "cosine similarity", "similarity", "higher"),
        _Stat("out_of_tolerance", "out of tolerance", "count"),
        _Stat("nonfinite_mismatches", "non-finite mismatches", "count"),
        _Stat("max_rel_err", "max rel error"),
        _Stat("mean_rel_err", "mean rel error"),
        _Stat("quantile_rel_err", f"{q} rel error"),
        _Stat("argmax_agreement", "argmax agreement", "fraction", "higher"),
        _Stat("samples", "samples", "count", "neither"),
    )


@dataclass(frozen=True)
class _Entry:
    """One run's record of one comparison key: compared (with statistics) or an output missing."""

    passed: bool
    reason: str
    comparison: OutputComparison | None = None


def _entries(results: Results) -> dict[Key, _Entry]:
    details = results.details(CompareDetails)
    if details is None:
        return {}
    found: dict[Key, _Entry] = {}
    for c in details.comparisons:
        key = (c.output, c.ref_backend, c.cand_backend, c.sample_set, c.precision)
        found[key] = _Entry(c.passed, c.reason, c)
    for m in details.missing:
        key = (m.output, m.ref_backend, m.cand_backend, m.sample_set, m.precision)
        found[key] = _Entry(False, m.reason)
    return found


def _precision(pair: str, precision: str) -> str:
    """ ", fp16" after a pair whose runners' names do not say their precision already (FP32 is the norm)."""
    return "" if precision == "fp32" or precision.lower() in pair.lower() else f", {precision}"


def _num(x: float | None) -> str:
    """3 significant digits, in scientific notation outside [0.01, 1000): 0.0972, 8.34e-04."""
    if x is None:
        return "none"
    return f"{x:.3g}" if x == 0 or 0.01 <= abs(x) < 1000 else f"{x:.2e}"


class _Differ:
    def __init__(self, a: Results, b: Results, factor: float, floor: float) -> None:
        self.a, self.b, self.factor, self.floor = a, b, factor, floor
        runners: dict[str, str] = {}
        for results in (a, b):
            run = results.details(RunDetails)
            runners.update({n: r.display_name for n, r in run.runners.items()} if run else {})
        self.names = runners

    def where(self, output: str, ref: str, cand: str, sample_set: str, precision: str) -> str:
        at = "" if sample_set == SAMPLES else f" at {sample_set}"
        pair = f"{self.names.get(ref, ref)} vs {self.names.get(cand, cand)}"
        return f"{output} ({pair}{at}{_precision(pair, precision)})"

    def stat_change(self, spec: _Stat, before: Any, after: Any) -> StatChange:
        before = None if before is None else float(before)
        after = None if after is None else float(after)
        regressed = (
            spec.gated
            and before is not None
            and after is not None
            and after > self.factor * before
            and after > self.floor
        )
        return StatChange(spec.stat, spec.label, before, after, spec.kind, spec.better, spec.gated, regressed)

    def growth(self, where: str, grown: list[StatChange]) -> str:
        """One sentence for the gated statistics of one comparison that grew beyond the factor."""
        parts = [
            f"{s.label} {_num(s.before)} -> {_num(s.after)} "
            + (f"(x{s.ratio:.3g})" if s.ratio is not None else "(from 0)")
            for s in grown
        ]
        return f"{where}: {', '.join(parts)}: beyond x{self.factor:g} and above the floor {self.floor:g}"

    # --- tensor comparisons ---------------------------------------------------------------------

    def comparison(self, key: Key, before: _Entry | None, after: _Entry | None) -> ComparisonChange:
        where = self.where(*key)
        ca = before.comparison if before else None
        cb = after.comparison if after else None
        tolerance = (cb or ca).tolerance if (cb or ca) else Tolerance()
        stats = []
        if ca is not None or cb is not None:
            for spec in _stats(tolerance):
                va = getattr(ca, spec.stat) if ca is not None else None
                vb = getattr(cb, spec.stat) if cb is not None else None
                if spec.stat == "argmax_agreement" and va is None and vb is None:
                    continue
                stats.append(self.stat_change(spec, va, vb))
        grown = [s for s in stats if s.regressed]
        regressions = [self.growth(where, grown)] if grown else []
        status = _verdict_change(_passed(before), _passed(after), bool(regressions))
        if status == "new failure":
            regressions.insert(0, f"{where}: passed in A, fails in B: {after.reason}")
        if status is None:
            if not any(s.changed for s in stats) and not (ca and cb and ca.tolerance != cb.tolerance):
                status = "unchanged"
            else:
                gated = [s for s in stats if s.gated]
                improved = not any(s.worse for s in gated) and any(s.better_now for s in gated)
                status = "improved" if improved else "within factor"
        if status in ("added", "removed"):
            regressions = []  # nothing to compare with: shown, never gated
        return ComparisonChange(
            output=key[0],
            ref_backend=key[1],
            cand_backend=key[2],
            sample_set=key[3],
            precision=key[4],
            status=status,
            passed_before=before.passed if before else None,
            passed_after=after.passed if after else None,
            reason_before=before.reason if before else "",
            reason_after=after.reason if after else "",
            tolerance_before=ca.tolerance if ca else None,
            tolerance_after=cb.tolerance if cb else None,
            stats=tuple(stats),
            regressions=tuple(regressions),
        )

    def comparisons(self) -> tuple[ComparisonChange, ...]:
        ea, eb = _entries(self.a), _entries(self.b)
        keys = [*eb, *(k for k in ea if k not in eb)]
        return tuple(self.comparison(k, ea.get(k), eb.get(k)) for k in keys)

    # --- detections -------------------------------------------------------------------------------

    def detection(self, output: str, pa: DetectionPair | None, pb: DetectionPair | None) -> DetectionChange:
        pair = pb or pa
        assert pair is not None
        names = f"{self.names.get(pair.ref_backend, pair.ref_backend)} vs "
        names += self.names.get(pair.cand_backend, pair.cand_backend)
        where = f"detections of {output} ({names}{_precision(names, pair.precision)})"
        specs = (
            _Stat("failing_images", "images disagreeing", "count"),
            _Stat("mean_matched_fraction", "mean matched fraction", "fraction", "higher"),
            _Stat("min_matched_fraction", "min matched fraction", "fraction", "higher"),
            _Stat("mean_iou", "mean IoU of matches", "similarity", "higher"),
            _Stat("max_score_delta", "max |score delta|", "error"),
            _Stat("images", "images", "count", "neither"),
        )
        va, vb = _detection_values(pa), _detection_values(pb)
        stats = tuple(self.stat_change(s, va.get(s.stat), vb.get(s.stat)) for s in specs)
        passed_a = [i.passed for i in pa.images] if pa else []
        passed_b = [i.passed for i in pb.images] if pb else []
        common = range(min(len(passed_a), len(passed_b)))
        newly = tuple(i for i in common if passed_a[i] and not passed_b[i])
        fixed = tuple(i for i in common if not passed_a[i] and passed_b[i])
        gated = pair.gated
        regressions = []
        status = _verdict_change(_passed(pa), _passed(pb), bool(newly and gated))
        if status is None:
            status = "within factor" if any(s.changed for s in stats) else "unchanged"
        if gated and pa is not None and pb is not None and (newly or status == "new failure"):
            shown = ", ".join(str(i) for i in newly[:10]) + (" ..." if len(newly) > 10 else "")
            regressions.append(
                f"{where}: {len(newly)} image(s) whose detections agreed in A disagree in B "
                f"({'image' if len(newly) == 1 else 'images'} {shown})"
                if newly
                else f"{where}: agreed in A, disagree in B"
            )
        return DetectionChange(
            output=output,
            ref_backend=pair.ref_backend,
            cand_backend=pair.cand_backend,
            precision=pair.precision,
            gated=gated,
            status=status,
            passed_before=pa.passed if pa else None,
            passed_after=pb.passed if pb else None,
            images_before=len(passed_a),
            images_after=len(passed_b),
            stats=stats,
            newly_failing_images=newly,
            fixed_images=fixed,
            regressions=tuple(regressions),
        )

    def detections(self) -> tuple[DetectionChange, ...]:
        reports = [
            d.detections if d else None
            for d in (self.a.details(CompareDetails), self.b.details(CompareDetails))
        ]
        ra, rb = reports
        if ra is None and rb is None:
            return ()
        output = (rb or ra).output  # type: ignore[union-attr]
        pa = {(p.ref_backend, p.cand_backend, p.precision): p for p in (ra.pairs if ra else ())}
        pb = {(p.ref_backend, p.cand_backend, p.precision): p for p in (rb.pairs if rb else ())}
        keys = [*pb, *(k for k in pa if k not in pb)]
        return tuple(self.detection(output, pa.get(k), pb.get(k)) for k in keys)

    # --- times, environment, settings -------------------------------------------------------------

    def stages(self) -> tuple[TimingChange, ...]:
        sa = {s.name: s for s in self.a.stages}
        sb = {s.name: s for s in self.b.stages}
        names = [*sb, *(n for n in sa if n not in sb)]

        def seconds(record: Any) -> float | None:
            return record.duration_s if record is not None and record.status != "skipped" else None

        return tuple(
            TimingChange(
                n,
                seconds(sa.get(n)),
                seconds(sb.get(n)),
                sa[n].status if n in sa else "",
                sb[n].status if n in sb else "",
            )
            for n in names
        )

    def runner_times(self) -> tuple[TimingChange, ...]:
        ra, rb = (r.details(RunDetails) for r in (self.a, self.b))
        runners_a = dict(ra.runners) if ra else {}
        runners_b = dict(rb.runners) if rb else {}
        names = [*runners_b, *(n for n in runners_a if n not in runners_b)]
        return tuple(
            TimingChange(
                n,
                runners_a[n].median_latency_s if n in runners_a and runners_a[n].executed else None,
                runners_b[n].median_latency_s if n in runners_b and runners_b[n].executed else None,
                runners_a[n].state if n in runners_a else "",
                runners_b[n].state if n in runners_b else "",
            )
            for n in names
        )

    def environment(self) -> tuple[ValueChange, ...]:
        changes = _changed(_environment_facts(self.a.environment), _environment_facts(self.b.environment))
        ra, rb = (r.details(RunDetails) for r in (self.a, self.b))
        runners_a = dict(ra.runners) if ra else {}
        runners_b = dict(rb.runners) if rb else {}
        for name in [*runners_b, *(n for n in runners_a if n not in runners_b)]:
            shown = self.names.get(name, name)
            da = dict(runners_a[name].device) if name in runners_a else {}
            db = dict(runners_b[name].device) if name in runners_b else {}
            if not da or not db:  # a runner that did not execute records no device: not a change
                continue
            changes += _changed(
                {f"{shown} {k}": v for k, v in da.items()}, {f"{shown} {k}": v for k, v in db.items()}
            )
        return tuple(changes)

    def settings(self) -> tuple[ValueChange, ...]:
        return tuple(_changed(_settings(self.a), _settings(self.b)))

    def run_regressions(self, explained: bool) -> tuple[str, ...]:
        """The run's pass-to-fail, when no comparison or detection pair (`explained`) says why."""
        a, b = self.a.verdict, self.b.verdict
        if a.passed and not b.passed and not explained:
            return (f"the run's verdict went from PASS to {b.status} (exit {b.exit_code}): {b.summary}",)
        return ()


def _detection_values(pair: DetectionPair | None) -> dict[str, float | None]:
    if pair is None:
        return {}
    matches = [i.match for i in pair.images]
    fractions = [m.matched_fraction if m is not None else 0.0 for m in matches]
    ious = [m.mean_iou for m in matches if m is not None and m.mean_iou is not None]
    deltas = [m.max_score_delta for m in matches if m is not None and m.max_score_delta is not None]
    return {
        "failing_images": float(len(pair.failing_images)),
        "mean_matched_fraction": sum(fractions) / len(fractions) if fractions else None,
        "min_matched_fraction": min(fractions) if fractions else None,
        "mean_iou": sum(ious) / len(ious) if ious else None,
        "max_score_delta": max(deltas) if deltas else None,
        "images": float(len(pair.images)),
    }


def _environment_facts(env: Environment) -> dict[str, str]:
    gpus = "; ".join(f"{g.name} (sm {g.compute_capability})" for g in env.gpus) or "none"
    facts = {
        "python": env.python,
        "platform": env.platform,
        "machine": env.machine,
        "CPUs": str(env.processor_count),
        "GPUs": gpus,
    }
    facts.update({f"package {name}": version for name, version in sorted(env.packages.items())})
    return facts


def tolerance_text(t: Tolerance) -> str:
    text = f"{t.check} atol {t.atol:g} rtol {t.rtol:g}"
    if t.check == "quantile":
        text += f" q {t.quantile:g}"
    if t.min_argmax_agreement is not None:
        text += f" argmax >= {t.min_argmax_agreement:g}"
    return text


def _settings(results: Results) -> dict[str, str]:
    recipe = results.recipe
    facts = {
        "recipe": recipe.name,
        "recipe parameters": ", ".join(f"{k}={v}" for k, v in sorted(recipe.params.items())) or "none",
        "weights": recipe.weights or "the recipe's own",
        "tolerance overrides": " ".join(results.overrides.given) or "none",
        "default tolerance": tolerance_text(recipe.default_tolerance),
        "precisions": ", ".join(recipe.precisions),
    }
    facts.update({f"tolerance of {o}": tolerance_text(t) for o, t in recipe.tolerances.items()})
    facts.update({f"{p} tolerance": tolerance_text(t) for p, t in recipe.precision_tolerances.items()})
    samples = results.details(SamplesDetails)
    for name, sample_set in samples.sets.items() if samples else ():
        facts[f"samples in set {name}"] = str(sample_set.samples)
    return facts


def _changed(before: Mapping[str, str], after: Mapping[str, str]) -> list[ValueChange]:
    keys = [*before, *(k for k in after if k not in before)]
    return [ValueChange(k, before.get(k), after.get(k)) for k in keys if before.get(k) != after.get(k)]


def _side(results: Results, source: str) -> RunSide:
    v = results.verdict
    return RunSide(
        source, results.recipe.name, results.run_id, results.created_unix, v.exit_code, v.status, v.summary
    )


def diff_runs(
    a: Results,
    b: Results,
    *,
    factor: float = DEFAULT_FACTOR,
    floor: float = DEFAULT_FLOOR,
    sources: tuple[str, str] = ("A", "B"),
) -> RunDiff:
    """Everything that changed from run `a` (the earlier one, the baseline) to run `b`."""
    check_gate(factor, floor)
    differ = _Differ(a, b, factor, floor)
    comparisons, detections = differ.comparisons(), differ.detections()
    explained = any(c.regressed for c in (*comparisons, *detections))
    return RunDiff(
        a=_side(a, sources[0]),
        b=_side(b, sources[1]),
        factor=factor,
        floor=floor,
        comparisons=comparisons,
        detections=detections,
        run_regressions=differ.run_regressions(explained),
        stages=differ.stages(),
        runners=differ.runner_times(),
        environment=differ.environment(),
        settings=differ.settings(),
        runner_names=differ.names,
    )


def load_run(path: Path, what: str = "") -> Results:
    """A finished run's results (a run folder or its results.json); a usage error naming the file."""
    results = load_results(path)
    if results.verdict.status == UNFINISHED.status:
        prefix = f"{what} " if what else ""
        raise UsageError(f"{prefix}{path}: {results.verdict.summary}")
    return results


# --- the baseline gate -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """An earlier run a run is gated on, and how much growth of a gated error it allows."""

    results: Results
    source: str
    factor: float = DEFAULT_FACTOR
    floor: float = DEFAULT_FLOOR


def load_baseline(path: Path, recipe: str, factor: float, floor: float) -> Baseline:
    """The baseline run for a run of `recipe`: finished, of the same recipe, with comparisons."""
    check_gate(factor, floor, "--baseline-factor", "--baseline-floor")
    results = load_run(path, "--baseline")
    if results.recipe.name != recipe:
        raise UsageError(
            f"--baseline {path} is a run of recipe '{results.recipe.name}', not '{recipe}'; "
            "give a run of the same recipe"
        )
    details = results.details(CompareDetails)
    if details is None or not details.comparisons:
        raise UsageError(
            f"--baseline {path} compared no outputs ({results.verdict.summary}); give a run that got "
            "as far as the compare stage"
        )
    return Baseline(results, str(path), factor, floor)


def baseline_of_recipe(
    recipe: Recipe, path: Path | None, factor: float | None, floor: float | None
) -> Baseline | None:
    """The baseline of a run of `recipe` (`harness convert --baseline`), with the factor and floor
    given, else the recipe's. None: no baseline gate."""
    if path is None:
        return None
    factor = recipe.baseline_factor if factor is None else factor
    floor = recipe.baseline_floor if floor is None else floor
    return load_baseline(path, recipe.name, factor, floor)


def baseline_of_run(
    results: Results, path: Path | None, factor: float | None, floor: float | None
) -> Baseline | None:
    """The baseline to re-judge a saved run against (`harness compare`): `path`, else the one the run
    was gated on; the factor and floor given, else those it was gated with. None: no baseline gate."""
    recorded = results.baseline
    if path is None and recorded is None:
        return None
    factor = factor if factor is not None else (recorded.factor if recorded else DEFAULT_FACTOR)
    floor = floor if floor is not None else (recorded.floor if recorded else DEFAULT_FLOOR)
    if path is not None:
        return load_baseline(path, results.recipe.name, factor, floor)
    assert recorded is not None
    source = Path(recorded.a.source)
    again = "this run was gated on that baseline: give it again with --baseline DIR"
    try:
        baseline = load_baseline(source, results.recipe.name, factor, floor)
    except UsageError as e:
        raise UsageError(f"{e} ({again})") from None
    if baseline.results.run_id != recorded.a.run_id:
        raise UsageError(
            f"--baseline {source} now holds another run (run id {baseline.results.run_id[:12]}, not "
            f"{recorded.a.run_id[:12]}): {again}"
        )
    return baseline


def judge_against(results: Results, baseline: Baseline) -> Results:
    """`results` with its comparison against `baseline` recorded and its verdict gated on it."""
    diff = diff_runs(
        baseline.results,
        results,
        factor=baseline.factor,
        floor=baseline.floor,
        sources=(baseline.source, "this run"),
    )
    return dataclasses.replace(results, baseline=diff, verdict=gated_verdict(results.verdict, diff))


def gated_verdict(verdict: Verdict, diff: RunDiff) -> Verdict:
    """The run's own verdict, failed (exit 1) when it regressed against the baseline of `diff`."""
    against = f"baseline {diff.a.source}"
    # the run's own pass-to-fail is already its verdict; the gate adds what the baseline says
    regressions = [r for c in (*diff.comparisons, *diff.detections) for r in c.regressions]
    if not regressions:
        return dataclasses.replace(
            verdict, summary=f"{verdict.summary}; no regression vs {against} (factor {diff.factor:g})"
        )
    shown = "; ".join(regressions[:3]) + (f" and {len(regressions) - 3} more" if len(regressions) > 3 else "")
    problem = f"{len(regressions)} regression(s) vs {against} beyond x{diff.factor:g}: {shown}"
    if verdict.passed:
        code = ExitCode.ACCURACY_FAILED
        return Verdict(int(code), code.name, problem)
    return dataclasses.replace(verdict, summary=f"{verdict.summary}; also {problem}")
