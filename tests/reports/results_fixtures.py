"""Typed results (`models.results.document.Results`) for report tests: the saved YOLOv5 run, stages of
other real runs put into it, and runs built here from synthetic outputs.

The synthetic runs write their outputs as the run stage does (one file per sample) and are judged by
the real compare stage and verdict, so they have exactly the shape the pipeline writes.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from trt_harness.harness.pipeline import STAGES
from trt_harness.harness.sample_files import sample_file, write_sample
from trt_harness.harness.stages import compare as compare_stage
from trt_harness.harness.stages.base import StageInput
from trt_harness.harness.verdict import verdict_for
from trt_harness.models.core.artifacts import Artifact
from trt_harness.models.core.serde import from_json
from trt_harness.models.recipe import ShapeRange, TensorSpec, Tolerance
from trt_harness.models.results.comparisons import SAMPLES
from trt_harness.models.results.document import Results, load_results
from trt_harness.models.results.recipe import RecipeRecord, ToleranceOverrides
from trt_harness.models.results.stages import (
    BuildDetails,
    EngineRecord,
    Finding,
    IOOrder,
    PrecisionDetails,
    RunDetails,
    RunnerRecord,
    SamplesDetails,
    SampleSet,
    ScanDetails,
    StageRecord,
    TensorRange,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"
# A real `harness convert yolov5 -p image_size=320` run; see tests/fixtures/make_report_sections.py
YOLOV5_RESULTS = FIXTURES / "results_yolov5.json"
# Stages of real runs, trimmed by tests/fixtures/make_report_sections.py
SECTIONS_RESULTS = FIXTURES / "results_sections.json"
INJECTED_NAME = "<img src=x onerror=alert(1)>"
INJECTED_REASON = "pass crashed: <script>alert('reason')</script> & more"
SPATIAL_OUTPUT = "depth"
# No space to break at: the page must wrap it rather than grow sideways.
LONG_NAME = (
    "model.heads.classification.final_projection.logits_before_softmax_for_all_eighty_coco_classes"
    ".after_temperature_scaling_and_label_smoothing_calibrated_on_the_validation_split"
)
BACKENDS = ("torch", "onnxrt", "tensorrt")
DISPLAY = {"torch": "Torch", "onnxrt": "ORT", "tensorrt": "TensorRT"}
BUILD_FAILURE = f"TensorRT could not parse node {INJECTED_NAME}"
BUILD_MESSAGE = f"unsupported op in node '{INJECTED_NAME}'"


def yolov5_results() -> Results:
    return load_results(YOLOV5_RESULTS)


# --- editing typed results -----------------------------------------------------------------------


def stage(results: Results, name: str) -> StageRecord:
    found = results.stage(name)
    assert found is not None, f"no stage {name!r} in the results"
    return found


def with_stages(results: Results, *records: StageRecord) -> Results:
    """`results` with `records` in place of the stages of the same name (or added), in pipeline order."""
    by_name = {s.name: s for s in results.stages}
    by_name.update({r.name: r for r in records})
    stages = tuple(by_name[s.name] for s in STAGES if s.name in by_name)
    return dataclasses.replace(results, stages=stages)


def replace_stage(results: Results, name: str, **changes: Any) -> Results:
    return with_stages(results, dataclasses.replace(stage(results, name), **changes))


def replace_details(results: Results, name: str, **changes: Any) -> Results:
    record = stage(results, name)
    assert record.details is not None, f"stage {name!r} recorded no details"
    return with_stages(
        results, dataclasses.replace(record, details=dataclasses.replace(record.details, **changes))
    )


def details(results: Results, name: str) -> Any:
    found = stage(results, name).details
    assert found is not None, f"stage {name!r} recorded no details"
    return found


def rejudged(results: Results) -> Results:
    """`results` with the verdict the pipeline would give its stages."""
    return dataclasses.replace(results, verdict=verdict_for(results.stages))


# --- stages of other real runs -------------------------------------------------------------------


def _section_stages(run: str) -> tuple[StageRecord, ...]:
    sections = json.loads(SECTIONS_RESULTS.read_text())
    return from_json(tuple[StageRecord, ...], sections[run]["stages"], f"{SECTIONS_RESULTS.name}:{run}")


def precision_results() -> Results:
    """The saved YOLOv5 results with the scan-to-build stages of a real `yolov5 --precision fp32 fp16 int8`
    run: FP16 and INT8 variants, the FP16 range check (nothing flagged) and an engine per precision."""
    return with_stages(yolov5_results(), *_section_stages("precision_run"))


def scan_results() -> Results:
    """The saved YOLOv5 results with the scan and export stages of a real MVS run (findings at many call
    sites, every one replaced or kept by the recipe's replacements) and its skipped precision stage."""
    return with_stages(yolov5_results(), *_section_stages("scan_run"))


# --- runs judged by the real compare stage ----------------------------------------------------------

Outputs = Sequence[Mapping[str, np.ndarray]]  # one {output name: array} per sample


def runner_record(name: str, display: str, samples: int, io_order: IOOrder | None = None) -> RunnerRecord:
    backend, _, precision = name.partition("-")
    return RunnerRecord(
        backend=backend,
        precision=precision or "fp32",
        display_name=display,
        reference=name == "torch",
        state="executed",
        outputs=f"outputs_{name}",
        sample_sets=(SAMPLES,),
        samples=samples,
        io_order=io_order,
        io_source="returned order" if name == "torch" else "session (run)",
        median_latency_s=0.01,
        inference_s=0.01 * samples,
    )


def judged_run(
    run_dir: Path,
    recipe: RecipeRecord,
    feeds: Sequence[Mapping[str, np.ndarray]],
    outputs: Mapping[str, Outputs],
    runners: Mapping[str, RunnerRecord],
    base: Results | None = None,
) -> Results:
    """Write `feeds` and each runner's `outputs` into `run_dir` as the samples and run stages do, then
    compare them with the compare stage and judge them: the results a run of `recipe` would save."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for index, feed in enumerate(feeds):
        write_sample(sample_file(run_dir / "samples" / SAMPLES, index), feed)
    shapes = tuple({k: tuple(v.shape) for k, v in feed.items()} for feed in feeds)
    samples = StageRecord(
        "samples",
        "ok",
        0.1,
        artifacts={"samples": Artifact.of_folder(run_dir, "samples")},
        details=SamplesDetails({SAMPLES: SampleSet(f"samples/{SAMPLES}", len(feeds), shapes)}),
    )
    artifacts = {}
    for name, per_sample in outputs.items():
        for index, sample in enumerate(per_sample):
            write_sample(sample_file(run_dir / "outputs" / name / SAMPLES, index), sample)
        artifacts[f"outputs_{name}"] = Artifact.of_folder(run_dir, f"outputs/{name}")
    run = StageRecord("run", "ok", 1.0, artifacts=artifacts, details=RunDetails(dict(runners)))
    earlier = {"samples": samples, "run": run}
    out = compare_stage.STAGE.run(
        StageInput(run_dir, recipe, ToleranceOverrides(), recipe.precisions, earlier)
    )
    compare = StageRecord("compare", "ok", 0.5, out.reason, dict(out.artifacts), out.details)
    if base is None:
        environment = yolov5_results().environment
        stages = (samples, run, compare)
        return Results(recipe, environment, stages, verdict_for(stages))
    return rejudged(dataclasses.replace(with_stages(base, samples, run, compare), recipe=recipe))


def _synthetic_outputs(samples: int, seed: int = 0) -> dict[str, list[dict[str, np.ndarray]]]:
    """{backend: one {output: array} per sample}: logits (a long name), a depth map and an output with a
    hostile name.

    ORT is close to Torch on the logits and the depth map, and off by 1 % on the hostile-name output
    (so every pair fails there); TensorRT has a hot spot of error in the depth map, and returns logits
    and the hostile-name output swapped (same shape: an ordering mismatch).
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in BACKENDS}
    for _ in range(samples):
        logits = rng.normal(size=(2, 10)).astype(np.float32)
        hostile = rng.normal(size=(2, 10)).astype(np.float32)
        depth = rng.uniform(1, 10, size=(1, 1, 48, 80)).astype(np.float32)
        ort_depth = depth + rng.normal(scale=1e-6, size=depth.shape).astype(np.float32)
        trt_depth = ort_depth.copy()
        trt_depth[..., 10:20, 50:70] += rng.normal(scale=3e-3, size=(1, 1, 10, 20)).astype(np.float32)
        out["torch"].append({LONG_NAME: logits, SPATIAL_OUTPUT: depth, INJECTED_NAME: hostile})
        out["onnxrt"].append(
            {
                LONG_NAME: logits + np.float32(1e-7),
                SPATIAL_OUTPUT: ort_depth,
                INJECTED_NAME: hostile + rng.normal(scale=1e-2, size=hostile.shape).astype(np.float32),
            }
        )
        out["tensorrt"].append({LONG_NAME: hostile, SPATIAL_OUTPUT: trt_depth, INJECTED_NAME: logits})
    return out


