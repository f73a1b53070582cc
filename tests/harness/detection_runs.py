"""Small synthetic detector runs: a real run folder (sample files, per-sample outputs of each runner,
results.json) judged by the real compare stage and verdict through `harness.pipeline.rejudge`, the
path `harness compare` takes (no model is run).

Each image holds a few well-separated boxes of a YOLOv5-layout output (N, anchors, 5 + classes)
among low-objectness background rows; a backend is simulated by perturbing the reference output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from trt_harness.harness.backends.base import display_name
from trt_harness.harness.environment import environment
from trt_harness.harness.pipeline import rejudge
from trt_harness.harness.sample_files import sample_file, write_sample
from trt_harness.harness.stages import samples as samples_stage
from trt_harness.harness.stages.base import RunConfig, StageInput
from trt_harness.harness.stages.run import OUTPUTS, outputs_artifact_name
from trt_harness.harness.verdict import verdict_for
from trt_harness.models.core.artifacts import Artifact
from trt_harness.models.detection import DetectionTolerance
from trt_harness.models.recipe import DetectionSpec, Recipe, TensorSpec, Tolerance
from trt_harness.models.results.comparisons import SAMPLES
from trt_harness.models.results.document import Results, save_results
from trt_harness.models.results.recipe import RecipeRecord, ToleranceOverrides
from trt_harness.models.results.stages import RunDetails, RunnerRecord, StageRecord

IMAGE_SIZE = 96
OUTPUT = "output0"
INPUT = "images"
# Hostile names: the report must escape them wherever it shows a class.
CLASS_NAMES = ("person", "<script>alert('cls')</script>", "car & <b>bus</b>")
BACKGROUND_ROWS = 20
TOLERANCE = DetectionTolerance(min_matched_fraction=0.95, min_mean_iou=0.95, max_score_delta=0.01)

# A perturbation takes (image index, that image's rows (anchors, 5 + classes)) and changes the rows in place.
Perturbation = Callable[[int, np.ndarray], None]
# One sample of a runner: the detection output alone, or every output by name.
SampleOutputs = np.ndarray | Mapping[str, np.ndarray]


def image_rows(index: int) -> np.ndarray:
    """The reference output rows of image `index`: 3 boxes 24-36 px wide, one per class, apart from each other."""
    rng = np.random.default_rng(index)
    rows = np.zeros((3 + BACKGROUND_ROWS, 5 + len(CLASS_NAMES)), dtype=np.float32)
    for k, (cx, cy) in enumerate(((20.0, 24.0), (70.0, 30.0), (45.0, 72.0))):
        rows[k, :4] = (
            cx + rng.uniform(-3, 3),
            cy + rng.uniform(-3, 3),
            rng.uniform(24, 36),
            rng.uniform(24, 36),
        )
        rows[k, 4] = rng.uniform(0.7, 0.95)
        rows[k, 5 + k] = rng.uniform(0.8, 0.99)
    background = rows[3:]
    background[:, :2] = rng.uniform(10, IMAGE_SIZE - 10, (BACKGROUND_ROWS, 2))
    background[:, 2:4] = rng.uniform(8, 20, (BACKGROUND_ROWS, 2))
    background[:, 4] = 0.01
    background[:, 5:] = 0.5
    return rows


def shift_boxes(pixels: float, images: Sequence[int] | None = None) -> Perturbation:
    """Move every box of the given images (all when None) right by `pixels`."""

    def perturb(index: int, rows: np.ndarray) -> None:
        if images is None or index in images:
            rows[:, 0] += pixels

    return perturb


def nudge_scores(delta: float) -> Perturbation:
    def perturb(_index: int, rows: np.ndarray) -> None:
        rows[:, 4] = np.clip(rows[:, 4] + delta, 0, 1)

    return perturb


def outputs_per_sample(samples: int, batch: int, perturb: Perturbation | None = None) -> list[np.ndarray]:
    """One (batch, anchors, 5 + classes) output per sample; image indices run over all samples."""
    batches = []
    for sample in range(samples):
        images = []
        for position in range(batch):
            index = sample * batch + position
            rows = image_rows(index)
            if perturb is not None:
                perturb(index, rows)
            images.append(rows)
        batches.append(np.stack(images))
    return batches


def detector_recipe(gated_precisions: tuple[str, ...] = ("fp32",), **spec: Any) -> Recipe:
    """A recipe whose tensor tolerance is loose, so only the detection gate judges box movements."""
    return Recipe(
        name="tiny-detector",
        description="synthetic YOLOv5-layout outputs",
        build_model=lambda _weights: None,  # type: ignore[arg-type,return-value]
        sample_inputs=lambda: [],
        inputs=(TensorSpec(INPUT, ("batch", 3, IMAGE_SIZE, IMAGE_SIZE)),),
        output_names=(OUTPUT,),
        # loose on purpose (only the detection gate judges boxes), so no output could fail it: say so
        default_tolerance=Tolerance(atol=100.0, rtol=0.0, accept_no_signal=True),
        precision_tolerances={"fp16": Tolerance(atol=100.0, rtol=0.0, accept_no_signal=True)},
        detection=DetectionSpec(
            output=OUTPUT,
            layout="yolov5",
            class_names=CLASS_NAMES,
            tolerance=TOLERANCE,
            gated_precisions=gated_precisions,
            **spec,
        ),
    )


def input_feeds(samples: int, batch: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(123)
    return [
        {INPUT: rng.uniform(0, 1, (batch, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)}
        for _ in range(samples)
    ]


def samples_stage_record(run_dir: Path, recipe: Recipe) -> StageRecord:
    """What the samples stage writes for `recipe`'s sample inputs, written by that stage itself."""
    record = RecipeRecord.of(recipe, None)
    inp = StageInput(run_dir, record, ToleranceOverrides(), record.precisions, {}, RunConfig(recipe, run_dir))
    out = samples_stage.STAGE.run(inp)
    return StageRecord("samples", "ok", 0.1, out.reason, dict(out.artifacts), out.details)


