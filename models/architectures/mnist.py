"""The small MNIST CNN of TensorRT's `network_api_pytorch_mnist` sample, plus sample digits.

The sample's network: conv1 1->20 k5, max-pool 2, conv2 20->50 k5, max-pool 2 (no activation after
the convs), fc1 800->500, ReLU, fc2 500->10. The sample trains it and ends the torch model with
log_softmax; its TensorRT network marks fc2's output, so ours returns the logits.

No trained weights exist here: `init_mnist_seeded` draws fan-in scaled weights from its own
generator, which gives logits with a clear spread (argmax is the comparison gate).
`mnist_digits` renders handwriting-like digits from stroke glyphs, so the samples have MNIST's
statistics (a centred ~20x20 digit on black) rather than noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
IMAGE_SIDE = 28
DIGIT_BOX = 20  # MNIST fits each digit into 20x20 and centres it in 28x28


class MnistNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.fc1 = nn.Linear(800, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) normalized digits -> (N, 10) logits."""
        x = F.max_pool2d(self.conv1(x), kernel_size=2, stride=2)
        x = F.max_pool2d(self.conv2(x), kernel_size=2, stride=2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def mnist_net() -> MnistNet:
    return MnistNet()


def init_mnist_seeded(model: MnistNet, seed: int = 0) -> MnistNet:
    """Deterministic stand-in weights (in place; returned, in eval mode), independent of the global RNG.

    Weights are normal with variance 1/fan_in (2/fan_in before the ReLU), so every layer keeps its
    input's scale and the logits spread over a few units; biases are small.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in (model.conv1, model.conv2, model.fc1, model.fc2):
            gain = 2.0 if layer is model.fc1 else 1.0
            fan_in = layer.weight[0].numel()
            nn.init.normal_(layer.weight, 0.0, math.sqrt(gain / fan_in), generator=generator)
            nn.init.normal_(layer.bias, 0.0, 0.05, generator=generator)
    return model.eval()


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, stop: float) -> list[tuple[float, float]]:
    """Points on an elliptic arc; angles in degrees, 0 = right, 90 = down (image coordinates)."""
    steps = max(int(abs(stop - start) / 10), 2)
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
        for a in np.linspace(start, stop, steps + 1)
    ]


# Each digit is a few polylines in a unit box (x right, y down), drawn like handwriting.
GLYPHS: dict[int, list[list[tuple[float, float]]]] = {
    0: [_arc(0.5, 0.5, 0.34, 0.46, 0, 360)],
    1: [[(0.3, 0.22), (0.55, 0.04), (0.55, 0.96)]],
    2: [_arc(0.5, 0.3, 0.32, 0.26, 190, 375) + [(0.15, 0.95), (0.88, 0.95)]],
    3: [_arc(0.48, 0.27, 0.3, 0.23, 200, 450), _arc(0.48, 0.72, 0.35, 0.24, 270, 520)],
    4: [[(0.68, 0.96), (0.68, 0.04), (0.12, 0.66), (0.9, 0.66)]],
    5: [[(0.82, 0.05), (0.3, 0.05), (0.25, 0.45)] + _arc(0.5, 0.66, 0.34, 0.3, 225, 500)],
    6: [[(0.72, 0.04), (0.32, 0.45)] + _arc(0.5, 0.7, 0.3, 0.26, 200, 560)],
    7: [[(0.12, 0.05), (0.88, 0.05), (0.4, 0.96)]],
    8: [_arc(0.5, 0.27, 0.26, 0.23, 0, 360), _arc(0.5, 0.72, 0.32, 0.25, 0, 360)],
    9: [_arc(0.5, 0.3, 0.3, 0.26, 0, 360), [(0.8, 0.3), (0.68, 0.96)]],
}


@dataclass(frozen=True)
class _Pose:
    """Where and how one glyph lands on the canvas: size, slant, rotation about its centre."""

    rotation: float  # radians
    slant: float  # horizontal shift per unit of height
    width: float
    height: float
    centre: tuple[float, float]

    def place(self, point: tuple[float, float]) -> tuple[float, float]:
        x, y = (point[0] - 0.5) * self.width, (point[1] - 0.5) * self.height
        x -= self.slant * y
        cos, sin = math.cos(self.rotation), math.sin(self.rotation)
        return (self.centre[0] + cos * x - sin * y, self.centre[1] + sin * x + cos * y)


def _centre_of_mass_centred(ink: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """`ink` shifted (zero fill) so its centre of mass lies `offset` (y, x) from the centre, as MNIST does."""
    ys, xs = np.indices(ink.shape)
    total = ink.sum()
    com = np.array([(ink * ys).sum() / total, (ink * xs).sum() / total])
    dy, dx = np.rint(np.array(ink.shape) / 2 + offset - com).astype(int)
    shifted = np.zeros_like(ink)
    height, width = ink.shape
    shifted[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = ink[
        max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return shifted


def mnist_digits(count: int, seed: int = 0) -> np.ndarray:
    """`count` deterministic digit images (count, 1, 28, 28) float32, normalized like MNIST.

    Sample i shows digit i % 10, with its own slant, rotation, size, stroke width and a small offset
    drawn from a generator seeded with `seed` (same arguments, same pixels; a longer list starts
    with the shorter one). Like MNIST, each digit fits a 20x20 box and its centre of mass sits at
    the image centre; drawn at 4x and downsampled, for MNIST's anti-aliased strokes.
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    upscale = 4
    canvas_side = IMAGE_SIDE * upscale
    images = np.empty((count, 1, IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    for i in range(count):
        stroke = int(round(upscale * rng.uniform(2.0, 3.0)))
        height = (DIGIT_BOX * upscale - stroke) * rng.uniform(0.85, 1.0)
        pose = _Pose(
            rotation=math.radians(rng.uniform(-12.0, 12.0)),
            slant=rng.uniform(-0.25, 0.25),
            width=height * rng.uniform(0.55, 0.75),
            height=height,
            centre=(canvas_side / 2, canvas_side / 2),
        )
        jitter = upscale * rng.uniform(-1.0, 1.0, size=2)
        canvas = Image.new("L", (canvas_side, canvas_side), 0)
        draw = ImageDraw.Draw(canvas)
        for stroke_points in GLYPHS[i % 10]:
            points = [pose.place(p) for p in stroke_points]
            draw.line(points, fill=255, width=stroke, joint="curve")
            for x, y in (points[0], points[-1]):  # round pen ends
                draw.ellipse((x - stroke / 2, y - stroke / 2, x + stroke / 2, y + stroke / 2), fill=255)
        ink = _centre_of_mass_centred(np.asarray(canvas, dtype=np.float32), jitter)
        small = Image.fromarray(ink).resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.BOX)
        images[i, 0] = np.asarray(small, dtype=np.float32) / 255.0
    return ((images - MNIST_MEAN) / MNIST_STD).astype(np.float32)