def multi_output_results(samples: int = 3) -> Results:
    """A three-backend run of three outputs: a spatial one with heatmaps, a failure, an ordering mismatch;
    its surgery stage skipped with a hostile reason. The other stages are those of the saved YOLOv5 run."""
    base = yolov5_results()
    outputs = _synthetic_outputs(samples)
    output_names = tuple(outputs["torch"][0])
    tolerance = Tolerance(atol=1e-4, rtol=1e-3)
    image = TensorSpec("image", ("batch", 3, 48, 80))
    recipe = dataclasses.replace(
        base.recipe,
        name="multi-head",
        description="Synthetic three-output model: classifier logits, a depth map and a hostile output name",
        params={"heads": 3},
        inputs=(image,),
        output_names=output_names,
        default_tolerance=tolerance,
        tolerances={},
        class_axes={LONG_NAME: 1},
        spatial_axes={SPATIAL_OUTPUT: (-2, -1)},
        detection=None,
    )
    trt_order = (INJECTED_NAME, SPATIAL_OUTPUT, LONG_NAME)
    io_orders = {"torch": output_names, "onnxrt": output_names, "tensorrt": trt_order}
    runners = {
        name: dataclasses.replace(
            runner_record(name, DISPLAY[name], samples, IOOrder(("image",), io_orders[name])),
            median_latency_s=0.01 * (i + 1),
        )
        for i, name in enumerate(BACKENDS)
    }
    results = replace_details(base, "export", inputs=("image",), outputs=output_names)
    results = replace_stage(
        results, "surgery", status="skipped", reason=INJECTED_REASON, details=None, artifacts={}
    )
    build = details(results, "build")
    engine = dataclasses.replace(
        build.primary,
        network_io={"inputs": ("image",), "outputs": trt_order},
        profile={"image": ShapeRange((1, 3, 48, 80), (1, 3, 48, 80), (4, 3, 48, 80))},
    )
    results = replace_details(results, "build", engines={engine.precision: engine})
    rng = np.random.default_rng(1)
    feeds = [{"image": rng.uniform(0, 1, (2, 3, 48, 80)).astype(np.float32)} for _ in range(samples)]
    with tempfile.TemporaryDirectory(prefix="multi-head-run-") as run_dir:
        return judged_run(Path(run_dir), recipe, feeds, outputs, runners, base=results)


