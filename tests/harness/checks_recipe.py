"""A tiny token encoder with a classifier head, for the tests of the recipe's own checks and of the
no-signal gate, in a module of its own (its check function must be importable by name).

Parameters: `head="zero"` zeroes the classifier head (all logits exactly 0: no signal);
`accept=1` accepts that for `logits`; `corrupt=1` flips the sign of one token's embedding (sample 1,
token 2) in the exported model only; `checks` picks the declared checks: "all", "rows" (only the
per-row cosine of `embedding`) or "unknown" (checks for an output the model does not have).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from trt_harness.models.checks import (
    CheckResult,
    FunctionCheck,
    RowCosine,
    ThresholdAgreement,
    TopKAgreement,
)
from trt_harness.models.recipe import ExportOptions, Recipe, TensorSpec, Tolerance

NAME = "checks_tiny"
TOKENS, HIDDEN, CLASSES = 4, 8, 6
SAMPLES = 3
CORRUPT_SAMPLE, CORRUPT_TOKEN = 1, 2
MARK = 3.0  # the first feature of the corrupted token; every other one lies within [-2, 2]
MAX_GAP = 1e-4


def largest_gap(ref: np.ndarray, cand: np.ndarray) -> CheckResult:
    """A user's check: the largest absolute difference of one sample, at most MAX_GAP."""
    gap = float(np.max(np.abs(ref.astype(np.float64) - cand)))
    return CheckResult(gap, gap <= MAX_GAP, threshold=MAX_GAP, detail=f"largest |ref - cand| {gap:.3g}")


def _model(head: str, corrupt: int):
    import torch  # heavy: only when a stage builds the model

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encode = torch.nn.Linear(HIDDEN, HIDDEN)
            self.head = torch.nn.Linear(HIDDEN, CLASSES)
            with torch.no_grad():
                self.head.weight.mul_(4.0)  # probabilities well away from 0.5, on both sides of 0.7
                if head == "zero":
                    self.head.weight.zero_()
                    self.head.bias.zero_()

        def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
            embedding = torch.tanh(self.encode(tokens))
            logits = self.head(embedding.mean(dim=1))
            if corrupt and torch.onnx.is_in_onnx_export():
                marked = (tokens[..., :1] > MARK - 0.5).to(embedding.dtype)
                embedding = embedding * (1.0 - 2.0 * marked)
            return {"embedding": embedding, "logits": logits, "prob": torch.sigmoid(logits)}

    torch.manual_seed(0)
    return Tiny().eval()


def _feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    feeds = [
        {"tokens": np.clip(rng.standard_normal((1, TOKENS, HIDDEN)), -2, 2).astype(np.float32)}
        for _ in range(SAMPLES)
    ]
    feeds[CORRUPT_SAMPLE]["tokens"][0, CORRUPT_TOKEN, 0] = MARK
    return feeds


SAMPLE_FEEDS = _feeds()


def _checks(which: str) -> dict:
    rows = {"embedding": (RowCosine(name="token_cosine", min_cosine=0.999),)}
    if which == "rows":
        return rows
    if which == "unknown":
        return {**rows, "scores": (TopKAgreement(name="top2", k=2),)}
    return {
        **rows,
        "logits": (
            TopKAgreement(name="top2", k=2),
            FunctionCheck.of("max_gap", largest_gap, better="lower"),
        ),
        "prob": (ThresholdAgreement(name="confident", threshold=0.7),),
    }


def checks_tiny(head: str = "random", accept: int = 0, corrupt: int = 0, checks: str = "all") -> Recipe:
    def build(_weights: Path | None):
        return _model(head, corrupt)

    tolerances = {
        "logits": Tolerance(atol=1e-4, rtol=1e-4, accept_no_signal=bool(accept)),
        # one corrupted token of twelve (8 % of the elements) passes a p90: the row check alone fails it
        "embedding": Tolerance(atol=1e-4, rtol=1e-4, check="quantile", quantile=0.9),
    }
    return Recipe(
        name=NAME,
        description="a token encoder and a classifier head, three samples",
        build_model=build,
        sample_inputs=lambda: SAMPLE_FEEDS,
        inputs=(TensorSpec("tokens", (1, TOKENS, HIDDEN)),),
        output_names=("embedding", "logits", "prob"),
        export=ExportOptions(exporter="torchscript", opset=17),
        default_tolerance=Tolerance(atol=1e-4, rtol=1e-4),
        tolerances=tolerances,
        checks=_checks(checks),
        params={"head": head, "accept": accept, "corrupt": corrupt, "checks": checks},
    )
