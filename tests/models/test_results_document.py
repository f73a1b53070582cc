"""results.json: written once from typed values, read back as the same values, anything else refused by name."""

from __future__ import annotations

import json

import pytest
from trt_harness.harness.cli import main
from trt_harness.harness.environment import environment
from trt_harness.models.core.errors import ExitCode, UsageError
from trt_harness.models.recipes import get_recipe
from trt_harness.models.results.document import (
    SCHEMA,
    SCHEMA_VERSION,
    Results,
    Verdict,
    load_results,
    results_to_text,
    save_results,
)
from trt_harness.models.results.recipe import RecipeRecord, ToleranceOverrides
from trt_harness.models.results.stages import ScanDetails, StageRecord


def _results() -> Results:
    recipe = get_recipe("mnist")
    stages = (
        StageRecord("samples", "ok", 0.5),
        StageRecord("scan", "ok", 1.25, details=ScanDetails(findings=())),
        StageRecord("export", "failed", 2.0, reason="the exporter refused aten::foo"),
    )
    return Results(
        RecipeRecord.of(recipe, None),
        environment(),
        stages,
        Verdict(int(ExitCode.STAGE_FAILED), "STAGE_FAILED", "stage 'export' failed"),
        ToleranceOverrides(atol=1e-3, per_output_rtol={"logits": 1e-2}),
    )


def _write(tmp_path, data) -> None:
    (tmp_path / "results.json").write_text(json.dumps(data))


def test_saved_results_read_back_as_the_same_values(tmp_path):
    results = _results()
    save_results(results, tmp_path)
    again = load_results(tmp_path)
    assert again == results
    assert isinstance(again.stage("scan").details, ScanDetails)
    assert results_to_text(again) == (tmp_path / "results.json").read_text()


def test_version_1_is_refused_by_name(tmp_path):
    _write(tmp_path, {"schema": SCHEMA, "schema_version": 1, "stages": []})
    with pytest.raises(UsageError, match="schema version 1, written by an older trt-harness"):
        load_results(tmp_path)


@pytest.mark.parametrize("version", [99, 0, "2", None])
def test_an_unknown_version_is_refused_with_the_version_named(tmp_path, version):
    data = json.loads(results_to_text(_results()))
    _write(tmp_path, {**data, "schema_version": version})
    with pytest.raises(UsageError, match=f"schema version {version!r}; this trt-harness reads version"):
        load_results(tmp_path)


@pytest.mark.parametrize("content", ["{}", "[]", "null", '"results"', '{"schema": "other/thing"}'])
def test_a_file_that_is_not_a_results_document_is_a_usage_error(tmp_path, content):
    (tmp_path / "results.json").write_text(content)
    with pytest.raises(UsageError, match="results.json"):
        load_results(tmp_path)


def test_non_utf8_and_invalid_json_are_usage_errors(tmp_path):
    (tmp_path / "results.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(UsageError, match="not UTF-8"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text('{"schema": ')
    with pytest.raises(UsageError, match="not valid JSON"):
        load_results(tmp_path)


def test_an_edited_field_is_named(tmp_path):
    data = json.loads(results_to_text(_results()))
    data["stages"][1]["duration_s"] = "fast"
    _write(tmp_path, data)
    with pytest.raises(UsageError, match=r"damaged or was edited: .*stages\[1\].*duration_s"):
        load_results(tmp_path)


def test_an_unknown_tolerance_key_is_named(tmp_path):
    data = json.loads(results_to_text(_results()))
    data["recipe"]["default_tolerance"]["atoll"] = 1.0
    _write(tmp_path, data)
    with pytest.raises(UsageError, match="atoll"):
        load_results(tmp_path)


def test_harness_compare_on_a_bad_results_file_exits_with_the_usage_code(tmp_path, capsys):
    _write(tmp_path, {"schema": SCHEMA, "schema_version": SCHEMA_VERSION + 97})
    assert main(["compare", str(tmp_path)]) == ExitCode.USAGE_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "results.json") in err[0]
