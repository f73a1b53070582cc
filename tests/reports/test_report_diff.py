"""The run diff as reports write it: the HTML page (self-contained, escaped, in the report's style), the
plain-text table (ASCII, stable), and the report's baseline section beside the run's own results.

Diffs are made from the saved YOLOv5 run (tensor comparisons at four sample sets and a gated detection
pair) and a copy of it with one comparison's errors grown and one image's detections disagreeing.
"""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET

import pytest
from trt_harness.harness.diff import Baseline, diff_runs, judge_against
from trt_harness.models.results.diff import RunDiff, diff_from_json, diff_to_text
from trt_harness.models.results.document import Results, load_results, save_results
from trt_harness.models.results.stages import CompareDetails
from trt_harness.reports.diff import diff_text, render_diff_html
from trt_harness.reports.junit import junit_xml
from trt_harness.reports.render import render_html

from tests.reports import results_fixtures as fixtures
from tests.reports.page import parse

OUTPUT = "output0"


def _compare_details(results: Results) -> CompareDetails:
    details = results.details(CompareDetails)
    assert details is not None
    return details


def _with_details(results: Results, details: CompareDetails) -> Results:
    return results.with_stage(dataclasses.replace(results.stage("compare"), details=details))


def drifted(results: Results) -> Results:
    """`results` with the samples comparison's errors x10 and image 0's detections disagreeing."""
    details = _compare_details(results)
    comparisons = tuple(
        dataclasses.replace(c, quantile_abs_err=c.quantile_abs_err * 10, max_abs_err=c.max_abs_err * 10)
        if c.sample_set == "samples"
        else c
        for c in details.comparisons
    )
    pair = details.detections.pairs[0]
    first = pair.images[0]
    images = (dataclasses.replace(first, match=dataclasses.replace(first.match, matched_fraction=0.5)),)
    pair = dataclasses.replace(pair, images=images + pair.images[1:])
    detections = dataclasses.replace(details.detections, pairs=(pair,))
    return _with_details(
        results, dataclasses.replace(details, comparisons=comparisons, detections=detections)
    )


def renamed(results: Results, name: str) -> Results:
    details = _compare_details(results)
    comparisons = tuple(dataclasses.replace(c, output=name) for c in details.comparisons)
    return _with_details(results, dataclasses.replace(details, comparisons=comparisons))


@pytest.fixture(scope="module")
def base() -> Results:
    return fixtures.yolov5_results()


@pytest.fixture(scope="module")
def diff(base: Results) -> RunDiff:
    return diff_runs(base, drifted(base), sources=("runs/base", "runs/new"))


def test_the_diff_page_is_self_contained_and_names_the_regression(diff):
    html = render_diff_html(diff)
    for forbidden in ("<script", "http://", "https://", "<link", "<img", "src="):
        assert forbidden not in html, forbidden
    tree = parse(html)
    gate = tree.by_id("A-gate")
    assert gate is not None and "fail" in gate.classes and "REGRESSED" in gate.text
    assert f"{OUTPUT} (Torch vs ORT): p99 abs error" in gate.text
    rows = tree.find_all("table", "overview")[0].find_all("tr")[1:]
    assert len(rows) == 4  # output0 at the samples and each profile shape
    states = [row.find_all("span", "badge")[0].text for row in rows]
    assert states == ["regressed", "unchanged", "unchanged", "unchanged"]
    detections = tree.by_id("detections")
    assert detections is not None and "images disagreeing" in detections.text
    assert "new failure" in detections.text
    assert tree.by_id("environment") is not None and tree.by_id("times") is not None
    assert "Same python, platform, GPUs" in tree.by_id("environment").text


def test_an_unchanged_diff_says_so(base):
    tree = parse(render_diff_html(diff_runs(base, base)))
    gate = tree.by_id("A-gate")
    assert "pass" in gate.classes and "UNCHANGED" in gate.text


