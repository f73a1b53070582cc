"""A tiny recipe for the bundle/verify tests, in a module of its own (a recipe's code key covers its
module's imports): a dynamic batch with an optimization profile (so the bundle carries profile sample
sets and shape ranges) and declared outputs (so the bundle carries them for every backend's check)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from trt_harness.models.recipe import ExportOptions, Recipe, ShapeRange, TensorSpec, Tolerance

NAME = "verify_tiny"
ATOL = 1e-4


def _model():
    import torch  # heavy: only when a stage builds the model

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.head = torch.nn.Linear(4 * 6 * 6, 5)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            features = torch.relu(self.conv(x))
            return {"features": features, "logits": self.head(features.flatten(1))}

    torch.manual_seed(0)
    return Tiny().eval()


def _feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    return [{"x": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)} for _ in range(3)]


SAMPLE_FEEDS = _feeds()


def verify_tiny() -> Recipe:
    def build(_weights: Path | None):
        return _model()

    return Recipe(
        name=NAME,
        description="a conv and a linear head with a dynamic batch, three samples",
        build_model=build,
        sample_inputs=lambda: SAMPLE_FEEDS,
        inputs=(TensorSpec("x", ("batch", 3, 6, 6)),),
        outputs=(TensorSpec("features", ("batch", 4, 6, 6)), TensorSpec("logits", ("batch", 5))),
        shape_ranges={"x": ShapeRange((1, 3, 6, 6), (2, 3, 6, 6), (4, 3, 6, 6))},
        export=ExportOptions(exporter="torchscript", opset=17),
        default_tolerance=Tolerance(atol=ATOL, rtol=1e-4),
        tolerances={"logits": Tolerance(atol=ATOL, rtol=0.0, check="quantile", quantile=0.9)},
        class_axes={"logits": 1},
        # FP16 against the FP32 reference: half precision's rounding of ~3e-4 relative per op
        precision_tolerances={"fp16": Tolerance(atol=1e-2, rtol=1e-2)},
    )
