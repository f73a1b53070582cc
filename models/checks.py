"""Acceptance checks a recipe attaches to its outputs, as typed values (`Recipe.checks`).

A check judges one output of one runner pair on one sample set, sample by sample, beside the
built-in statistics, and gates the verdict like them. Here is only what a recipe writes (and what a
user's check function returns); how each kind is evaluated lives in `harness.checks`, one module per
kind, registered under the declaration's tag. The declarations are written into the run's recipe
record, so `harness compare` re-evaluates them from a saved run.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from trt_harness.models.core.errors import UsageError
from trt_harness.models.core.serde import tag, tagged

if TYPE_CHECKING:
    import numpy as np


@tagged("kind")
@dataclass(frozen=True, kw_only=True)
class Check:
    """One named check of one output. `accept_no_signal`: a reference that gives the check nothing to
    judge (e.g. no element above the threshold) passes instead of failing."""

    name: str
    accept_no_signal: bool = False

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise UsageError(f"a {type(self).__name__} check needs a non-empty name, got {self.name!r}")

    @property
    def kind(self) -> str:
        return type(self).__json_tag__  # type: ignore[attr-defined]

    @property
    def criterion(self) -> str:
        """What the check requires, in words (for the report)."""
        return ""

    def _require(self, ok: bool, what: str) -> None:
        if not ok:
            raise UsageError(f"check '{self.name}' ({type(self).__name__}): {what}")


@tag("row_cosine")
@dataclass(frozen=True, kw_only=True)
class RowCosine(Check):
    """Cosine similarity of every row >= `min_cosine`. A row spans `axes` (default the last axis:
    per token of a [batch, seq, hidden] embedding; `axes=(1, 2)` gives one row per batch item);
    every index over the other axes is one row. Two zero rows are identical, one zero row scores 0."""

    min_cosine: float = 0.99
    axes: tuple[int, ...] = (-1,)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require(-1.0 <= self.min_cosine <= 1.0, f"min_cosine {self.min_cosine} must lie in [-1, 1]")
        self._require(bool(self.axes), "axes must name at least one axis")

    @property
    def criterion(self) -> str:
        return f"cosine similarity of every row (over axes {list(self.axes)}) ≥ {self.min_cosine:g}"


@tag("threshold_agreement")
@dataclass(frozen=True, kw_only=True)
class ThresholdAgreement(Check):
    """Both sides decide `value > threshold` alike for at least `min_agreement` of the elements
    (e.g. face probability > 0.7). A reference with no element above the threshold is no signal."""

    threshold: float = 0.5
    min_agreement: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require(math.isfinite(self.threshold), f"threshold {self.threshold} must be finite")
        self._require(
            0.0 <= self.min_agreement <= 1.0, f"min_agreement {self.min_agreement} must lie in [0, 1]"
        )

    @property
    def criterion(self) -> str:
        return f"decisions value > {self.threshold:g} agree on ≥ {self.min_agreement:g} of the elements"


@tag("topk_agreement")
@dataclass(frozen=True, kw_only=True)
class TopKAgreement(Check):
    """At least `min_agreement` of the positions (every index over the other axes) agree on the
    top `k` indices along `axis` (the class axis): the reference's top k are contained in the
    candidate's top `candidate_k` (default k), or with `ordered=True` equal, in the same order.
    A reference constant along `axis` everywhere has no top k: no signal."""

    k: int = 5
    axis: int = -1
    candidate_k: int | None = None
    ordered: bool = False
    min_agreement: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require(self.k >= 1, f"k must be >= 1, got {self.k}")
        self._require(
            self.candidate_k is None or self.candidate_k >= self.k,
            f"candidate_k {self.candidate_k} must be >= k {self.k}",
        )
        self._require(
            not (self.ordered and self.candidate_k not in (None, self.k)),
            "ordered=True compares the same k on both sides; leave candidate_k unset",
        )
        self._require(
            0.0 <= self.min_agreement <= 1.0, f"min_agreement {self.min_agreement} must lie in [0, 1]"
        )

    @property
    def cand_k(self) -> int:
        return self.k if self.candidate_k is None else self.candidate_k

    @property
    def criterion(self) -> str:
        how = (
            f"equal to the candidate's top {self.k}, in order"
            if self.ordered
            else f"within the candidate's top {self.cand_k}"
        )
        return f"the reference's top {self.k} along axis {self.axis} {how} at ≥ {self.min_agreement:g} of the positions"


@dataclass(frozen=True)
class CheckResult:
    """What a user's check function returns for one sample: a value, pass/fail, and optionally the
    threshold it was held to and a word on where it went wrong (shown in the report)."""

    value: float
    passed: bool
    threshold: float | None = None
    detail: str = ""


# a user's check: (reference, candidate) arrays of one sample -> CheckResult
CheckFunction = Callable[["np.ndarray", "np.ndarray"], CheckResult]


@tag("function")
@dataclass(frozen=True, kw_only=True)
class FunctionCheck(Check):
    """A user's function, called once per sample with the (reference, candidate) arrays; the check
    passes when it passes on every sample. `function` is "module:qualname" so a saved run can be
    re-judged (`FunctionCheck.of` writes it); `better` says which values are worse, for naming the
    worst sample."""

    function: str
    better: Literal["higher", "lower"] = "higher"

    def __post_init__(self) -> None:
        super().__post_init__()
        module, sep, qualname = self.function.partition(":")
        self._require(
            bool(module and sep and qualname), f"function {self.function!r} must be 'module:qualname'"
        )
        self._require(
            self.better in ("higher", "lower"), f"better must be 'higher' or 'lower', got {self.better!r}"
        )

    @property
    def criterion(self) -> str:
        return f"{self.function} passes on every sample ({self.better} values are better)"

    @classmethod
    def of(
        cls,
        name: str,
        function: CheckFunction,
        *,
        better: Literal["higher", "lower"] = "higher",
        accept_no_signal: bool = False,
    ) -> FunctionCheck:
        qualname = getattr(function, "__qualname__", "")
        if "<" in qualname or not getattr(function, "__module__", None):
            raise UsageError(
                f"check '{name}': {function!r} must be a module-level function (not a lambda or a nested "
                "function), so that `harness compare` can find it again when it re-judges the run"
            )
        return cls(
            name=name,
            function=f"{function.__module__}:{qualname}",
            better=better,
            accept_no_signal=accept_no_signal,
        )

    def resolve(self) -> CheckFunction:
        """The function itself, imported by its recorded name."""
        module_name, _, qualname = self.function.partition(":")
        try:
            target = importlib.import_module(module_name)
        except ImportError as e:
            raise UsageError(
                f"check '{self.name}': cannot import module '{module_name}' of its function "
                f"{self.function} ({e}); make it importable (e.g. install the package) and run again"
            ) from None
        for part in qualname.split("."):
            target = getattr(target, part, None)
            if target is None:
                raise UsageError(
                    f"check '{self.name}': module '{module_name}' has no '{qualname}'; "
                    "was the function renamed? Update the recipe's FunctionCheck"
                )
        if not callable(target):
            raise UsageError(f"check '{self.name}': {self.function} is not a function")
        return target  # type: ignore[return-value]
