"""`harness calibrate <recipe>`: measure each output's FP32 noise floor and propose tolerances from it.

The reference is the recipe's Torch model on CPU. Against it, on the recipe's own samples, calibrate
runs every variant that may legitimately change the numbers without anything being wrong:

- Torch on CPU again (`repeats` - 1 times): run-to-run nondeterminism;
- the final ONNX model in ONNX Runtime on CPU at intra-op thread counts 1, 2 and ORT's default, each
  at every graph-optimization level (disable, basic, extended, all): reordered reductions, fusions;
- ONNX Runtime's CUDA provider and Torch on CUDA, where present; otherwise listed as not measured
  with the reason. TensorRT is never run by calibrate (its error is the run's verdict, not noise).

For each output the proposal keeps today's tolerance's form (check, quantile, argmax) and scales it:
- `elemwise` (|err| <= atol + rtol*|ref|): `usage` is the worst element's |err| / (atol + rtol*|ref|)
  under today's values; both are multiplied by `headroom` x the largest usage over the variants;
- `median` / `quantile`: atol is `headroom` x the largest such statistic of the abs error over the
  variants, rtol the same of the relative error;
then rounded up to one significant digit (so at most 2x more). With the default headroom of 4 an
error 10x the worst measured one therefore fails. An output no variant changed keeps today's values.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from trt_harness.conversions.ort_session import CPU_ONLY, OrtSettings, create_session
from trt_harness.harness.backends.torch_backend import outputs_by_name
from trt_harness.harness.comparison import OutputAccumulator
from trt_harness.harness.environment import environment
from trt_harness.harness.sample_files import SampleFolder
from trt_harness.models.core.errors import HarnessError, UsageError
from trt_harness.models.recipe import ORT_OPTIMIZATIONS, Recipe, Tolerance
from trt_harness.models.results.calibration import Calibration, NotMeasured, ProposedTolerance, VariantNoise
from trt_harness.models.results.comparisons import SAMPLES
from trt_harness.models.results.document import Results
from trt_harness.models.results.recipe import RecipeRecord
from trt_harness.models.results.stages import SamplesDetails

DEFAULT_HEADROOM = 4.0
DEFAULT_REPEATS = 3
THREADS: tuple[int | None, ...] = (1, 2, None)  # None: ORT's default pool (one thread per core)
REFERENCE = "Torch CPU"

Outputs = list[dict[str, np.ndarray]]  # per sample, output name -> array


@dataclass
class Measured:
    """What the variants gave: noise per (variant, output), what was not measured, and (when asked
    for) each variant's outputs, for tests that plant errors into them."""

    reference: Outputs
    noise: list[VariantNoise] = field(default_factory=list)
    not_measured: list[NotMeasured] = field(default_factory=list)
    outputs: dict[str, Outputs] = field(default_factory=dict)


def _torch_outputs(
    model: Any, recipe: Recipe, feeds: Sequence[Mapping[str, np.ndarray]], device: str
) -> Outputs:
    import torch  # heavy: only when calibrating

    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    # the reference is FP32: no TF32 convolutions on CUDA, as the Torch backend does
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        model = model.to(device).eval()
        found = []
        for feed in feeds:
            args = [
                torch.from_numpy(np.ascontiguousarray(feed[name])).to(device) for name in recipe.input_names
            ]
            with torch.inference_mode():
                named = outputs_by_name(model(*args), recipe.output_names)
            found.append({k: v.float().cpu().numpy() for k, v in named.items()})
        return found
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def _ort_outputs(
    onnx_path: Path, settings: OrtSettings, feeds: Sequence[Mapping[str, np.ndarray]]
) -> Outputs:
    session = create_session(onnx_path, settings, f"the ONNX model {onnx_path}")
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(names, dict(feed)), strict=True)) for feed in feeds]


def _usage(ref: np.ndarray, cand: np.ndarray, tolerance: Tolerance) -> float:
    r = ref.astype(np.float64)
    err = np.abs(cand.astype(np.float64) - r)
    finite = np.isfinite(err)
    if not finite.all():
        return math.inf
    allowed = tolerance.atol + tolerance.rtol * np.abs(r)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(err == 0, 0.0, err / allowed)
    return float(ratio.max()) if ratio.size else 0.0


def noise_of(
    variant: str,
    output: str,
    reference: Outputs,
    candidate: Outputs,
    tolerance: Tolerance,
    class_axis: int | None,
) -> VariantNoise:
    """The statistics of one variant's output against the reference, judged by the harness's own
    accumulator at `tolerance` (whose quantile the quantile statistics are taken at)."""
    acc = OutputAccumulator(output, "torch", variant, tolerance, class_axis=class_axis)
    usage = 0.0
    for ref, cand in zip(reference, candidate, strict=True):
        if output not in cand:
            raise UsageError(
                f"{variant} has no output '{output}' (it gave {sorted(cand)}); check the recipe's output_names"
            )
        acc.update(ref[output], cand[output])
        usage = max(usage, _usage(ref[output], cand[output], tolerance))
    c = acc.result()

    def value(x: float | None) -> float:
        return math.inf if x is None else x

    return VariantNoise(
        variant=variant,
        output=output,
        samples=c.samples,
        elements=c.elements,
        max_abs_err=value(c.max_abs_err),
        quantile_abs_err=value(c.quantile_abs_err),
        median_abs_err=value(c.median_abs_err),
        max_rel_err=value(c.max_rel_err),
        quantile_rel_err=value(c.quantile_rel_err),
        median_rel_err=value(c.median_rel_err),
        usage=usage,
        argmax_agreement=c.argmax_agreement,
        passes_today=c.passed,
    )


