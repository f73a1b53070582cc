from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest
from trt_harness.harness.stages.compare import pairs_not_compared
from trt_harness.models.results.document import Results, load_results, results_to_text, save_results
from trt_harness.models.results.stages import CompareDetails, RunDetails, SamplesDetails
from trt_harness.reports import formatting as fmt
from trt_harness.reports.index import write_index
from trt_harness.reports.page import ReportView
from trt_harness.reports.render import render_html, write_reports
from trt_harness.reports.sections.common import slugify

from tests.reports import results_fixtures as fixtures
from tests.reports.page import Element, parse

REPO = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def yolov5() -> Results:
    return fixtures.yolov5_results()


@pytest.fixture(scope="module")
def multi() -> Results:
    return fixtures.multi_output_results()


@pytest.fixture(scope="module")
def failed() -> Results:
    return fixtures.failed_build_results()


def compare_details(results: Results) -> CompareDetails:
    found = results.details(CompareDetails)
    assert found is not None
    return found


def section(tree: Element, output: str) -> Element:
    element = tree.by_id(f"output-{slugify(output)}")
    assert element is not None, f"no section for output {output!r}"
    return element


@pytest.mark.parametrize("name", ["yolov5", "multi"])
def test_every_output_has_a_section_with_statistics_histogram_and_verdict(
    name: str, request: pytest.FixtureRequest
) -> None:
    results: Results = request.getfixturevalue(name)
    tree = parse(render_html(results))
    comparisons = compare_details(results).comparisons
    for output in results.recipe.output_names:
        element = section(tree, output)
        assert "output" in element.classes
        assert output in element.find_all("h3")[0].text
        mine = [c for c in comparisons if c.output == output]
        assert mine
        assert len(element.find_all("svg", "histogram")) == len(mine)
        badges = " ".join(b.text for b in element.find_all("span", "badge"))
        assert ("fail" if any(not c.passed for c in mine) else "pass") in badges
        stats_text = " ".join(t.text for t in element.find_all("table", "stats"))
        for label in ("max abs error", "p99 abs error", "RMSE", "cosine similarity", "NaN ref / cand"):
            assert label in stats_text
        worst = element.find_all("table", "worst")
        assert len(worst) == sum(1 for c in mine if c.worst)


def test_pairs_of_each_sample_set_are_labelled_and_have_their_own_ids(yolov5: Results) -> None:
    html = render_html(yolov5)
    tree = parse(html)
    groups = compare_details(yolov5).groups
    assert len({g.sample_set for g in groups}) > 1  # the recipe's samples and the profile shapes
    pairs = section(tree, "output0").find_all("div", "pair")
    assert len(pairs) == len(compare_details(yolov5).comparisons)
    labels = [p.find_all("h4")[0].text for p in pairs]
    samples = yolov5.details(SamplesDetails)
    assert samples is not None
    for sample_set in samples.sets.values():
        if sample_set.label:
            assert any(sample_set.label in label for label in labels), sample_set.label
    ids = [e.attrs["id"] for e in tree.iter() if "id" in e.attrs]
    assert [i for i, n in Counter(ids).items() if n > 1] == []


def test_an_output_failing_on_every_pair_shows_each_reason_and_its_tolerance(multi: Results) -> None:
    mine = [c for c in compare_details(multi).comparisons if c.output == fixtures.INJECTED_NAME]
    assert len(mine) == 3 and not any(c.passed for c in mine)
    (output,) = [o for o in ReportView(multi).outputs if o.name == fixtures.INJECTED_NAME]
    assert output.state == "fail" and output.note is None
    assert output.tolerance == "atol 1e-4 + rtol 1e-3·|ref|"
    element = section(parse(render_html(multi)), fixtures.INJECTED_NAME)
    assert "Not compared" not in element.text
    reasons = [p.text for p in element.find_all("p", "reason")]
    assert len(reasons) == len(mine)
    for comparison in mine:
        assert any(comparison.reason in text for text in reasons), comparison.reason


@pytest.mark.parametrize("name", ["yolov5", "multi", "failed"])
def test_verdict_line_shows_pass_or_fail_exit_code_and_summary(
    name: str, request: pytest.FixtureRequest
) -> None:
    results: Results = request.getfixturevalue(name)
    verdict = parse(render_html(results)).by_id("verdict")
    assert verdict is not None
    assert ("PASS" if results.verdict.passed else "FAIL") in verdict.text
    assert ("FAIL" if results.verdict.passed else "PASS") not in verdict.text
    assert f"exit code {results.verdict.exit_code}" in verdict.text
    assert results.verdict.summary in verdict.text
    assert ("pass" if results.verdict.passed else "fail") in verdict.classes


