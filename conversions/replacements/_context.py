"""What a replacement's builder is handed, and the record of one export's replacement calls."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

from trt_harness.conversions.replacements._callsite import call_site
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.results.stages import ReplacementCall

Action = Literal["replaced", "kept original"]


class ReplacementUnsupported(HarnessError):
    """A replacement met a call it cannot rewrite faithfully; the message names op, option and call site."""


@dataclass
class AppliedReplacements:
    """What `applied()` did: the replacements in force and every call they saw."""

    names: tuple[str, ...]
    static_dims: dict[str, dict[int, int]]
    # targets whose package is not installed (e.g. einops): nothing can call them, nothing was patched
    unavailable_targets: list[str] = field(default_factory=list)
    errors: list[ReplacementUnsupported] = field(default_factory=list)
    # calls handed to the original op so far; the stand-in records "replaced" only for the others
    handed_back: int = 0
    _counts: dict[tuple[str, str, Action, str], int] = field(default_factory=dict)

    def record(self, replacement: str, action: Action, detail: str = "") -> None:
        key = (replacement, call_site(), action, detail)
        self._counts[key] = self._counts.get(key, 0) + 1

    @property
    def calls(self) -> list[ReplacementCall]:
        return [ReplacementCall(*key, count) for key, count in self._counts.items()]

    @property
    def unused(self) -> list[str]:
        """Replacements that saw no call: the model does not use the op, or a tracer bypassed the patch."""
        seen = {key[0] for key in self._counts}
        return [name for name in self.names if name not in seen]


class ReplacementContext:
    """Handed to a replacement's builder: the original callables and the way to report and fail."""

    def __init__(self, name: str, originals: Mapping[str, Callable[..., Any]], session: AppliedReplacements):
        self.name = name
        self.originals = dict(originals)
        self.session = session

    def original(self, target: str) -> Callable[..., Any]:
        return self.originals[target]

    def keep_original(self, target: str, reason: str, *args: Any, **kwargs: Any) -> Any:
        """Run the original op for this call (it is exact and exportable as it is) and record why."""
        self.session.record(self.name, "kept original", reason)
        return self.untouched(target, *args, **kwargs)

    def untouched(self, target: str, *args: Any, **kwargs: Any) -> Any:
        """Run the original op for a call this replacement is not about (not recorded)."""
        self.session.handed_back += 1
        return self.originals[target](*args, **kwargs)

    def reject(self, target: str, what: str, *args: Any, **kwargs: Any) -> NoReturn:
        """Arguments the stand-in refuses: let the original raise torch's own error for them.

        If torch accepts them after all, the stand-in cannot rewrite the call and says so.
        """
        self.originals[target](*args, **kwargs)
        self.fail(
            what, f"remove '{self.name}' from the recipe's export replacements to export the original op"
        )

    def fail(self, problem: str, fix: str) -> NoReturn:
        error = ReplacementUnsupported(
            f"replacement '{self.name}' cannot rewrite the call at {call_site()}: {problem}. Fix: {fix}"
        )
        self.session.errors.append(error)
        raise error
