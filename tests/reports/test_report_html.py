from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reports.index import write_index
from reports.render import render_html, write_reports
from reports.view import ReportView, slugify
from tests.reports import results_fixtures as fixtures
from tests.reports.page import Element, parse

REPO = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def yolov5() -> dict[str, Any]:
    return fixtures.yolov5_results()


@pytest.fixture(scope="module")
def multi() -> dict[str, Any]:
    return fixtures.multi_output_results()


@pytest.fixture(scope="module")
def failed() -> dict[str, Any]:
    return fixtures.failed_build_results()


def compare_details(results: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in results["stages"] if s["name"] == "compare")["details"]


def section(tree: Element, output: str) -> Element:
    element = tree.by_id(f"output-{slugify(output)}")
    assert element is not None, f"no section for output {output!r}"
    return element


@pytest.mark.parametrize("name", ["yolov5", "multi"])
def test_every_output_has_a_section_with_statistics_histogram_and_verdict(
    name: str, request: pytest.FixtureRequest
) -> None:
    results = request.getfixturevalue(name)
    tree = parse(render_html(results))
    comparisons = compare_details(results)["comparisons"]
    for output in results["recipe"]["output_names"]:
        element = section(tree, output)
        assert "output" in element.classes
        assert output in element.find_all("h3")[0].text
        mine = [c for c in comparisons if c["output"] == output]
        assert len(element.find_all("svg", "histogram")) == len(mine)
        badges = " ".join(b.text for b in element.find_all("span", "badge"))
        assert ("fail" if any(not c["passed"] for c in mine) else "pass") in badges
        stats_text = " ".join(t.text for t in element.find_all("table", "stats"))
        for label in ("max abs error", "p99 abs error", "RMSE", "cosine similarity", "NaN ref / cand"):
            assert label in stats_text
        worst = element.find_all("table", "worst")
        assert len(worst) == sum(1 for c in mine if c["worst"])


def test_verdict_line_shows_pass_or_fail_exit_code_and_summary(yolov5: dict[str, Any]) -> None:
    tree = parse(render_html(yolov5))
    verdict = tree.by_id("verdict")
    assert verdict is not None
    assert "FAIL" in verdict.text
    assert f"exit code {yolov5['verdict']['exit_code']}" in verdict.text
    assert yolov5["verdict"]["summary"] in verdict.text


def test_summary_has_one_row_per_output_with_worst_error_against_tolerance(multi: dict[str, Any]) -> None:
    tree = parse(render_html(multi))
    summary = tree.by_id("summary").find_all("table", "summary")[0]
    rows = summary.find_all("tbody")[0].find_all("tr")
    assert len(rows) == len(multi["recipe"]["output_names"])
    for row, output in zip(rows, multi["recipe"]["output_names"], strict=True):
        link = row.find_all("a")[0]
        assert link.attrs["href"] == f"#output-{slugify(output)}"
        assert link.text == output
        pairs = row.find_all("li")
        assert len(pairs) == 3  # three backends, three pairs
        for pair in pairs:
            assert re.search(r"max abs \S+ \(tol atol 1e-4 \+ rtol 1e-3·\|ref\|\)", pair.text), pair.text


