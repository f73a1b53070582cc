"""`harness matrix`: the recipes x precisions x build targets (x shards) of a model zoo as a CI job matrix.

The CI system is the scheduler: each cell is one job that runs one `harness convert` and keeps its run
folder as an artifact; an index job downloads them all and runs `harness index`, which merges the
shards of a cell (harness.shards) and lists every run. Two formats:

- GitHub Actions `strategy.matrix` in its `include` form: `{"include": [{...}, ...]}`, used as
  `matrix: ${{ fromJSON(needs.<job>.outputs.matrix) }}`; at most 256 jobs per matrix (GitHub's limit).
- GitLab `parallel:matrix`: `{"parallel": {"matrix": [{"RECIPE": "mnist", ...}, ...]}}`, variables
  in upper case with string values; at most 200 jobs (GitLab's limit).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from trt_harness.models.core.errors import UsageError
from trt_harness.models.recipe import PRECISIONS

Format = Literal["github", "gitlab"]
FORMATS: tuple[str, ...] = ("github", "gitlab")
GITHUB_MAX_JOBS = 256  # "A matrix can generate a maximum of 256 jobs per workflow run"
GITLAB_MAX_JOBS = 200  # "The maximum number of permutations in a single matrix is 200"
MAX_JOBS: Mapping[str, int] = {"github": GITHUB_MAX_JOBS, "gitlab": GITLAB_MAX_JOBS}

# build target -> the package extra that installs it, and what it does
TARGETS: Mapping[str, str] = {
    "rtx": "TensorRT for RTX: builds on any machine (no GPU needed), executes on RTX GPUs",
    "gpu": "full TensorRT and onnxruntime-gpu: builds and executes on the runner's CUDA GPU",
}
# where each target's jobs run by default: RTX builds on a hosted runner, full TensorRT needs a GPU runner
DEFAULT_RUNNERS: Mapping[str, str] = {"rtx": "ubuntu-latest", "gpu": "gpu"}
ARTIFACTS = "artifacts"


@dataclass(frozen=True)
class Cell:
    """One job: one recipe at one precision built for one target, optionally one shard of its samples."""

    recipe: str
    precision: str
    target: str
    shard: int = 1  # 1-based
    shards: int = 1
    runner: str = ""

    @property
    def id(self) -> str:
        # a file reference (`path/to/r.py:name`) becomes a folder name: the file's name, its pick, and
        # a short hash of the whole path (two folders may hold a `recipe.py` each)
        recipe = self.recipe
        if "/" in recipe or "\\" in recipe:
            tail = re.split(r"[/\\]", recipe)[-1].replace(".py", "")
            recipe = f"{tail}-{hashlib.sha256(recipe.encode()).hexdigest()[:6]}"
        recipe = re.sub(r"[^A-Za-z0-9_.-]+", "_", recipe).strip("_.")
        base = f"{recipe}-{self.precision}-{self.target}"
        return f"{base}-shard{self.shard}of{self.shards}" if self.shards > 1 else base

    @property
    def command(self) -> str:
        shard = f" --shard {self.shard}/{self.shards}" if self.shards > 1 else ""
        return f"harness convert {shlex.quote(self.recipe)} --precision {self.precision} --out {ARTIFACTS}/{self.id}{shard}"


def job_matrix(
    recipes: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    targets: Sequence[str] = ("rtx",),
    shards: int = 1,
    runners: Mapping[str, str] | None = None,
) -> list[Cell]:
    """Every cell: recipes (default all) x precisions (default each recipe's own) x targets x shards."""
    # recipes import their model code (and torch): only when a matrix is asked for
    from trt_harness.models.recipes import get_recipe, recipe_names, resolve_recipe

    known = recipe_names()
    chosen = list(recipes) if recipes else list(known)
    unknown = [r for r in chosen if r not in known and not _is_reference(r, resolve_recipe)]
    if unknown:
        raise UsageError(f"--recipe {' '.join(unknown)}: no such recipe; recipes: {', '.join(known)}")
    bad = [p for p in precisions or () if p not in PRECISIONS]
    if bad:
        raise UsageError(f"--precision {' '.join(bad)}: expected some of {', '.join(PRECISIONS)}")
    bad = [t for t in targets if t not in TARGETS]
    if bad:
        raise UsageError(f"--target {' '.join(bad)}: expected some of {', '.join(TARGETS)}")
    if shards < 1:
        raise UsageError(f"--shards {shards}: expected a whole number >= 1")
    where = {**DEFAULT_RUNNERS, **(runners or {})}
    cells = []
    for recipe in chosen:
        wanted = list(precisions) if precisions else list(get_recipe(recipe).precisions)
        for precision in (p for p in PRECISIONS if p in wanted):
            for target in dict.fromkeys(targets):
                for shard in range(1, shards + 1):
                    cells.append(Cell(recipe, precision, target, shard, shards, where[target]))
    return cells


def _is_reference(ref: str, resolve: Any) -> bool:
    """Whether `ref` is a recipe file or module; one that is there but broken is the usage error it raises."""
    if not (ref.endswith(".py") or ":" in ref or "." in ref or "/" in ref):
        return False
    resolve(ref)
    return True


def _github_entry(cell: Cell) -> dict[str, Any]:
    return {
        "id": cell.id,
        "recipe": cell.recipe,
        "precision": cell.precision,
        "target": cell.target,
        "shard": f"{cell.shard}/{cell.shards}",
        "runner": cell.runner,
        "command": cell.command,
    }


def _gitlab_entry(cell: Cell) -> dict[str, str]:
    return {
        "CELL": cell.id,
        "RECIPE": cell.recipe,
        "PRECISION": cell.precision,
        "TARGET": cell.target,
        "SHARD": f"{cell.shard}/{cell.shards}",
        "HARNESS_COMMAND": cell.command,
    }


def matrix_document(cells: Sequence[Cell], fmt: str) -> dict[str, Any]:
    """The matrix in the CI system's own form; a usage error beyond its job limit."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if not cells:
        raise UsageError("the matrix is empty: no recipe, precision or target was selected")
    if len(cells) > MAX_JOBS[fmt]:
        raise UsageError(
            f"{len(cells)} jobs exceed the {MAX_JOBS[fmt]} {fmt} allows in one matrix; select fewer "
            "with --recipe, --precision, --target or --shards, and split the zoo over several workflows"
        )
    if fmt == "github":
        return {"include": [_github_entry(c) for c in cells]}
    return {"parallel": {"matrix": [_gitlab_entry(c) for c in cells]}}
