"""Report fixes of issue 13, each checked on the report and results a run writes: where the weights came
from, sequence heatmaps, tick labels, sample-set names in failure lines, builder warnings, the recipe's
own libraries in the environment table."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from trt_harness.conversions.tensorrt_flavor import select_flavor
from trt_harness.harness.environment import recipe_packages
from trt_harness.harness.pipeline import RunConfig, run_pipeline
from trt_harness.models.core.artifacts import sha256_file
from trt_harness.models.recipe import TensorSpec, Tolerance
from trt_harness.models.results.document import load_results
from trt_harness.models.results.recipe import RecipeRecord, ToleranceOverrides
from trt_harness.models.results.stages import CompareDetails
from trt_harness.reports.render import write_reports
from trt_harness.reports.svg import HEATMAP_MIN_CELL, HEATMAP_MIN_SIDE, histogram_svg, text_width

from tests.fixtures.loaded_weights_recipe import (
    HIDDEN,
    SEQUENCE,
    WEIGHTS_FILE,
    build_model,
    text_encoder_recipe,
)
from tests.reports.browser import chromium, new_page, unavailable_reason
from tests.reports.page import Element, parse
from tests.reports.results_fixtures import judged_run, runner_record
from tests.reports.test_svg import histogram_for

# `REPORT_SCREENS=<folder>`: the browser test also saves screenshots of the sequence report there
SCREENS = Path(os.environ.get("REPORT_SCREENS", "/nonexistent-screens"))
SCREENSHOTS = {
    "seq_report.png": None,
    "seq_output.png": "#output-last-hidden-state-torch-onnxrt",
    "seq_summary.png": "#summary",
    "seq_environment.png": "#environment",
}


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


# --- heatmaps ------------------------------------------------------------------------------------


def test_a_sequence_state_gets_a_readable_heatmap_with_the_recipes_axis_names(sequence_run):
    run_dir, _ = sequence_run
    saved = json.loads((run_dir / "results.json").read_text())
    compare = next(s for s in saved["stages"] if s["name"] == "compare")
    (error_map,) = compare["details"]["error_maps"]
    assert error_map["source_hw"] == [SEQUENCE, HIDDEN] and error_map["shape"] == [SEQUENCE, 64]
    assert [m["label"] for m in error_map["per_sample"]] == [f"sample 0, batch row {i}" for i in range(4)]
    section = parse((run_dir / "report.html").read_text()).by_id("output-last-hidden-state")
    charts = section.find_all("svg", "heatmap")
    assert len(charts) == 1 + 4  # over all samples, then per batch row
    for chart in charts:
        (image,) = chart.find_all("image")
        # each of the 18 sequence rows at least HEATMAP_MIN_CELL px: no 15 px strip
        assert float(image.attrs["height"]) >= max(HEATMAP_MIN_SIDE, SEQUENCE * HEATMAP_MIN_CELL)
        texts = [t.text for t in chart.find_all("text")]
        assert "sequence" in texts and "hidden (stretched to fit)" in texts
        assert "height" not in texts and "width" not in texts
        assert {"0", str(SEQUENCE), str(HIDDEN)} <= set(texts)
    assert "mean abs error per sequence × hidden position" in section.text


def test_a_heatmap_that_cannot_be_drawn_is_omitted_with_a_note_and_the_run_still_passes(tmp_path):
    """Samples of two sequence lengths: no map over both, each sample's own map, the verdict untouched."""
    rng = np.random.default_rng(0)
    states = [rng.normal(size=(1, length, 32)).astype(np.float32) for length in (18, 9)]
    recipe = RecipeRecord(
        name="two_lengths",
        description="",
        inputs=(TensorSpec("input_ids", ("batch", "sequence"), "int64"),),
        output_names=("state",),
        default_tolerance=Tolerance(atol=1e-3, rtol=0.0),
        spatial_axes={"state": (1, 2)},
        spatial_axis_names={"state": ("sequence", "hidden")},
    )
    feeds = [{"input_ids": np.zeros((1, s.shape[1]), np.int64)} for s in states]
    outputs = {
        "torch": [{"state": s} for s in states],
        "onnxrt": [{"state": s + np.float32(1e-5)} for s in states],
    }
    runners = {"torch": runner_record("torch", "Torch", 2), "onnxrt": runner_record("onnxrt", "ORT", 2)}
    results = judged_run(tmp_path, recipe, feeds, outputs, runners)
    assert results.stage("compare").status == "ok"
    assert results.verdict.exit_code == 0, results.verdict
    write_reports(results, tmp_path)
    (error_map,) = results.details(CompareDetails).error_maps
    assert "different spatial sizes (18x32, then 9x32 in sample 1)" in error_map.omitted
    html = parse((tmp_path / "report.html").read_text())
    (note,) = html.find_all("p", "heatmap-omitted")
    assert "Heatmap over all samples not drawn: the samples have different spatial sizes" in note.text
    charts = html.by_id("output-state").find_all("svg", "heatmap")
    assert [c.attrs["aria-label"].rsplit(", ", 1)[1] for c in charts] == ["sample 0", "sample 1"]


# --- tick labels ---------------------------------------------------------------------------------


def _label_boxes(svg: Element) -> list[tuple[float, float, str]]:
    """(left, right, text) of every tick label on the bottom axis, from its anchor and measured width."""
    boxes = []
    for t in svg.find_all("text"):
        if t.attrs.get("text-anchor") == "middle" and "transform" not in t.attrs and t.attrs.get("y"):
            x, width = float(t.attrs["x"]), text_width(t.text)
            boxes.append((float(t.attrs["y"]), x - width / 2, x + width / 2, t.text))
    rows: dict[float, list[tuple[float, float, str]]] = {}
    for y, left, right, text in boxes:
        rows.setdefault(y, []).append((left, right, text))
    return max(rows.values(), key=len)