def test_hostile_output_name_and_stage_reason_render_as_text(multi: dict[str, Any]) -> None:
    html = render_html(multi)
    assert "<img src=x" not in html
    assert "<script" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;script&gt;alert(" in html
    tree = parse(html)
    assert not tree.find_all("img") and not tree.find_all("script")
    assert fixtures.INJECTED_NAME in section(tree, fixtures.INJECTED_NAME).find_all("h3")[0].text
    assert fixtures.INJECTED_REASON in tree.by_id("stages").text


def test_hostile_text_in_a_failed_stage_is_escaped_too(failed: dict[str, Any]) -> None:
    html = render_html(failed)
    assert "<img src=x" not in html
    tree = parse(html)
    assert not tree.find_all("img")
    assert fixtures.INJECTED_NAME in tree.by_id("verdict").text
    assert fixtures.INJECTED_NAME in tree.by_id("build").text  # reason and TensorRT messages


@pytest.mark.parametrize("name", ["yolov5", "multi", "failed"])
def test_report_is_self_contained(name: str, request: pytest.FixtureRequest) -> None:
    html = render_html(request.getfixturevalue(name))
    for forbidden in (
        "http://",
        "https://",
        "<script",
        "<link",
        "@import",
        "@font-face",
        "<iframe",
        "<object",
    ):
        assert forbidden not in html.lower()
    for element in parse(html).iter():
        for attribute in ("src", "href", "xlink:href"):
            value = element.attrs.get(attribute)
            if value is not None:
                assert value.startswith(("#", "data:image/png;base64,", "data:image/jpeg;base64,")), (
                    f"<{element.tag} {attribute}={value[:60]}>"
                )
    assert all(u.startswith("url(#") for u in re.findall(r"url\([^)]*\)", html))


def test_report_stays_small(yolov5: dict[str, Any], multi: dict[str, Any]) -> None:
    assert len(render_html(yolov5).encode()) < 200_000
    assert len(render_html(multi).encode()) < 1_000_000


def test_backends_that_did_not_run_show_their_state_and_no_numbers(yolov5: dict[str, Any]) -> None:
    tree = parse(render_html(yolov5))
    rows = {r.find_all("td")[0].text: r for r in tree.by_id("backends").find_all("tr")[1:]}
    assert "executed" in rows["Torch"].text and "4" in rows["Torch"].find_all("td")[2].text
    tensorrt = rows["TensorRT"].find_all("td")
    assert "built, not executed" in tensorrt[1].text and "no CUDA GPU" in tensorrt[1].text
    assert not re.search(r"\d", tensorrt[2].text + tensorrt[3].text)
    output = section(tree, "output0")
    assert not any("TensorRT" in th.text for th in output.find_all("th", "pair"))
    assert "TensorRT built, not executed" in output.text


def test_backend_not_executed_without_an_engine_is_not_called_built(yolov5: dict[str, Any]) -> None:
    results = json.loads(json.dumps(yolov5))
    build = next(s for s in results["stages"] if s["name"] == "build")
    build.update(status="skipped", reason="no TensorRT installed", details={}, artifacts={})
    states = {b.name: b.state for b in ReportView(results).backends}
    assert states == {"torch": "executed", "onnxrt": "executed", "tensorrt": "not executed"}


def test_io_order_table_marks_positions_whose_names_differ(multi: dict[str, Any]) -> None:
    tree = parse(render_html(multi))
    table = tree.by_id("io-order").find_all("table", "io")[0]
    headers = [th.text for th in table.find_all("thead")[0].find_all("th")]
    assert [h.split()[0] for h in headers] == ["#", "Torch", "ONNX", "ORT", "TensorRT"]
    body = [r for r in table.find_all("tbody")[0].find_all("tr") if not r.find_all("th", "kind")]
    outputs = body[1:]  # one input row first
    assert [bool(r.find_all("td", "differs")) for r in outputs] == [True, False, True]
    assert [td.text for td in outputs[0].find_all("td")[1:]] == [fixtures.LONG_NAME] * 3 + [
        fixtures.INJECTED_NAME
    ]


def test_io_order_says_not_available_for_a_backend_that_did_not_run(yolov5: dict[str, Any]) -> None:
    tree = parse(render_html(yolov5))
    table = tree.by_id("io-order").find_all("table", "io")[0]
    unavailable = table.find_all("td", "na")
    assert len(unavailable) == 2 and all(td.text == "not available" for td in unavailable)
    assert "no CUDA GPU" in tree.by_id("io-order").text


def test_crossmatch_matrix_marks_best_matches_and_shows_the_mismatch(multi: dict[str, Any]) -> None:
    tree = parse(render_html(multi))
    alert = tree.by_id("mismatch-alert")
    assert alert is not None and "ordering mismatch" in alert.text
    crossmatch = compare_details(multi)["crossmatch"]
    for message in (m for cm in crossmatch for m in cm["mismatches"]):
        assert message in tree.by_id("verdict").text
        assert message in tree.by_id("crossmatch").text
    matrices = tree.by_id("crossmatch").find_all("table", "matrix")
    assert len(matrices) == len(crossmatch)
    for matrix, cm in zip(matrices, crossmatch, strict=True):
        assert len(matrix.find_all("td", "best")) == sum(1 for b in cm["best_match"].values() if b)
        assert bool(matrix.find_all("td", "mismatch")) == bool(cm["mismatches"])


def test_a_run_without_mismatch_has_no_mismatch_alert(yolov5: dict[str, Any]) -> None:
    tree = parse(render_html(yolov5))
    assert tree.by_id("mismatch-alert") is None
    assert tree.by_id("crossmatch").find_all("td", "best")


def test_heatmap_is_drawn_for_the_spatial_output_only(multi: dict[str, Any]) -> None:
    tree = parse(render_html(multi))
    depth = section(tree, fixtures.SPATIAL_OUTPUT)
    heatmaps = depth.find_all("svg", "heatmap")
    assert len(heatmaps) == len(compare_details(multi)["heatmaps"][fixtures.SPATIAL_OUTPUT])
    for svg in heatmaps:
        (image,) = svg.find_all("image")
        assert image.attrs["href"].startswith("data:image/png;base64,")
    assert not section(tree, fixtures.LONG_NAME).find_all("svg", "heatmap")
    gradient_ids = [g.attrs["id"] for g in tree.find_all("lineargradient")]
    assert len(gradient_ids) == len(set(gradient_ids)) == len(heatmaps)


def test_surgery_op_counts_per_pass_highlight_changes(yolov5: dict[str, Any]) -> None:
    tree = parse(render_html(yolov5))
    surgery = tree.by_id("surgery")
    table = surgery.find_all("table", "ops")[0]
    header = [th.text for th in table.find_all("thead")[0].find_all("th")]
    assert header == ["op", "export", "after fold_constants", "after cleanup", "after toposort"]
    rows = {r.find_all("th")[0].text: r for r in table.find_all("tbody")[0].find_all("tr")}
    sub = [td.text for td in rows["Sub"].find_all("td")]
    assert sub == ["1", "0", "0", "0"]
    assert ["changed" in td.classes for td in rows["Sub"].find_all("td")] == [False, True, False, False]
    assert "removed 1 nodes (Sub)" in surgery.text


def test_build_facts_and_environment_versions(yolov5: dict[str, Any]) -> None:
    tree = parse(render_html(yolov5))
    build = tree.by_id("build").text
    details = next(s for s in yolov5["stages"] if s["name"] == "build")["details"]
    for fact in (
        details["flavor"]["name"],
        details["flavor"]["version"],
        details["engine"],
        "sm86, sm89, sm120",
    ):
        assert fact in build
    assert "300" in build and "29.0 MiB" in build
    environment = tree.by_id("environment").text
    for package, version in yolov5["environment"]["packages"].items():
        assert package in environment and version in environment


def test_failed_stage_run_still_renders_every_section(failed: dict[str, Any]) -> None:
    tree = parse(render_html(failed))
    for anchor in (
        "summary",
        "outputs",
        "io-order",
        "crossmatch",
        "stages",
        "surgery",
        "build",
        "environment",
    ):
        assert tree.by_id(anchor) is not None
    assert "exit code 4" in tree.by_id("verdict").text
    assert "not run: stage 'build' failed" in section(tree, "output0").text
    assert "parse" in tree.by_id("build").text


def test_write_reports_writes_html_and_junit(tmp_path: Path, yolov5: dict[str, Any]) -> None:
    write_reports(yolov5, tmp_path)
    assert (tmp_path / "report.html").read_text().startswith("<!doctype html>")
    assert (tmp_path / "junit.xml").read_text().startswith("<?xml")


def test_report_layer_imports_neither_torch_nor_tensorrt(tmp_path: Path) -> None:
    script = f"""
import json, sys
from pathlib import Path
from reports.render import write_reports
from reports.index import write_index
results = json.loads(Path({str(fixtures.YOLOV5_RESULTS)!r}).read_text())
out = Path({str(tmp_path)!r}) / "run"
out.mkdir()
write_reports(results, out)
write_index(out.parent)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {{"torch", "tensorrt", "tensorrt_rtx", "onnxruntime", "polygraphy", "onnx"}})
print(heavy)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
    assert (tmp_path / "run" / "report.html").is_file() and (tmp_path / "index.html").is_file()


def test_index_lists_every_run_escaped_with_failing_output_counts(
    tmp_path: Path, yolov5: dict[str, Any], multi: dict[str, Any]
) -> None:
    hostile_dir = tmp_path / "<b>multi"
    for run_dir, results in ((tmp_path / "yolov5", yolov5), (hostile_dir, multi)):
        run_dir.mkdir()
        (run_dir / "results.json").write_text(json.dumps(results))
        write_reports(results, run_dir)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{")
    html = write_index(tmp_path).read_text()
    assert "<b>" not in html and "<img" not in html and "<script" not in html
    rows = parse(html).by_id("runs").find_all("tbody")[0].find_all("tr")
    by_dir = {(r.find_all("a") or r.find_all("td"))[0].text: r for r in rows}
    assert set(by_dir) == {"broken", "multi-head", "yolov5"}
    assert "unreadable" in by_dir["broken"].text
    multi_row = by_dir["multi-head"]
    assert multi_row.find_all("a")[0].attrs["href"] == "%3Cb%3Emulti/report.html"
    assert "3 of 3" in multi_row.text and "ORDERING_MISMATCH" in multi_row.text
    assert "1 of 1" in by_dir["yolov5"].text and "exit code" not in by_dir["yolov5"].text
    assert by_dir["yolov5"].find_all("td")[2].text == str(yolov5["verdict"]["exit_code"])


def test_index_of_an_empty_folder_says_so(tmp_path: Path) -> None:
    html = write_index(tmp_path).read_text()
    assert "No runs found" in html


def test_argmax_disagreement_is_flagged_only_where_it_happens(multi: dict[str, Any]) -> None:
    tree = parse(render_html(multi))
    element = section(tree, fixtures.LONG_NAME)
    pairs = [th.text for th in element.find_all("table", "stats")[1].find_all("th", "pair")]
    (argmax,) = [
        r
        for r in element.find_all("tr")
        if r.find_all("th") and r.find_all("th")[0].text == "argmax agreement"
    ]
    flagged = ["bad" in td.classes for td in argmax.find_all("td")]
    assert flagged == ["TensorRT" in pair for pair in pairs]
    assert "argmax agreement" not in section(tree, fixtures.SPATIAL_OUTPUT).text  # no class axis there


def test_cached_stages_count_as_done(yolov5: dict[str, Any]) -> None:
    results = json.loads(json.dumps(yolov5))
    for stage in results["stages"]:
        stage["status"] = "cached"
    view = ReportView(results)
    assert [b.state for b in view.backends][-1] == "built, not executed"
    (output,) = view.outputs
    assert output.state == "fail" and output.note is None
    assert "Build cached" not in render_html(results)
