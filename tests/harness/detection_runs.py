"""Small synthetic detector runs: saved Polygraphy outputs and inputs in a run directory, compared and
judged by the real compare stage and verdict (no model is run).

Each image holds a few well-separated boxes of a YOLOv5-layout output (N, anchors, 5 + classes)
among low-objectness background rows; a backend is simulated by perturbing the reference output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.comparing import compare_run_outputs
from harness.pipeline import SAMPLES, artifact_key, outputs_file, recipe_to_json
from harness.tolerances import ToleranceOverrides
from harness.verdict import verdict_for
from models.detection import DetectionTolerance
from models.recipe import DetectionSpec, Recipe, TensorSpec, Tolerance

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
        default_tolerance=Tolerance(atol=100.0, rtol=0.0),
        precision_tolerances={"fp16": Tolerance(atol=100.0, rtol=0.0)},
        detection=DetectionSpec(
            output=OUTPUT,
            layout="yolov5",
            class_names=CLASS_NAMES,
            tolerance=TOLERANCE,
            gated_precisions=gated_precisions,
            **spec,
        ),
    )


def _save_outputs(path: Path, runner: str, per_sample: Sequence[np.ndarray]) -> None:
    from polygraphy.comparator.struct import IterationResult, RunResults

    results = RunResults()
    results.append((runner, [IterationResult({OUTPUT: output}, runner_name=runner) for output in per_sample]))
    results.save(str(path))


def input_feeds(samples: int, batch: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(123)
    return [
        {INPUT: rng.uniform(0, 1, (batch, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)}
        for _ in range(samples)
    ]


def run_details(runners: Sequence[str]) -> dict[str, Any]:
    backends = {
        name: {
            "display_name": DISPLAY[name],
            "backend": name.split("-")[0],
            "precision": name.split("-")[1] if "-" in name else "fp32",
            "executed": True,
            "samples": 1,
            "sample_sets": [SAMPLES],
        }
        for name in runners
    }
    return {"backends": backends, "sample_sets": {SAMPLES: {}}}


def write_run(
    run_dir: Path,
    outputs: Mapping[str, Sequence[np.ndarray]],
    recipe: Recipe | None = None,
    *,
    batch: int = 1,
    with_inputs: bool = True,
) -> dict[str, Any]:
    """Save `outputs` ({runner: one output per sample}) into `run_dir`, compare them and judge: results.json's shape."""
    from polygraphy.json import save_json

    recipe = recipe or detector_recipe()
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for runner, per_sample in outputs.items():
        path = run_dir / outputs_file(runner, SAMPLES)
        _save_outputs(path, runner, per_sample)
        paths[artifact_key(runner, SAMPLES)] = path
    samples = len(next(iter(outputs.values())))
    if with_inputs:
        save_json(input_feeds(samples, batch), str(run_dir / "inputs.json"))
    recipe_json = recipe_to_json(recipe, None)
    details = run_details(list(outputs))
    compare = compare_run_outputs(recipe_json, details, paths, ToleranceOverrides())
    results: dict[str, Any] = {
        "recipe": recipe_json,
        "stages": [
            {
                "name": "run",
                "status": "ok",
                "reason": None,
                "duration_s": 1.0,
                "artifacts": {},
                "details": details,
            },
            {
                "name": "compare",
                "status": "ok",
                "reason": None,
                "duration_s": 0.5,
                "artifacts": {},
                "details": compare,
            },
        ],
    }
    results["verdict"] = verdict_for(results)
    return results
