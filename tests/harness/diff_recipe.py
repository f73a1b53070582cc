"""A tiny recipe with a planted error for the diff and baseline tests, in a module of its own (a recipe's
code key covers its module's imports).

Output `planted` carries `noise` x the recipe's atol of fixed-sign noise in the exported ONNX model
only (Torch eager does not add it), so ORT differs from Torch by that much there and nowhere else;
`clean` is never perturbed. noise=0.5 stays within tolerance (a drift only a baseline sees), noise=2
fails the tolerance itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from trt_harness.models.recipe import ExportOptions, Recipe, TensorSpec, Tolerance

NAME = "diff_noise"
ATOL = 1e-4
PLANTED, CLEAN = "planted", "clean"


def noisy_model(noise: float):
    import torch  # heavy: only when a stage builds the model

    class Noisy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 3, padding=1)
            signs = np.random.default_rng(1).choice([-1.0, 1.0], size=(1, 2, 8, 8)).astype(np.float32)
            self.register_buffer("noise", torch.from_numpy(signs * noise * ATOL))

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            y = self.conv(x)
            planted = y + self.noise if torch.onnx.is_in_onnx_export() else y
            return {PLANTED: planted, CLEAN: torch.sigmoid(y)}

    torch.manual_seed(0)
    return Noisy().eval()


def _feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": rng.random((1, 3, 8, 8), np.float32)} for _ in range(2)]


SAMPLE_FEEDS = _feeds()


def diff_noise(noise: float = 0.0) -> Recipe:
    """The recipe factory (registered by the tests as `diff_noise`); `-p noise=0.5` plants the error."""

    def build(_weights: Path | None):
        return noisy_model(noise)

    return Recipe(
        name=NAME,
        description="a conv with noise planted in the exported model's first output",
        build_model=build,
        sample_inputs=lambda: SAMPLE_FEEDS,
        inputs=(TensorSpec("x", (1, 3, 8, 8)),),
        output_names=(PLANTED, CLEAN),
        export=ExportOptions(exporter="torchscript", opset=17),
        default_tolerance=Tolerance(atol=ATOL, rtol=0.0),
        params={"noise": noise},
    )