def runner_record(runner: str, samples: int) -> RunnerRecord:
    backend, _, precision = runner.partition("-")
    return RunnerRecord(
        backend=backend,
        precision=precision or "fp32",
        display_name=display_name(runner),
        reference=backend == "torch",
        state="executed",
        outputs=outputs_artifact_name(runner),
        sample_sets=(SAMPLES,),
        samples=samples,
    )


def write_outputs(run_dir: Path, runner: str, per_sample: Sequence[SampleOutputs]) -> Artifact:
    """`runner`'s outputs as the run stage saves them: one file per sample under outputs/<runner>/<set>/."""
    folder = run_dir / OUTPUTS / runner / SAMPLES
    for index, outputs in enumerate(per_sample):
        tensors = dict(outputs) if isinstance(outputs, Mapping) else {OUTPUT: outputs}
        write_sample(sample_file(folder, index), tensors)
    return Artifact.of_folder(run_dir, f"{OUTPUTS}/{runner}")


def write_run(
    run_dir: Path,
    outputs: Mapping[str, Sequence[SampleOutputs]],
    recipe: Recipe | None = None,
    *,
    batch: int = 1,
) -> Results:
    """Save `outputs` ({runner: one output per sample}) and the inputs as a run folder in `run_dir`,
    then re-judge it as `harness compare` does: the compare stage, the verdict, results.json, reports."""
    recipe = recipe or detector_recipe()
    samples = len(next(iter(outputs.values())))
    feeds = input_feeds(samples, batch)
    recipe = dataclasses.replace(recipe, sample_inputs=lambda: feeds)
    run_dir.mkdir(parents=True, exist_ok=True)
    samples_record = samples_stage_record(run_dir, recipe)
    artifacts = {outputs_artifact_name(r): write_outputs(run_dir, r, per) for r, per in outputs.items()}
    runners = {runner: runner_record(runner, samples) for runner in outputs}
    run = StageRecord("run", "ok", 1.0, None, artifacts, RunDetails(runners))
    # every run records each stage; rejudge replaces this one with its comparison
    compare = StageRecord("compare", "skipped", reason="not judged yet: rejudged below")
    stages = (samples_record, run, compare)
    results = Results(
        RecipeRecord.of(recipe, None), environment(), stages, verdict_for(stages), ToleranceOverrides()
    )
    save_results(results, run_dir)
    return rejudge(run_dir, ToleranceOverrides())