def test_summary_has_one_row_per_output_with_worst_error_against_tolerance(multi: Results) -> None:
    tree = parse(render_html(multi))
    summary = tree.by_id("summary").find_all("table", "summary")[0]
    rows = summary.find_all("tbody")[0].find_all("tr")
    assert len(rows) == len(multi.recipe.output_names)
    for row, output in zip(rows, multi.recipe.output_names, strict=True):
        link = row.find_all("a")[0]
        assert link.attrs["href"] == f"#output-{slugify(output)}"
        assert link.text == output
        pairs = row.find_all("li")
        assert len(pairs) == 3  # three backends, three pairs
        for pair in pairs:
            assert re.search(r"max abs \S+ \(tol atol 1e-4 \+ rtol 1e-3·\|ref\|\)", pair.text), pair.text


def test_hostile_output_name_and_stage_reason_render_as_text(multi: Results) -> None:
    html = render_html(multi)
    assert "<img src=x" not in html
    assert "<script" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;script&gt;alert(" in html
    tree = parse(html)
    assert not tree.find_all("img") and not tree.find_all("script")
    assert fixtures.INJECTED_NAME in section(tree, fixtures.INJECTED_NAME).find_all("h3")[0].text
    assert fixtures.INJECTED_REASON in tree.by_id("stages").text


def test_hostile_text_in_a_failed_stage_is_escaped_too(failed: Results) -> None:
    html = render_html(failed)
    assert "<img src=x" not in html
    tree = parse(html)
    assert not tree.find_all("img")
    assert fixtures.INJECTED_NAME in tree.by_id("verdict").text
    build = tree.by_id("build").text
    assert fixtures.BUILD_FAILURE in build and fixtures.BUILD_MESSAGE in build  # reason and TensorRT messages


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


def test_report_stays_small(yolov5: Results, multi: Results) -> None:
    assert len(render_html(yolov5).encode()) < 200_000
    assert len(render_html(multi).encode()) < 1_000_000


def backend_rows(tree: Element) -> dict[str, Element]:
    return {r.find_all("td")[0].text: r for r in tree.by_id("backends").find_all("tr")[1:]}


def test_backends_that_did_not_run_show_their_state_and_no_numbers(yolov5: Results) -> None:
    tree = parse(render_html(yolov5))
    rows = backend_rows(tree)
    run = yolov5.details(RunDetails)
    assert run is not None
    torch = rows["Torch"].find_all("td")
    assert "executed" in torch[1].text and torch[2].text == fmt.number(run.runners["torch"].samples)
    tensorrt = rows["TensorRT"].find_all("td")
    assert "built, not executed" in tensorrt[1].text and "no CUDA GPU" in tensorrt[1].text
    assert not re.search(r"\d", tensorrt[2].text + tensorrt[3].text)
    output = section(tree, "output0")
    assert output.find_all("th", "pair")
    assert not any("TensorRT" in th.text for th in output.find_all("th", "pair"))
    assert "TensorRT built, not executed" in output.text


def test_backend_not_executed_without_an_engine_is_not_called_built(yolov5: Results) -> None:
    # as the run stage records TensorRT when the build stage made no engine
    run = yolov5.details(RunDetails)
    assert run is not None
    runners = dict(run.runners)
    runners["tensorrt"] = dataclasses.replace(
        runners["tensorrt"], state="not executed", reason="no TensorRT installed", io_order=None, io_source=""
    )
    results = fixtures.replace_stage(
        yolov5, "build", status="skipped", reason="no TensorRT installed", details=None, artifacts={}
    )
    results = fixtures.replace_details(results, "run", runners=runners)
    # and the compare stage records which pairs it could not compare, from the run's record
    not_compared = pairs_not_compared(fixtures.details(results, "run"))
    results = fixtures.replace_details(results, "compare", not_compared=not_compared)
    states = {b.backend: b.state for b in ReportView(results).summary.backends}
    assert states == {"torch": "executed", "onnxrt": "executed", "tensorrt": "not executed"}
    tree = parse(render_html(results))
    assert "built" not in backend_rows(tree)["TensorRT"].text
    assert "TensorRT not executed: no TensorRT installed" in section(tree, "output0").text


def test_io_order_table_marks_positions_whose_names_differ(multi: Results) -> None:
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


def test_io_order_of_a_backend_that_did_not_run_is_its_engines_or_not_available(yolov5: Results) -> None:
    tree = parse(render_html(yolov5))
    table = tree.by_id("io-order").find_all("table", "io")[0]
    headers = [th.text for th in table.find_all("thead")[0].find_all("th")]
    # TensorRT did not execute, but its engine's network says its order
    assert any(h.startswith("TensorRT") and "network (build)" in h for h in headers)
    assert table.find_all("td", "na") == []
    run = yolov5.details(RunDetails)
    assert run is not None
    runners = dict(run.runners)
    runners["tensorrt"] = dataclasses.replace(
        runners["tensorrt"], state="not executed", reason="no TensorRT installed", io_order=None, io_source=""
    )
    tree = parse(render_html(fixtures.replace_details(yolov5, "run", runners=runners)))
    table = tree.by_id("io-order").find_all("table", "io")[0]
    unavailable = table.find_all("td", "na")
    assert len(unavailable) == 2 and all(td.text == "not available" for td in unavailable)
    assert "no TensorRT installed" in tree.by_id("io-order").text


def test_crossmatch_matrix_marks_best_matches_and_shows_the_mismatch(multi: Results) -> None:
    tree = parse(render_html(multi))
    alert = tree.by_id("mismatch-alert")
    assert alert is not None and "ordering mismatch" in alert.text
    crossmatch = compare_details(multi).crossmatch
    assert any(cm.mismatches for cm in crossmatch)
    for message in (m for cm in crossmatch for m in cm.mismatches):
        assert message in tree.by_id("verdict").text
        assert message in tree.by_id("crossmatch").text
    matrices = tree.by_id("crossmatch").find_all("table", "matrix")
    assert len(matrices) == len(crossmatch)
    for matrix, cm in zip(matrices, crossmatch, strict=True):
        assert len(matrix.find_all("td", "best")) == sum(1 for b in cm.best_match.values() if b)
        assert bool(matrix.find_all("td", "mismatch")) == bool(cm.mismatches)


def test_a_run_without_mismatch_has_no_mismatch_alert(yolov5: Results) -> None:
    tree = parse(render_html(yolov5))
    assert tree.by_id("mismatch-alert") is None
    assert tree.by_id("crossmatch").find_all("td", "best")


def test_heatmap_is_drawn_for_the_spatial_output_only(multi: Results) -> None:
    tree = parse(render_html(multi))
    depth = section(tree, fixtures.SPATIAL_OUTPUT)
    heatmaps = depth.find_all("svg", "heatmap")
    maps = [m for m in compare_details(multi).error_maps if m.output == fixtures.SPATIAL_OUTPUT]
    assert len(maps) == 3  # one per pair
    assert all(len(m.per_sample) == 3 for m in maps)  # and one per sample within each pair's
    assert len(heatmaps) == sum(1 + len(m.per_sample) for m in maps)
    for svg in heatmaps:
        (image,) = svg.find_all("image")
        assert image.attrs["href"].startswith("data:image/png;base64,")
    assert not section(tree, fixtures.LONG_NAME).find_all("svg", "heatmap")
    gradient_ids = [g.attrs["id"] for g in tree.find_all("lineargradient")]
    assert len(gradient_ids) == len(set(gradient_ids)) == len(heatmaps)


def test_surgery_op_counts_per_pass_highlight_changes(yolov5: Results) -> None:
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


def test_build_facts_and_environment_versions(yolov5: Results) -> None:
    tree = parse(render_html(yolov5))
    build = tree.by_id("build").text
    details = fixtures.details(yolov5, "build")
    engine = details.primary
    for fact in (
        details.flavor.display_name,
        details.flavor.version,
        details.flavor.module_name,
        engine.engine,
        "sm86, sm89, sm120",
        fmt.number(engine.network_layers),
        fmt.size(engine.plan_size_bytes),
    ):
        assert fact in build
    assert "300" in build and "29.0 MiB" in build
    environment = tree.by_id("environment").text
    for package, version in yolov5.environment.packages.items():
        assert package in environment and version in environment


def test_failed_stage_run_still_renders_every_section(failed: Results) -> None:
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


def test_failed_stage_run_writes_report_and_junit_naming_the_reason(tmp_path: Path, failed: Results) -> None:
    # as the pipeline ends a run whose build failed: results.json saved, then both reports from it
    save_results(failed, tmp_path)
    loaded = load_results(tmp_path)
    assert loaded == failed
    write_reports(loaded, tmp_path)
    tree = parse((tmp_path / "report.html").read_text())
    assert f"stage 'build' failed: {fixtures.BUILD_FAILURE}" in tree.by_id("verdict").text
    ledger = {
        row.find_all("td")[0].text: row.find_all("td") for row in tree.by_id("stages").find_all("tr")[1:]
    }
    assert ledger["build"][1].text == "failed" and "fail" in ledger["build"][1].classes
    assert fixtures.BUILD_FAILURE in ledger["build"][3].text
    for later in ("run", "compare"):
        assert ledger[later][1].text == "skipped"
        assert "not run: stage 'build' failed" in ledger[later][3].text
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    cases = {case.get("name"): case for case in suite.findall("testcase")}
    failure = cases["stage:build"].find("failure")
    assert failure is not None and failure.get("type") == "StageFailed"
    assert failure.get("message") == fixtures.BUILD_FAILURE
    for later in ("run", "compare"):
        skipped = cases[f"stage:{later}"].find("skipped")
        assert skipped is not None and skipped.get("message") == "not run: stage 'build' failed"
    assert int(suite.get("failures", "0")) >= 1


def test_write_reports_writes_html_and_junit(tmp_path: Path, yolov5: Results) -> None:
    write_reports(yolov5, tmp_path)
    assert (tmp_path / "report.html").read_text().startswith("<!doctype html>")
    assert (tmp_path / "junit.xml").read_text().startswith("<?xml")


def test_report_layer_imports_neither_torch_nor_tensorrt(tmp_path: Path) -> None:
    script = f"""
import sys
from pathlib import Path
from trt_harness.models.results.document import load_results
from trt_harness.reports.render import write_reports
from trt_harness.reports.index import write_index
results = load_results(Path({str(fixtures.YOLOV5_RESULTS)!r}))
out = Path({str(tmp_path)!r}) / "run"
out.mkdir()
write_reports(results, out)
write_index(out.parent)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {{"torch", "tensorrt", "tensorrt_rtx", "onnxruntime", "polygraphy", "onnx", "harness"}})
print(heavy)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
    assert (tmp_path / "run" / "report.html").is_file() and (tmp_path / "index.html").is_file()


def failing_outputs(results: Results) -> set[str]:
    compare = compare_details(results)
    return {c.output for c in compare.comparisons if not c.passed} | {m.output for m in compare.missing}


def test_index_lists_every_run_escaped_with_failing_output_counts(
    tmp_path: Path, yolov5: Results, multi: Results
) -> None:
    hostile_dir = tmp_path / "<b>multi"
    for run_dir, results in ((tmp_path / "yolov5", yolov5), (hostile_dir, multi)):
        run_dir.mkdir()
        (run_dir / "results.json").write_text(results_to_text(results))
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
    assert len(failing_outputs(multi)) == 3
    assert "3 of 3" in multi_row.text and "ORDERING_MISMATCH" in multi_row.text
    outputs = len(yolov5.recipe.output_names)
    assert f"{len(failing_outputs(yolov5))} of {outputs}" in by_dir["yolov5"].text
    assert "exit code" not in by_dir["yolov5"].text
    assert by_dir["yolov5"].find_all("td")[2].text == str(yolov5.verdict.exit_code)
    assert ("pass" if yolov5.verdict.passed else "fail") in by_dir["yolov5"].find_all("td")[1].text


def test_index_of_an_empty_folder_says_so(tmp_path: Path) -> None:
    html = write_index(tmp_path).read_text()
    assert "No runs found" in html


def test_argmax_disagreement_is_flagged_only_where_it_happens(multi: Results) -> None:
    tree = parse(render_html(multi))
    element = section(tree, fixtures.LONG_NAME)
    pairs = [th.text for th in element.find_all("table", "stats")[1].find_all("th", "pair")]
    (argmax,) = [
        r
        for r in element.find_all("tr")
        if r.find_all("th") and r.find_all("th")[0].text == "argmax agreement"
    ]
    flagged = ["bad" in td.classes for td in argmax.find_all("td")]
    assert any(flagged)
    assert flagged == ["TensorRT" in pair for pair in pairs]
    assert "argmax agreement" not in section(tree, fixtures.SPATIAL_OUTPUT).text  # no class axis there


def test_cached_stages_count_as_done(yolov5: Results) -> None:
    cached = tuple(dataclasses.replace(s, status="cached") if s.status == "ok" else s for s in yolov5.stages)
    assert {s.status for s in cached} == {"cached", "skipped"}  # precision was skipped
    results = dataclasses.replace(yolov5, stages=cached)
    view = ReportView(results)
    fresh = ReportView(yolov5)
    assert [b.state for b in view.summary.backends][-1] == "built, not executed"
    (output,) = view.outputs
    assert output.state == fresh.outputs[0].state != "skipped" and output.note is None
    assert [p.state for p in output.pairs] == [p.state for p in fresh.outputs[0].pairs]
    html = render_html(results)
    assert "Build cached" not in html and "Compare cached" not in html
    assert parse(html).by_id("build").find_all("table", "engines")
