"""Report fixes of issue 13, each checked on the report and results a run writes: where the weights came
from, sequence heatmaps, tick labels, sample-set names in failure lines, builder warnings, the recipe's
own libraries in the environment table."""

from __future__ import annotations

import json

import pytest
from trt_harness.harness.pipeline import RunConfig, run_pipeline
from trt_harness.models.core.artifacts import sha256_file
from trt_harness.models.results.document import load_results
from trt_harness.models.results.recipe import ToleranceOverrides

from tests.fixtures.text_encoder_recipe import WEIGHTS_FILE, build_model, text_encoder_recipe


def _run(tmp_path, **config):
    return run_pipeline(RunConfig(text_encoder_recipe(), tmp_path, backends=("torch", "onnxrt"), **config))


@pytest.fixture(scope="module")
def sequence_run(tmp_path_factory):
    """One real run of the text encoder (Torch and ORT), its folder and results."""
    run_dir = tmp_path_factory.mktemp("text-encoder")
    return run_dir, _run(run_dir)


def test_weights_the_recipe_loads_itself_are_reported_as_the_recipe_says(sequence_run):
    run_dir, results = sequence_run
    saved = json.loads((run_dir / "results.json").read_text())
    source = saved["recipe"]["weights_source"]
    assert source["kind"] == "recipe"
    assert source["description"].startswith(f"loaded by the recipe from {WEIGHTS_FILE}")
    html = (run_dir / "report.html").read_text()
    assert f"loaded by the recipe from {WEIGHTS_FILE}" in html
    assert "seeded random initialisation" not in html


def test_a_weights_file_is_reported_with_its_hash(tmp_path):
    weights = tmp_path / "encoder.safetensors"
    from safetensors.torch import save_file

    save_file(build_model(None).state_dict(), str(weights))
    recipe = text_encoder_recipe(build_model=lambda path: build_model(path))
    results = run_pipeline(RunConfig(recipe, tmp_path / "run", weights=weights, backends=("torch",)))
    digest = sha256_file(weights)
    source = load_results(tmp_path / "run").recipe.weights_source
    assert (source.kind, source.description, source.sha256) == ("file", f"--weights {weights}", digest)
    assert results.recipe.weights_source == source
    assert f"--weights {weights} (sha256 {digest})" in (tmp_path / "run" / "report.html").read_text()


def test_a_recipe_that_does_not_say_where_its_weights_come_from_is_reported_as_undeclared(tmp_path):
    recipe = text_encoder_recipe(weights_source="")
    run_pipeline(RunConfig(recipe, tmp_path, backends=("torch",)))
    assert load_results(tmp_path).recipe.weights_source.kind == "undeclared"
    html = (tmp_path / "report.html").read_text()
    assert "the recipe does not say where they come from" in html
    assert "seeded random initialisation" not in html


def test_every_failure_line_names_its_sample_set(tmp_path):
    results = _run(tmp_path, overrides=_zero_tolerance())
    assert results.verdict.exit_code == 1
    summary = results.verdict.summary
    parts = summary.split(": ", 1)[1].split(", ")
    assert parts == [
        "last_hidden_state (Torch vs ORT on the samples)",
        "last_hidden_state (Torch vs ORT at batch1)",
        "last_hidden_state (Torch vs ORT at batch4)",
    ]
    assert json.loads((tmp_path / "results.json").read_text())["verdict"]["summary"] == summary
    html = (tmp_path / "report.html").read_text()
    reasons = [line for line in html.splitlines() if line.startswith('<p class="reason">')]
    assert [r.split("</strong>")[0].removeprefix('<p class="reason"><strong>') for r in reasons] == [
        "Torch vs ORT on the samples:",
        "Torch vs ORT at batch1 (input_ids 1x18):",
        "Torch vs ORT at batch4 (input_ids 4x18):",
    ]
    junit = (tmp_path / "junit.xml").read_text()
    for name in ("on the samples", "at batch1 (input_ids 1x18)", "at batch4 (input_ids 4x18)"):
        assert f">Torch vs ORT {name}: " in junit


def _zero_tolerance() -> ToleranceOverrides:
    return ToleranceOverrides(atol=0.0, rtol=0.0)
