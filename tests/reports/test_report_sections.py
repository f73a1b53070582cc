"""The report's scan & replacements, precision variants and engines-per-precision sections, rendered
from stages of real runs (tests/fixtures/results_sections.json) and hostile variants of them."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import Any

import pytest
from trt_harness.models.results.document import Results
from trt_harness.reports import formatting as fmt
from trt_harness.reports.render import render_html
from trt_harness.reports.sections.conversion import source_sites

from tests.reports import browser as chromium
from tests.reports import results_fixtures as fixtures
from tests.reports.page import Element, parse

stage = fixtures.stage
details = fixtures.details


def render(results: Results) -> tuple[str, Element]:
    html = render_html(results)
    return html, parse(html)


def section(tree: Element, anchor: str) -> Element:
    found = tree.by_id(anchor)
    assert found is not None, f"no section #{anchor}"
    return found


def nav_anchors(tree: Element) -> list[str]:
    (nav,) = tree.find_all("nav", "contents")
    return [a.attrs["href"] for a in nav.find_all("a")]


def body_rows(table: Element) -> list[Element]:
    return table.find_all("tbody")[0].find_all("tr")


def line_of(location: str) -> str:
    match = re.search(r":(\d+) in ", location)
    assert match, location
    return match[1]


@pytest.fixture(scope="module")
def scan() -> Results:
    return fixtures.scan_results()


@pytest.fixture(scope="module")
def precision() -> Results:
    return fixtures.precision_results()


# --- scan & replacements -------------------------------------------------------------------------


def test_scan_section_has_one_row_per_op_with_every_call_site(scan: Results) -> None:
    _, tree = render(scan)
    assert "#scan" in nav_anchors(tree)
    findings = details(scan, "scan").findings
    assert len(findings) > 10  # the MVS run: a long list to group
    (table,) = section(tree, "scan").find_all("table", "findings")
    rows = {row.find_all("td")[0].text: row for row in body_rows(table)}
    assert sorted(rows) == sorted({f.op for f in findings})
    for op, row in rows.items():
        mine = [f for f in findings if f.op == op]
        cells = row.find_all("td")
        assert cells[1].text == fmt.number(sum(f.count for f in mine))
        sites = [li.text for li in cells[2].find_all("li")]
        assert sorted(s.split()[0] for s in sites) == sorted(line_of(f.location) for f in mine)
        assert mine[0].reason in cells[3].text
        fix = cells[4].text
        assert mine[0].replacement is not None and mine[0].replacement in fix
        assert ("recipe applies it" if all(f.fixed_by_recipe for f in mine) else "not applied") in fix.lower()


def test_replacement_calls_are_grouped_per_replacement_and_action(scan: Results) -> None:
    _, tree = render(scan)
    calls = details(scan, "export").replacement_calls
    (table,) = section(tree, "scan").find_all("table", "calls")
    rows = body_rows(table)
    groups = Counter((c.replacement, c.action, c.detail) for c in calls)
    assert len(rows) == len(groups)
    shown = 0
    for row in rows:
        replacement, count, where, action = (cell.text for cell in row.find_all("td"))
        mine = [c for c in calls if c.replacement == replacement and action.startswith(c.action)]
        assert mine, f"no call of {replacement} with action {action!r}"
        assert count == fmt.number(sum(c.count for c in mine))
        assert all(line_of(c.location) in where for c in mine)
        assert all(c.detail in action for c in mine)
        shown += int(count)
    assert shown == sum(c.count for c in calls)
    kept = [c for c in calls if c.action == "kept original"]
    assert kept and all(c.detail for c in kept)
    assert section(tree, "scan").find_all("p", "warn") == []  # every finding fixed, every replacement used


def test_unfixed_finding_comes_first_and_unused_replacement_is_a_warning() -> None:
    results = fixtures.unfixed_scan_results()
    _, tree = render(results)
    scan_section = section(tree, "scan")
    (table,) = scan_section.find_all("table", "findings")
    first = body_rows(table)[0].find_all("td")
    assert first[0].text == fixtures.UNFIXED_OP
    assert "no replacement known" in first[4].text and "unfixed" in first[4].text
    assert [r.find_all("td")[0].text for r in body_rows(table)].count(fixtures.UNFIXED_OP) == 1
    warnings = [p.text for p in scan_section.find_all("p", "warn")]
    assert any(fixtures.UNFIXED_OP in w and "Not fixed" in w for w in warnings)
    assert any("squeeze_static" in w and "requested but saw no call" in w for w in warnings)


def test_scan_without_findings_says_so(precision: Results) -> None:
    assert details(precision, "scan").findings == ()
    _, tree = render(precision)
    scan_section = section(tree, "scan")
    assert scan_section.find_all("table", "findings") == []
    assert "found no op" in scan_section.text


def test_source_sites_group_per_file_by_line_and_keep_every_count() -> None:
    located = [
        ("a/m.py:30 in f", 2),
        ("b/n.py:5 in g", 1),
        ("a/m.py:4 in <listcomp>", 3),
        ("a/m.py:30 in f", 1),
        ("somewhere", 4),
    ]
    files = source_sites(located)
    assert [f.file for f in files] == ["a/m.py", "b/n.py", "somewhere"]
    assert [(s.line, s.function, s.count) for s in files[0].sites] == [("4", "<listcomp>", 3), ("30", "f", 3)]
    assert sum(s.count for f in files for s in f.sites) == sum(count for _, count in located)


# --- precision variants --------------------------------------------------------------------------


def test_precision_section_shows_each_variant_and_the_ops_it_adds(precision: Results) -> None:
    _, tree = render(precision)
    assert "#precision" in nav_anchors(tree)
    precision_section = section(tree, "precision")
    variants = details(precision, "precision").variants
    assert list(variants) == ["fp16", "int8"]
    for name, variant in variants.items():
        card = precision_section.by_id(f"precision-{name}")
        assert card is not None and name.upper() in card.find_all("h4")[0].text
        for text in (variant.path, variant.library, variant.library_version, *variant.notes):
            assert text in card.text
    (table,) = precision_section.find_all("table", "variant-ops")
    header = [th.text for th in table.find_all("thead")[0].find_all("th")]
    assert header == ["op", "FP32 (final)", "FP16", "INT8"]
    final = details(precision, "surgery").op_counts_after
    counts = {r.find_all("th")[0].text: [td.text for td in r.find_all("td")] for r in body_rows(table)}
    for op in ("Cast", "QuantizeLinear", "DequantizeLinear"):
        expected = [final.get(op, 0), *(v.op_counts.get(op, 0) for v in variants.values())]
        assert counts[op] == [fmt.number(n) for n in expected]
    totals = [sum(final.values()), *(sum(v.op_counts.values()) for v in variants.values())]
    assert counts["all nodes"] == [fmt.number(n) for n in totals]
    # ops no variant changes are left out (Conv: 60 in each)
    assert "Conv" not in counts and variants["int8"].op_counts["Conv"] == final["Conv"]


def test_fp16_range_check_without_flags_shows_thresholds_and_top_tensors(precision: Results) -> None:
    _, tree = render(precision)
    precision_section = section(tree, "precision")
    ranges = details(precision, "precision").fp16_range
    assert ranges.flagged == ()
    assert "No tensor outside FP16's range" in precision_section.text
    assert precision_section.find_all("table", "flagged") == []
    assert "65504" in precision_section.text
    assert f"{ranges.tensors_checked} tensors" in precision_section.text
    (top,) = precision_section.find_all("table", "top")
    rows = body_rows(top)
    assert [r.find_all("td")[0].text for r in rows] == [t.name for t in ranges.top]
    assert rows[0].find_all("td")[2].text == fmt.compact(ranges.top[0].max_abs)


def test_flagged_tensors_are_listed_with_their_flags_and_the_block_list_applied() -> None:
    results = fixtures.flagged_precision_results()
    _, tree = render(results)
    precision_section = section(tree, "precision")
    ranges = details(results, "precision").fp16_range
    (table,) = precision_section.find_all("table", "flagged")
    rows = body_rows(table)
    assert [r.find_all("td")[0].text for r in rows] == [t.name for t in ranges.flagged]
    for row, tensor in zip(rows, ranges.flagged, strict=True):
        cells = row.find_all("td")
        assert tensor.producer in cells[1].text and tensor.op_type in cells[1].text
        assert cells[3].text == fmt.percent(tensor.subnormal_fraction)
        assert all(flag in cells[5].text for flag in tensor.flags)
        bad = "bad" in (cells[2] if "overflow" in tensor.flags else cells[3]).classes
        assert bad
    assert "No tensor outside" not in precision_section.text
    assert all(node in precision_section.text for node in ranges.block_list)
    assert "applied to the FP16 variant" in precision_section.text


def test_block_list_the_run_did_not_apply_is_called_out() -> None:
    results = fixtures.flagged_precision_results()
    variants = dict(details(results, "precision").variants)
    variants["fp16"] = dataclasses.replace(variants["fp16"], block_list=())
    results = fixtures.replace_details(results, "precision", variants=variants)
    _, tree = render(results)
    text = section(tree, "precision").text
    assert "not applied" in text and "--no-fp16-block-list" in text


def test_failed_precision_stage_shows_why(precision: Results) -> None:
    results = fixtures.replace_stage(
        precision,
        "precision",
        status="failed",
        reason="ONNX Runtime cannot load model.final.onnx for the FP16 range check",
        details=None,
        artifacts={},
    )
    _, tree = render(results)
    precision_section = section(tree, "precision")
    assert "cannot load model.final.onnx" in precision_section.text
    assert precision_section.find_all("table") == []


# --- engines per precision -----------------------------------------------------------------------


def test_build_section_has_an_engine_row_per_precision_and_keeps_its_facts(precision: Results) -> None:
    _, tree = render(precision)
    build_section = section(tree, "build")
    build = details(precision, "build")
    (table,) = build_section.find_all("table", "engines")
    rows = body_rows(table)
    assert [r.find_all("td")[0].text for r in rows] == [p.upper() for p in build.engines]
    for row, engine in zip(rows, build.engines.values(), strict=True):
        cells = [td.text for td in row.find_all("td")]
        assert cells[1:] == [
            "built",
            engine.engine,
            fmt.size(engine.plan_size_bytes),
            fmt.number(engine.network_layers),
            fmt.duration(engine.build_seconds),
        ]
    facts = build_section.find_all("dl", "facts")[0].text
    assert build.primary.engine in facts and "profile of" in facts


def test_refused_engine_shows_the_builders_reason() -> None:
    results = fixtures.flagged_precision_results()
    _, tree = render(results)
    row = section(tree, "build").by_id("engine-int8")
    assert row is not None
    cells = row.find_all("td")
    assert cells[1].text == "refused"
    refusal = details(results, "build").engines["int8"]
    assert refusal.reason in cells[2].text and refusal.phase in cells[2].text
    assert all(message in cells[2].text for message in fixtures.INT8_REFUSAL)


# --- escaping and absence ------------------------------------------------------------------------


@pytest.mark.parametrize("make", [fixtures.unfixed_scan_results, fixtures.flagged_precision_results])
def test_hostile_names_are_escaped(make: Any) -> None:
    html, tree = render(make())
    assert "<script" not in html.lower()
    assert tree.find_all("script") == []
    assert "&lt;script&gt;" in html


def test_injected_location_and_tensor_name_read_as_text() -> None:
    _, scan_tree = render(fixtures.unfixed_scan_results())
    files = [span.text for span in section(scan_tree, "scan").find_all("span", "file")]
    assert fixtures.INJECTED_LOCATION.split(":")[0] in files
    _, precision_tree = render(fixtures.flagged_precision_results())
    names = [td.text for td in section(precision_tree, "precision").find_all("td", "name")]
    assert fixtures.INJECTED_TENSOR in names


def test_sections_are_absent_when_their_stages_did_not_run(scan: Results) -> None:
    # the saved YOLOv5 run scanned (finding nothing), ran no reduced precision, built one engine
    yolov5 = fixtures.yolov5_results()
    assert stage(yolov5, "scan").status == "ok" and stage(yolov5, "precision").status == "skipped"
    _, tree = render(yolov5)
    assert tree.by_id("scan") is not None and "#scan" in nav_anchors(tree)
    assert tree.by_id("precision") is None and "#precision" not in nav_anchors(tree)
    (engines,) = section(tree, "build").find_all("table", "engines")
    assert [r.attrs["id"] for r in body_rows(engines)] == ["engine-fp32"]
    # MVS ran no reduced precision either
    assert stage(scan, "precision").status == "skipped"
    _, tree = render(scan)
    assert tree.by_id("precision") is None and "#precision" not in nav_anchors(tree)
    assert tree.by_id("scan") is not None
    # a scan that did not run (a stage before it failed): no section, unless the export replaced calls
    not_run = fixtures.replace_stage(
        scan, "scan", status="skipped", reason="not run: stage 'samples' failed", details=None
    )
    _, tree = render(not_run)
    assert tree.by_id("scan") is not None  # the export's replacement calls are still shown
    assert "Scan skipped: not run: stage 'samples' failed" in section(tree, "scan").text
    skipped = fixtures.replace_details(not_run, "export", replacement_calls=(), unused_replacements=())
    _, tree = render(skipped)
    assert tree.by_id("scan") is None and "#scan" not in nav_anchors(tree)


@pytest.mark.skipif(chromium.unavailable_reason() is not None, reason=str(chromium.unavailable_reason()))
def test_new_sections_fit_1280px_without_scripts(tmp_path: Any) -> None:
    pages = {
        "scan": (fixtures.unfixed_scan_results(), ("#scan table.findings", "#scan table.calls")),
        "precision": (
            fixtures.flagged_precision_results(),
            ("#precision table.variant-ops", "#precision table.flagged", "#build table.engines"),
        ),
    }
    with chromium.chromium() as browser:
        for name, (results, tables) in pages.items():
            path = tmp_path / f"{name}.html"
            path.write_text(render_html(results))
            page = chromium.new_page(browser)
            try:
                page.goto(path.resolve().as_uri())
                assert page.evaluate("document.scripts.length") == 0
                for table in tables:
                    assert page.locator(table).is_visible(), table
                assert page.evaluate("document.scrollingElement.scrollWidth") <= chromium.WINDOW_WIDTH
            finally:
                page.close()
