"""A tiny transformer text encoder for the variable-shape tests, in a module of its own (a recipe's
code key covers its module's imports): two int64 inputs `input_ids` and `attention_mask` sharing the
dims `batch` and `seq`, samples of three sequence lengths, an optimization profile over both dims.

`-p make=vocab` gives the recipe a make_input drawing token ids inside the vocabulary, `make=none`
gives it none, `make=oov` one whose ids lie outside the vocabulary (the run must say so)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from trt_harness.models.recipe import ExportOptions, Recipe, Shape, ShapeRange, TensorSpec, Tolerance

NAME = "seq_tiny"
VOCAB = 100
HIDDEN = 16
SEQ_LENGTHS = (18, 9, 5)
SEQ_RANGE = (1, 32, 128)
BATCH_RANGE = (1, 2, 4)


def _model():
    import torch  # heavy: only when a stage builds the model

    class EncoderLayer(torch.nn.Module):
        def __init__(self, heads: int = 2) -> None:
            super().__init__()
            self.heads = heads
            self.qkv = torch.nn.Linear(HIDDEN, 3 * HIDDEN)
            self.out = torch.nn.Linear(HIDDEN, HIDDEN)
            self.norm1 = torch.nn.LayerNorm(HIDDEN)
            self.ff = torch.nn.Sequential(
                torch.nn.Linear(HIDDEN, 2 * HIDDEN), torch.nn.GELU(), torch.nn.Linear(2 * HIDDEN, HIDDEN)
            )
            self.norm2 = torch.nn.LayerNorm(HIDDEN)

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            batch, seq = x.shape[0], x.shape[1]
            head_dim = HIDDEN // self.heads
            q, k, v = (
                t.reshape(batch, seq, self.heads, head_dim).transpose(1, 2)
                for t in self.qkv(x).chunk(3, dim=-1)
            )
            scores = q @ k.transpose(-1, -2) / head_dim**0.5
            scores = scores + (1.0 - mask[:, None, None, :].to(scores.dtype)) * -1e4
            attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, seq, HIDDEN)
            x = self.norm1(x + self.out(attended))
            return self.norm2(x + self.ff(x))

    class TinyEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(VOCAB, HIDDEN)
            self.positions = torch.nn.Parameter(0.1 * torch.randn(SEQ_RANGE[2], HIDDEN))
            self.layers = torch.nn.ModuleList([EncoderLayer(), EncoderLayer()])

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
            x = self.embed(input_ids) + self.positions[: input_ids.shape[1]]
            for layer in self.layers:
                x = layer(x, attention_mask)
            weights = attention_mask.to(x.dtype)[..., None]
            pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            return {"hidden": x, "pooled": pooled}

    torch.manual_seed(0)
    return TinyEncoder().eval()


def _feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    feeds = []
    for seq in SEQ_LENGTHS:
        ids = rng.integers(0, VOCAB, (1, seq), dtype=np.int64)
        mask = np.ones((1, seq), dtype=np.int64)
        mask[:, seq - seq // 4 :] = 0  # padding at the end, as a tokenizer gives
        feeds.append({"input_ids": ids, "attention_mask": mask})
    return feeds


SAMPLE_FEEDS = _feeds()


def make_input(low: int, high: int):
    """make_input drawing token ids in [low, high) and a mask of ones with a padded tail."""

    def make(name: str, shape: Shape, rng: np.random.Generator) -> np.ndarray:
        if name == "input_ids":
            return rng.integers(low, high, shape, dtype=np.int64)
        mask = np.ones(shape, dtype=np.int64)
        mask[..., shape[-1] - shape[-1] // 4 :] = 0
        return mask

    return make


MAKERS = {"vocab": make_input(0, VOCAB), "none": None, "oov": make_input(VOCAB, VOCAB + 50)}


def seq_tiny(make: str = "vocab") -> Recipe:
    def build(_weights: Path | None):
        return _model()

    return Recipe(
        name=NAME,
        description="an embedding and two encoder layers, samples of three sequence lengths",
        build_model=build,
        sample_inputs=lambda: SAMPLE_FEEDS,
        inputs=(
            TensorSpec("input_ids", ("batch", "seq"), "int64"),
            TensorSpec("attention_mask", ("batch", "seq"), "int64"),
        ),
        outputs=(TensorSpec("hidden", ("batch", "seq", HIDDEN)), TensorSpec("pooled", ("batch", HIDDEN))),
        shape_ranges={
            name: ShapeRange(*((b, s) for b, s in zip(BATCH_RANGE, SEQ_RANGE, strict=True)))
            for name in ("input_ids", "attention_mask")
        },
        export=ExportOptions(exporter="torchscript", opset=17),
        default_tolerance=Tolerance(atol=1e-4, rtol=1e-4),
        make_input=MAKERS[make],
        params={"make": make},
    )
