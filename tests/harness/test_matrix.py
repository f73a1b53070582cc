"""`harness matrix` against the job-matrix forms GitHub Actions and GitLab document, and the shipped
GitHub workflow against what `harness matrix` prints."""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml
from trt_harness.harness.cli import main
from trt_harness.harness.matrix import GITHUB_MAX_JOBS, GITLAB_MAX_JOBS, Cell, matrix_document
from trt_harness.models.core.errors import UsageError
from trt_harness.models.recipes import recipe_names

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "tests" / "fixtures" / "ci_schemas"
WORKFLOW = ROOT / ".github" / "workflows" / "trt-harness.yml"


def schema(name: str) -> dict:
    document = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(document)
    return document


def printed(capsys, *args: str) -> dict:
    assert main(["matrix", *args]) == 0
    return json.loads(capsys.readouterr().out)


def gitlab_jobs(document: dict) -> int:
    # GitLab counts the permutations: each hash gives the product of its value lists' lengths
    return sum(
        math.prod(len(v) if isinstance(v, list) else 1 for v in entry.values())
        for entry in document["parallel"]["matrix"]
    )


def test_github_matrix_is_the_include_form_github_documents(capsys) -> None:
    document = printed(capsys, "--format", "github", "--target", "rtx", "--target", "gpu", "--shards", "2")
    jsonschema.validate(document, schema("github_strategy_matrix"))
    cells = document["include"]
    assert len(cells) == len(recipe_names()) * 2 * 2  # every recipe's fp32 x two targets x two shards
    assert len({c["id"] for c in cells}) == len(cells)
    assert {c["runner"] for c in cells if c["target"] == "gpu"} == {"gpu"}
    one = next(c for c in cells if c["id"] == "mnist-fp32-rtx-shard2of2")
    assert one["command"] == (
        "harness convert mnist --precision fp32 --out artifacts/mnist-fp32-rtx-shard2of2 --shard 2/2"
    )


def test_gitlab_matrix_is_the_parallel_matrix_gitlab_documents(capsys) -> None:
    document = printed(
        capsys, "--format", "gitlab", "--recipe", "mnist", "--precision", "fp32", "--precision", "fp16"
    )
    jsonschema.validate(document, schema("gitlab_parallel_matrix"))
    assert gitlab_jobs(document) == 2 <= GITLAB_MAX_JOBS
    assert [e["PRECISION"] for e in document["parallel"]["matrix"]] == ["fp32", "fp16"]


def test_the_schemas_reject_what_the_ci_systems_refuse() -> None:
    github, gitlab = schema("github_strategy_matrix"), schema("gitlab_parallel_matrix")
    too_many = {"include": [{"id": str(i)} for i in range(GITHUB_MAX_JOBS + 1)]}
    bad_name = {"parallel": {"matrix": [{"my-var": "x"}]}}
    not_string = {"parallel": {"matrix": [{"SHARD": 1}]}}
    for document, against in (
        (too_many, github),
        (bad_name, gitlab),
        (not_string, gitlab),
        ({"include": []}, github),
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(document, against)


@pytest.mark.parametrize(("fmt", "limit"), [("github", GITHUB_MAX_JOBS), ("gitlab", GITLAB_MAX_JOBS)])
def test_a_matrix_beyond_the_job_limit_is_a_usage_error(fmt: str, limit: int) -> None:
    cells = [Cell("mnist", "fp32", "rtx", i, limit + 1) for i in range(1, limit + 2)]
    with pytest.raises(UsageError, match=f"exceed the {limit}"):
        matrix_document(cells, fmt)
    jsonschema.validate(
        matrix_document(cells[:limit], fmt),
        schema(f"{fmt}_{'strategy' if fmt == 'github' else 'parallel'}_matrix"),
    )


def test_bad_options_are_exit_2(capsys) -> None:
    assert main(["matrix", "--recipe", "nope"]) == 2
    assert "no such recipe" in capsys.readouterr().err
    assert main(["matrix", "--shards", "0"]) == 2


def test_the_workflow_runs_the_matrix_harness_matrix_prints(capsys) -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    jobs = workflow["jobs"]
    assert set(jobs) == {"matrix", "cells", "index"}
    # the matrix job: its output is the JSON one `harness matrix` step writes to $GITHUB_OUTPUT
    producer = jobs["matrix"]
    step = next(s for s in producer["steps"] if s.get("id") == "matrix")
    assert producer["outputs"]["matrix"] == "${{ steps.matrix.outputs.matrix }}"
    command = re.fullmatch(r'echo "matrix=\$\((harness matrix [^)]*)\)" >> "\$GITHUB_OUTPUT"', step["run"])
    assert command, step["run"]
    args = shlex.split(command.group(1))[2:]  # after "harness matrix"
    assert "--compact" in args  # one line: $GITHUB_OUTPUT takes name=value lines
    document = printed(capsys, *args)
    jsonschema.validate(document, schema("github_strategy_matrix"))
    # the cells job runs that matrix, one cell a job, and keeps each run folder as an artifact
    cells = jobs["cells"]
    assert cells["needs"] == "matrix"
    assert cells["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.matrix) }}"
    used = set(re.findall(r"\$\{\{\s*matrix\.([A-Za-z0-9_-]+)\s*\}\}", yaml.safe_dump(cells)))
    assert used and all(used <= set(entry) for entry in document["include"])
    assert "${{ matrix.command }}" in [s.get("run") for s in cells["steps"]]
    upload = next(s for s in cells["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert upload["if"] == "always()"
    assert upload["with"]["name"] == "${{ matrix.id }}"
    assert upload["with"]["path"] == "artifacts/${{ matrix.id }}"
    for entry in document["include"]:  # the path the upload keeps is the one the command writes
        assert f"--out artifacts/{entry['id']}" in entry["command"]
    # the index job: every artifact downloaded into one folder, shards merged, one index page
    index = jobs["index"]
    assert index["needs"] == "cells" and index["if"] == "always()"
    download = next(
        s for s in index["steps"] if str(s.get("uses", "")).startswith("actions/download-artifact")
    )
    assert download["with"]["path"] == "artifacts" and "name" not in download["with"]
    assert "harness index artifacts" in [s.get("run") for s in index["steps"]]
