"""The tiny recipe code of the cache tests, in a module of its own: a recipe's code key covers the
closure of its module's imports, and a real recipe module imports models only (not the harness)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tiny_model(_weights: Path | None):
    import torch  # heavy: only when a stage builds the model

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.ReLU()).eval()


def feeds(value: float | None = None) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        {
            "x": np.full((1, 3, 8, 8), value, np.float32)
            if value is not None
            else rng.random((1, 3, 8, 8), np.float32)
        }
        for _ in range(2)
    ]


SAMPLE_FEEDS = feeds()


def sample_feeds() -> list[dict[str, np.ndarray]]:
    return SAMPLE_FEEDS