def test_names_from_a_model_are_escaped(base):
    name = fixtures.INJECTED_NAME
    diff = diff_runs(renamed(base, name), renamed(drifted(base), name))
    html = render_diff_html(diff)
    assert name not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert not parse(html).find_all("img")
    assert f"  - {name} (Torch vs ORT)" in diff_text(diff)  # plain text prints it as it is


def test_the_terminal_table_is_ascii_stable_and_aligned(diff):
    text = diff_text(diff)
    assert text.isascii()
    assert text == diff_text(diff_from_json(json.loads(diff_to_text(diff))))  # the JSON holds it all
    lines = text.splitlines()
    start = lines.index("comparisons (A -> B)") + 1
    header, rows = lines[start], lines[start + 1 : start + 5]
    column = header.index("status")
    assert [row[column:] for row in rows] == ["REGRESSED", "unchanged", "unchanged", "unchanged"]
    assert rows[0].split("  ")[1:4] == [OUTPUT, "Torch vs ORT", ""]  # columns padded to the widest
    assert "Torch vs ORT at batch4" in rows[2] and "8.34e-5 -> 8.34e-4 (x10)" in rows[0]
    detections = lines[lines.index("detections") + 2]
    assert "NEW FAILURE" in detections and "0 -> 1 (+1)" in detections
    assert "every statistic (* gated)" in text


def test_the_report_shows_the_baseline_and_this_run_side_by_side(base, tmp_path):
    gated = judge_against(drifted(base), Baseline(base, "runs/base"))
    assert not gated.verdict.passed
    tree = parse(render_html(gated))
    section = tree.by_id("baseline")
    assert section is not None and "runs/base" in section.text
    assert tree.find_all("nav", "contents")[0].find_all("a")[0].attrs["href"] == "#baseline"
    overview = section.find_all("table", "overview")[0]
    header = overview.find_all("tr")[0].text
    assert "baseline" in header and "this run" in header
    first = overview.find_all("tr")[1]
    assert OUTPUT in first.text and first.find_all("span", "badge")[0].text == "regressed"
    assert first.find_all("td", "regressed")  # the grown statistic is marked
    assert section.find_all("details")[0].attrs.get("open") is not None  # open when regressed

    # re-rendered from results.json alone, the same page
    save_results(gated, tmp_path)
    assert render_html(load_results(tmp_path)) == render_html(gated)


def test_a_report_without_a_baseline_has_no_baseline_section(base):
    tree = parse(render_html(base))
    assert tree.by_id("baseline") is None
    assert all(a.attrs["href"] != "#baseline" for a in tree.find_all("nav", "contents")[0].find_all("a"))
    passing = judge_against(base, Baseline(base, "runs/base"))
    section = parse(render_html(passing)).by_id("baseline")
    assert section is not None and "UNCHANGED" in section.text


def test_junit_has_a_case_per_baseline_comparison_failed_where_it_regressed(base):
    gated = judge_against(drifted(base), Baseline(base, "runs/base"))
    root = ET.fromstring(junit_xml(gated))
    cases = {c.get("name"): c for c in root.iter("testcase") if c.get("name", "").startswith("baseline:")}
    assert set(cases) == {
        f"baseline:{OUTPUT}[torch-vs-onnxrt]",
        f"baseline:{OUTPUT}[torch-vs-onnxrt@batch1]",
        f"baseline:{OUTPUT}[torch-vs-onnxrt@batch4]",
        f"baseline:{OUTPUT}[torch-vs-onnxrt@batch8]",
        f"baseline:detections:{OUTPUT}[torch-vs-onnxrt]",
    }
    failed = sorted(name for name, c in cases.items() if c.find("failure") is not None)
    assert failed == [f"baseline:detections:{OUTPUT}[torch-vs-onnxrt]", f"baseline:{OUTPUT}[torch-vs-onnxrt]"]
    assert cases[f"baseline:{OUTPUT}[torch-vs-onnxrt]"].find("failure").get("type") == "BaselineRegression"
    assert "baseline:" not in junit_xml(base)  # no baseline, no baseline cases
