"""`results.json`: the whole record of one run, as typed values, and the one way to read and write it.

Schema `trt-harness/results`, version 2. Version 1 files (written before the typed contract) are
refused by name; any other schema or version, or a file that is not such a document, is a usage
error naming the file and the first field at fault.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from trt_harness.models.core.artifacts import write_text_atomic
from trt_harness.models.core.errors import ExitCode, UsageError
from trt_harness.models.core.serde import SchemaError, from_json, to_json
from trt_harness.models.results.diff import RunDiff
from trt_harness.models.results.localize import Localization
from trt_harness.models.results.recipe import RecipeRecord, ToleranceOverrides
from trt_harness.models.results.stages import StageDetails, StageRecord

SCHEMA = "trt-harness/results"
SCHEMA_VERSION = 2
RESULTS_FILE = "results.json"

D = TypeVar("D", bound=StageDetails)


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str  # "9.0"


@dataclass(frozen=True)
class Environment:
    """Versions of everything that can change a number."""

    python: str
    platform: str
    machine: str
    processor_count: int | None
    gpus: tuple[Gpu, ...]
    packages: Mapping[str, str]
    # libraries the recipe's own code imported (e.g. transformers, timm), found after the model was built
    recipe_packages: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """The CI gate: `exit_code` is what `harness convert`/`compare` exits with; truthy when it passes."""

    exit_code: int
    status: str  # the ExitCode's name
    summary: str

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    def __bool__(self) -> bool:
        return self.passed


@dataclass(frozen=True)
class Results:
    recipe: RecipeRecord
    environment: Environment
    stages: tuple[StageRecord, ...]
    verdict: Verdict
    overrides: ToleranceOverrides = field(default_factory=ToleranceOverrides)
    # `harness convert --baseline DIR`: how this run compares with that earlier run, which gated it
    baseline: RunDiff | None = None
    # `harness localize` / `convert --localize`: where the outputs start to diverge, layer by layer
    localization: Localization | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_unix: float = field(default_factory=time.time)
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION

    def stage(self, name: str) -> StageRecord | None:
        return next((s for s in self.stages if s.name == name), None)

    def details(self, kind: type[D]) -> D | None:
        """The details of the stage that records `kind`, if it got as far as recording them."""
        name = kind.__json_tag__  # type: ignore[attr-defined]
        record = self.stage(name)
        return record.details if record is not None and isinstance(record.details, kind) else None

    def with_stage(self, record: StageRecord) -> Results:
        """These results with `record` in place of the stage of its name (added last if absent)."""
        if self.stage(record.name) is None:
            return replace(self, stages=(*self.stages, record))
        stages = tuple(record if s.name == record.name else s for s in self.stages)
        return replace(self, stages=stages)


# what results.json says while its run is under way: a run killed midway leaves this, never an
# earlier run's results beside this run's files
UNFINISHED = Verdict(
    int(ExitCode.STAGE_FAILED),
    "UNFINISHED",
    "the run that writes this folder has not finished (or was killed); run `harness convert` again",
)


def results_to_text(results: Results) -> str:
    return json.dumps(to_json(results), indent=1)


def results_from_json(data: Any, source: str = RESULTS_FILE) -> Results:
    if not isinstance(data, dict):
        raise UsageError(f"{source} is not a results document (a JSON object); re-run `harness convert`")
    schema, version = data.get("schema"), data.get("schema_version")
    if schema != SCHEMA:
        raise UsageError(
            f"{source} has schema {schema!r}, not {SCHEMA!r}: it was not written by `harness convert`"
        )
    if version == 1:
        raise UsageError(
            f"{source} is results schema version 1, written by an older trt-harness before the typed "
            f"results contract (version {SCHEMA_VERSION}); re-run `harness convert` to write it anew"
        )
    if version != SCHEMA_VERSION:
        raise UsageError(
            f"{source} is results schema version {version!r}; this trt-harness reads version "
            f"{SCHEMA_VERSION} only: use the trt-harness that wrote it, or re-run `harness convert`"
        )
    try:
        return from_json(Results, data, "results")
    except SchemaError as e:
        raise UsageError(f"{source} is damaged or was edited: {e}; re-run `harness convert`") from e


def load_results(path: Path) -> Results:
    """Read a `results.json` (or the one in a run folder); a clear usage error for anything else."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"{path} not found: run `harness convert <recipe>` first, or pass a run folder"
        ) from None
    except UnicodeDecodeError:
        raise UsageError(
            f"{path} is not UTF-8 text, so not a results.json; re-run `harness convert`"
        ) from None
    except OSError as e:
        raise UsageError(f"{path} cannot be read: {e.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not valid JSON ({e}); re-run `harness convert`") from None
    return results_from_json(data, str(path))


def save_results(results: Results, run_dir: Path) -> Path:
    path = Path(run_dir) / RESULTS_FILE
    write_text_atomic(path, results_to_text(results))
    return path