def _histogram_with_tiny_errors() -> list[list[float]]:
    """Exact zeros, errors below the 14 decades shown (1e-35) and errors from 1e-19 up to 1e-6."""
    errors = np.concatenate([np.zeros(50), np.full(5, 1e-35), np.logspace(-19, -6, 300)]).astype(np.float64)
    return histogram_for(errors, atol=1e-6)


def test_histogram_tick_labels_do_not_overlap_the_zero_and_below_bars():
    svg = parse(str(histogram_svg(_histogram_with_tiny_errors(), atol=1e-6, label="h"))).find_all("svg")[0]
    labels = sorted(_label_boxes(svg))
    texts = [text for _, _, text in labels]
    assert texts[:3] == ["0", "<1e-19", "1e-19"]  # the labels that overlapped before
    for (_, right, a), (left, _, b) in zip(labels, labels[1:], strict=False):
        assert right + 2 <= left, f"tick labels {a!r} and {b!r} overlap"


@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
def test_no_two_chart_labels_overlap_in_a_real_browser(sequence_run, tmp_path):
    """Chromium lays out the sequence report and a histogram with the "0" and "<1e-19" bars: no two
    text boxes of one chart intersect (measured with getBBox, the browser's own font)."""
    run_dir, _ = sequence_run
    page_file = tmp_path / "histogram.html"
    page_file.write_text(
        "<!doctype html><body>" + str(histogram_svg(_histogram_with_tiny_errors(), atol=1e-6, label="h"))
    )
    overlapping = """() => {
        const found = [];
        for (const svg of document.querySelectorAll('svg.chart')) {
            const boxes = [...svg.querySelectorAll('text')].map(t => [t.textContent, t.getBoundingClientRect()]);
            for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
                const [a, p] = boxes[i], [b, q] = boxes[j];
                if (p.left < q.right && q.left < p.right && p.top < q.bottom && q.top < p.bottom)
                    found.push(`${svg.getAttribute('aria-label')}: '${a}' / '${b}'`);
            }
        }
        return found;
    }"""
    with chromium() as browser:
        page = new_page(browser)
        checked = 0
        for report in (run_dir / "report.html", page_file):
            page.goto(report.resolve().as_uri())
            assert page.evaluate(overlapping) == []
            checked += page.locator("svg.chart").count()
        assert checked >= 3 + 5 + 1  # three histograms, five heatmaps, the tiny-error histogram
        for name, selector in SCREENSHOTS.items():
            target = SCREENS / name
            if SCREENS.is_dir():
                page.goto((run_dir / "report.html").resolve().as_uri())
                locator = page.locator(selector) if selector else None
                if locator is not None:
                    locator.first.screenshot(path=str(target))
                else:
                    page.screenshot(path=str(target), full_page=True)


# --- environment ---------------------------------------------------------------------------------


def test_the_environment_table_lists_the_libraries_the_recipe_imported(sequence_run):
    run_dir, _ = sequence_run
    saved = json.loads((run_dir / "results.json").read_text())["environment"]
    # the recipe imports safetensors inside build_model; torch and numpy are the toolchain's rows
    assert saved["recipe_packages"] == {"safetensors": importlib.metadata.version("safetensors")}
    assert "torch" in saved["packages"] and "torch" not in saved["recipe_packages"]
    environment = parse((run_dir / "report.html").read_text()).by_id("environment")
    facts = dict(
        zip(
            [dt.text for dt in environment.find_all("dt")],
            [dd.text for dd in environment.find_all("dd")],
            strict=True,
        )
    )
    assert facts["safetensors (the recipe's)"] == importlib.metadata.version("safetensors")


def test_libraries_are_found_through_the_recipes_own_helper_modules(tmp_path, monkeypatch):
    """A recipe file beside a helper module of the user's that imports jinja2 when the model is built."""
    (tmp_path / "user_helpers_rf.py").write_text(
        "def make():\n    import jinja2  # lazily, as a heavy library would be\n    return jinja2\n"
    )
    (tmp_path / "user_recipe_rf.py").write_text(
        "import user_helpers_rf\n\ndef build_model(weights):\n    user_helpers_rf.make()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("user_recipe_rf")
    recipe = text_encoder_recipe(build_model=module.build_model)
    monkeypatch.delitem(sys.modules, "jinja2", raising=False)
    assert "Jinja2" not in recipe_packages(recipe)  # not imported yet: not a library of this run
    recipe.build_model(None)
    assert recipe_packages(recipe)["Jinja2"] == importlib.metadata.version("jinja2")


# --- builder warnings ----------------------------------------------------------------------------


@pytest.mark.skipif(select_flavor() is None, reason="no TensorRT installed")
def test_builder_warnings_are_in_the_results_and_the_conversion_section(sequence_run):
    """The text encoder's int64 token ids: TensorRT's parser warns about the Int64 binding."""
    run_dir, _ = sequence_run
    saved = json.loads((run_dir / "results.json").read_text())
    build = next(s for s in saved["stages"] if s["name"] == "build")
    warning = {"phase": "parse", "source": "TensorRT"}
    kept = [w for w in build["details"]["engines"]["fp32"]["warnings"] if w.items() >= warning.items()]
    assert [w["message"].rsplit(": ", 1)[-1] for w in kept] == [
        "Make sure input input_ids has Int64 binding."
    ]
    table = parse((run_dir / "report.html").read_text()).by_id("build-warnings")
    rows = [[td.text for td in tr.find_all("td")] for tr in table.find_all("tr")[1:]]
    assert ["FP32", "parse", "TensorRT", kept[0]["message"]] in rows
