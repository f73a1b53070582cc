"""Small synthetic detector runs for the report: outputs and input images saved in a run directory,
compared and judged by the real compare stage and verdict (no model is run).

Each image holds a few well-separated boxes of a YOLOv5-layout output (N, anchors, 5 + classes)
among low-objectness background rows; a runner is simulated by perturbing the reference output.
(The same synthetic data as tests/harness/detection_runs.py, which predates the typed results.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from models.detection import DetectionTolerance
from models.recipe import DetectionSpec, TensorSpec, Tolerance
from models.results.document import Results
from models.results.recipe import RecipeRecord
from models.results.stages import IOOrder
from tests.reports.results_fixtures import judged_run, runner_record

IMAGE_SIZE = 96
OUTPUT = "output0"
INPUT = "images"
# Hostile names: the report must escape them wherever it shows a class.
CLASS_NAMES = ("person", "<script>alert('cls')</script>", "car & <b>bus</b>")
BACKGROUND_ROWS = 20
DISPLAY = {"torch": "Torch", "onnxrt": "ORT", "onnxrt-fp16": "ORT FP16", "onnxrt-int8": "ORT INT8"}
TOLERANCE = DetectionTolerance(min_matched_fraction=0.95, min_mean_iou=0.95, max_score_delta=0.01)

# A perturbation takes (image index, that image's rows (anchors, 5 + classes)) and changes the rows in place.
Perturbation = Callable[[int, np.ndarray], None]


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


def detector_recipe(gated_precisions: tuple[str, ...] = ("fp32",), **spec: object) -> RecipeRecord:
    """A recipe whose tensor tolerance is loose, so only the detection gate judges box movements."""
    return RecipeRecord(
        name="tiny-detector",
        description="synthetic YOLOv5-layout outputs",
        inputs=(TensorSpec(INPUT, ("batch", 3, IMAGE_SIZE, IMAGE_SIZE)),),
        output_names=(OUTPUT,),
        default_tolerance=Tolerance(atol=100.0, rtol=0.0),
        precisions=("fp32", "fp16"),
        precision_tolerances={"fp16": Tolerance(atol=100.0, rtol=0.0)},
        detection=DetectionSpec(
            output=OUTPUT,
            layout="yolov5",
            class_names=CLASS_NAMES,
            tolerance=TOLERANCE,
            gated_precisions=gated_precisions,
            **spec,  # type: ignore[arg-type]
        ),
    )


def input_feeds(samples: int, batch: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(123)
    return [
        {INPUT: rng.uniform(0, 1, (batch, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)}
        for _ in range(samples)
    ]


def write_run(
    run_dir: Path,
    outputs: Mapping[str, Sequence[np.ndarray]],
    recipe: RecipeRecord | None = None,
    *,
    batch: int = 1,
) -> Results:
    """Save `outputs` ({runner: one output per sample}) and the input images into `run_dir`, compare
    them with the compare stage and judge them: the results such a run saves."""
    recipe = recipe or detector_recipe()
    samples = len(next(iter(outputs.values())))
    io = IOOrder((INPUT,), (OUTPUT,))
    runners = {name: runner_record(name, DISPLAY[name], samples, io) for name in outputs}
    per_sample = {name: [{OUTPUT: o} for o in arrays] for name, arrays in outputs.items()}
    return judged_run(run_dir, recipe, input_feeds(samples, batch), per_sample, runners)