def ort_variants() -> list[tuple[str, OrtSettings]]:
    return [
        (f"ORT CPU threads={threads or 'default'} opt={level}", OrtSettings(level, CPU_ONLY, threads))
        for threads in THREADS
        for level in ORT_OPTIMIZATIONS
    ]


def measure(
    recipe: Recipe,
    onnx_path: Path,
    feeds: Sequence[Mapping[str, np.ndarray]],
    model_factory: Callable[[], Any],
    *,
    repeats: int = DEFAULT_REPEATS,
    keep_outputs: bool = False,
) -> Measured:
    """Run every variant on `feeds` and measure it against Torch on CPU (see the module doc)."""
    import onnxruntime  # heavy: only when calibrating
    import torch

    if repeats < 1:
        raise UsageError(f"--repeats {repeats}: need at least 1 run of the reference")
    record = RecipeRecord.of(recipe, None)
    reference = _torch_outputs(model_factory(), recipe, feeds, "cpu")
    measured = Measured(reference)

    def add(variant: str, outputs: Outputs) -> None:
        for output in recipe.output_names:
            measured.noise.append(
                noise_of(
                    variant,
                    output,
                    reference,
                    outputs,
                    record.tolerance_for(output),
                    recipe.class_axes.get(output),
                )
            )
        if keep_outputs:
            measured.outputs[variant] = outputs

    for k in range(2, repeats + 1):
        add(f"Torch CPU repeat {k}", _torch_outputs(model_factory(), recipe, feeds, "cpu"))
    for name, settings in ort_variants():
        add(name, _ort_outputs(onnx_path, settings, feeds))
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        for level in ORT_OPTIMIZATIONS:
            settings = OrtSettings(level, ("CUDAExecutionProvider", "CPUExecutionProvider"))
            add(f"ORT CUDA opt={level}", _ort_outputs(onnx_path, settings, feeds))
    else:
        measured.not_measured.append(
            NotMeasured(
                "ORT CUDA", f"this onnxruntime {onnxruntime.__version__} has no CUDAExecutionProvider"
            )
        )
    if torch.cuda.is_available():
        add("Torch CUDA", _torch_outputs(model_factory(), recipe, feeds, "cuda"))
    else:
        measured.not_measured.append(
            NotMeasured(
                "Torch CUDA vs CPU", "no CUDA device visible to torch (torch.cuda.is_available() is False)"
            )
        )
    measured.not_measured.append(
        NotMeasured("TensorRT", "calibrate does not run TensorRT: its deviation is what the tolerance judges")
    )
    return measured


def round_up(x: float) -> float:
    """`x` rounded up to one significant digit: 3.2e-5 -> 4e-5, 1e-4 -> 1e-4."""
    if x <= 0 or not math.isfinite(x):
        return x
    exponent = math.floor(math.log10(x))
    digit = math.ceil(round(x / 10.0**exponent, 9))
    if digit >= 10:
        digit, exponent = 1, exponent + 1
    return float(f"{digit}e{exponent}")


def _n(x: float) -> str:
    return f"{x:.2g}" if x == 0 or 1e-2 <= abs(x) < 1e3 else f"{x:.1e}"


def propose_one(
    output: str, today: Tolerance, noise: Sequence[VariantNoise], headroom: float
) -> ProposedTolerance:
    """The proposal for one output from its measurements (see the module doc for the rule)."""
    if not noise:
        return ProposedTolerance(output, today, today, "", "no variant was measured: kept as it is", False)
    agreement = [n.argmax_agreement for n in noise if n.argmax_agreement is not None]
    argmax_note = f"; argmax agreement >= {min(agreement):.0%} in every variant" if agreement else ""
    worst_abs = max(noise, key=lambda n: n.max_abs_err)
    if today.check == "elemwise":
        worst = max(noise, key=lambda n: n.usage)
        if worst.usage == 0:
            reason = (
                f"every one of {len(noise)} variants matched the reference exactly: no basis to change it"
            )
            return ProposedTolerance(output, today, today, "", reason + argmax_note, False)
        scale = headroom * worst.usage
        proposed = replace(today, atol=round_up(today.atol * scale), rtol=round_up(today.rtol * scale))
        reason = (
            f"max |err| {_n(worst_abs.max_abs_err)} ({worst_abs.variant}); worst element at "
            f"{_n(worst.usage)} x today's atol + rtol*|ref| ({worst.variant}); x{headroom:g}, rounded up"
        )
    else:
        stat = "median" if today.check == "median" else f"p{100 * today.quantile:g}"
        pick = (lambda n: n.median_abs_err) if today.check == "median" else (lambda n: n.quantile_abs_err)
        pick_rel = (lambda n: n.median_rel_err) if today.check == "median" else (lambda n: n.quantile_rel_err)
        worst = max(noise, key=pick)
        worst_rel = max(noise, key=pick_rel)
        if pick(worst) == 0 and pick_rel(worst_rel) == 0:
            reason = f"{stat} |err| 0 in all {len(noise)} variants: no basis to change it"
            return ProposedTolerance(output, today, today, "", reason + argmax_note, False)
        proposed = replace(
            today, atol=round_up(headroom * pick(worst)), rtol=round_up(headroom * pick_rel(worst_rel))
        )
        reason = (
            f"{stat} |err| {_n(pick(worst))} ({worst.variant}), {stat} rel err {_n(pick_rel(worst_rel))} "
            f"({worst_rel.variant}); max |err| {_n(worst_abs.max_abs_err)}; x{headroom:g}, rounded up"
        )
    if today.min_argmax_agreement is not None and agreement and min(agreement) < today.min_argmax_agreement:
        argmax_note += (
            f" (below today's min_argmax_agreement {today.min_argmax_agreement:g}: noise flips classes)"
        )
    return ProposedTolerance(output, today, proposed, worst.variant, reason + argmax_note, True)