# --- stage failures and hostile variants of real stages ---------------------------------------------


def failed_build_results() -> Results:
    """The YOLOv5 run as the pipeline records TensorRT refusing the model: the build stage failed with
    the refusal in its details, and every stage after it skipped."""
    results = yolov5_results()
    build = details(results, "build")
    refusal = EngineRecord("fp32", built=False, phase="parse", messages=(BUILD_MESSAGE,))
    records = [
        dataclasses.replace(
            stage(results, "build"),
            status="failed",
            reason=BUILD_FAILURE,
            artifacts={},
            details=BuildDetails(build.flavor, {"fp32": refusal}),
        )
    ]
    records += [
        StageRecord(name, "skipped", reason="not run: stage 'build' failed") for name in ("run", "compare")
    ]
    return rejudged(with_stages(results, *records))


INJECTED_TENSOR = "<script>alert('tensor')</script>"
INJECTED_LOCATION = "models/<script>alert('site')</script>.py:12 in forward"
INT8_REFUSAL = ("INT8 is not supported on this platform", "builder returned no engine for <int8>")


def flagged_precision_results() -> Results:
    """`precision_results` where the FP16 range check flagged two tensors (one with a hostile name) and
    put their nodes on the FP16 variant's block list, and the builder refused INT8."""
    results = precision_results()
    precision: PrecisionDetails = details(results, "precision")
    overflow = TensorRange(
        INJECTED_TENSOR, "node_mul_682", "Mul", ("node_cat_15",), 1.2e5, 9600, 9600, 0, 0, 0, ("overflow",)
    )
    underflow = TensorRange(
        "var_norm", "node_div_7", "Div", ("node_sqrt_8",), 3e-3, 4800, 4800, 2400, 480, 0, ("underflow",)
    )
    block_list = ("node_mul_682", "node_cat_15", "node_div_7", "node_sqrt_8")
    assert precision.fp16_range is not None
    ranges = dataclasses.replace(
        precision.fp16_range,
        flagged=(overflow, underflow),
        top=(overflow, *precision.fp16_range.top[:-1]),
        block_list=block_list,
    )
    variants = dict(precision.variants)
    variants["fp16"] = dataclasses.replace(variants["fp16"], block_list=block_list)
    results = replace_details(results, "precision", variants=variants, fp16_range=ranges)
    build: BuildDetails = details(results, "build")
    flavor = build.flavor
    # as harness.stages.build records a later precision the builder refuses
    engines = dict(build.engines)
    engines["int8"] = EngineRecord(
        "int8",
        built=False,
        phase="engine build",
        messages=INT8_REFUSAL,
        reason=f"INT8 not supported by {flavor.display_name} {flavor.version}: "
        + "; ".join(INT8_REFUSAL[-3:]),
    )
    return replace_details(results, "build", engines=engines)


UNFIXED_OP = "torch.linalg.det"


def unfixed_scan_results() -> Results:
    """`scan_results` with a finding at a hostile location that no replacement fixes, and a requested
    replacement that saw no call during export."""
    results = scan_results()
    scan: ScanDetails = details(results, "scan")
    unfixed = Finding(
        op=UNFIXED_OP,
        reason="exports as ONNX Det, which TensorRT's ONNX parser does not support",
        replacement=None,
        location=INJECTED_LOCATION,
        count=2,
        fixed_by_recipe=False,
    )
    results = replace_details(results, "scan", findings=(*scan.findings, unfixed))
    return replace_details(results, "export", unused_replacements=("squeeze_static",))
