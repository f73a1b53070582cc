"""A tiny recipe with seven samples for the shard tests, in a module of its own (a recipe's code key
covers its module's imports). `-p noise=X` adds X x atol of noise to `logits` in the exported model only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from trt_harness.models.recipe import ExportOptions, Recipe, TensorSpec, Tolerance

NAME = "shard_tiny"
ATOL = 1e-4


def _model(noise: float):
    import torch  # heavy: only when a stage builds the model

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.head = torch.nn.Linear(4 * 6 * 6, 5)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            features = torch.relu(self.conv(x))
            logits = self.head(features.flatten(1))
            if torch.onnx.is_in_onnx_export():
                logits = logits + noise * ATOL * torch.sign(logits)
            return {"features": features, "logits": logits}

    torch.manual_seed(0)
    return Tiny().eval()


def _feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    return [{"x": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)} for _ in range(7)]


SAMPLE_FEEDS = _feeds()


def shard_tiny(noise: float = 0.0) -> Recipe:
    def build(_weights: Path | None):
        return _model(noise)

    return Recipe(
        name=NAME,
        description="a conv and a linear head, seven samples",
        build_model=build,
        sample_inputs=lambda: SAMPLE_FEEDS,
        inputs=(TensorSpec("x", (1, 3, 6, 6)),),
        output_names=("features", "logits"),
        export=ExportOptions(exporter="torchscript", opset=17),
        default_tolerance=Tolerance(atol=ATOL, rtol=0.0),
        tolerances={"logits": Tolerance(atol=ATOL, rtol=0.0, check="quantile", quantile=0.9)},
        class_axes={"logits": 1},
        params={"noise": noise},
    )