def propose(recipe: Recipe, measured: Measured, headroom: float = DEFAULT_HEADROOM) -> Calibration:
    if not (math.isfinite(headroom) and headroom >= 1):
        raise UsageError(f"--headroom {headroom:g}: must be a finite number >= 1")
    record = RecipeRecord.of(recipe, None)
    proposals = tuple(
        propose_one(o, record.tolerance_for(o), [n for n in measured.noise if n.output == o], headroom)
        for o in recipe.output_names
    )
    variants = sorted({n.variant for n in measured.noise})
    return Calibration(
        recipe=recipe.name,
        params=dict(recipe.params),
        headroom=headroom,
        reference=REFERENCE,
        measured=tuple(measured.noise),
        not_measured=tuple(measured.not_measured),
        proposals=proposals,
        environment=environment(),
        created_unix=time.time(),
        note=(
            f"FP32 only, {len(variants)} variants on the recipe's samples; precision_tolerances (FP16/INT8) "
            "and detection criteria are not calibrated"
        ),
    )


def tolerance_source(t: Tolerance) -> str:
    """`Tolerance(...)` as a recipe writes it: the fields that differ from the defaults."""
    defaults = Tolerance()
    parts = [f"atol={t.atol:g}", f"rtol={t.rtol:g}"]
    if t.check != defaults.check:
        parts.append(f"check={t.check!r}")
    if t.check == "quantile" and t.quantile != defaults.quantile:
        parts.append(f"quantile={t.quantile:g}")
    if t.min_argmax_agreement is not None:
        parts.append(f"min_argmax_agreement={t.min_argmax_agreement:g}")
    return f"Tolerance({', '.join(parts)})"


def snippet(calibration: Calibration) -> str:
    """The proposal as a recipe snippet: `tolerances={...}` with the measured reason beside each number."""
    env = calibration.environment
    versions = ", ".join(f"{k} {env.packages[k]}" for k in ("torch", "onnxruntime") if k in env.packages)
    params = ", ".join(f"{k}={v}" for k, v in sorted(calibration.params.items())) or "defaults"
    stamp = time.strftime("%Y-%m-%d", time.gmtime(calibration.created_unix))
    lines = [
        f"# harness calibrate {calibration.recipe} ({params}), {stamp}, {env.platform}, {versions}:",
        f"# noise floor of each output against {calibration.reference}; {calibration.note}.",
        f"# Each number is {calibration.headroom:g}x the worst measured deviation, rounded up to one digit.",
    ]
    lines += [f"# not measured: {m.variant}: {m.reason}" for m in calibration.not_measured]
    lines.append("tolerances={")
    for p in calibration.proposals:
        lines.append(f"    # {p.output}: today {tolerance_source(p.today)}")
        lines += [f"    #   {part}" for part in _wrap(p.reason)]
        lines.append(f"    {p.output!r}: {tolerance_source(p.proposed)},")
    lines.append("},")
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int = 96) -> Iterable[str]:
    line = ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            yield line
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        yield line


def run_inputs(results: Results, run_dir: Path) -> tuple[Path, list[dict[str, np.ndarray]]]:
    """The final ONNX model and the recipe's samples of a finished run folder, checked by their hashes."""
    artifacts = {name: a for s in results.stages for name, a in s.artifacts.items()}
    onnx = artifacts.get("onnx_final") or artifacts.get("onnx")
    samples = results.details(SamplesDetails)
    if onnx is None or samples is None or SAMPLES not in samples.sets or "samples" not in artifacts:
        raise HarnessError(
            f"{run_dir}: the run made no ONNX model to calibrate ({results.verdict.summary}); "
            "fix that with `harness convert` first"
        )
    folder = SampleFolder(run_dir, artifacts["samples"], samples.sets[SAMPLES].folder)
    return onnx.verified(run_dir), [dict(feed) for feed in folder]
