from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from reports.junit import junit_xml, write_junit
from tests.reports import results_fixtures as fixtures

PAIR_CASE = re.compile(r"^(?P<output>.+)\[(?P<ref>[a-z]+)-vs-(?P<cand>[a-z]+)\]$")


def cases(xml: str) -> dict[str, ET.Element]:
    root = ET.fromstring(xml)
    (suite,) = root.findall("testsuite")
    return {case.get("name", ""): case for case in suite.findall("testcase")}


def output_pair_cases(xml: str) -> dict[tuple[str, str, str], ET.Element]:
    found = {}
    for name, case in cases(xml).items():
        match = PAIR_CASE.match(name)
        if match and not name.startswith("crossmatch["):
            found[(match["output"], match["ref"], match["cand"])] = case
    return found


@pytest.fixture(scope="module")
def multi() -> dict[str, Any]:
    return fixtures.multi_output_results()


def test_one_case_per_output_and_backend_pair_with_failures_from_the_comparison(
    multi: dict[str, Any],
) -> None:
    xml = junit_xml(multi)
    pair_cases = output_pair_cases(xml)
    pairs = [("torch", "onnxrt"), ("onnxrt", "tensorrt"), ("torch", "tensorrt")]
    assert set(pair_cases) == {(o, r, c) for o in multi["recipe"]["output_names"] for r, c in pairs}
    compare = next(s for s in multi["stages"] if s["name"] == "compare")["details"]
    for comparison in compare["comparisons"]:
        case = pair_cases[(comparison["output"], comparison["ref_backend"], comparison["cand_backend"])]
        assert case.get("classname") == "harness.multi-head"
        failure = case.find("failure")
        assert (failure is None) == comparison["passed"]
        if failure is not None:
            assert failure.get("message") == comparison["reason"]


def test_suite_counts_match_its_cases(multi: dict[str, Any]) -> None:
    root = ET.fromstring(junit_xml(multi))
    (suite,) = root.findall("testsuite")
    all_cases = suite.findall("testcase")
    assert suite.get("name") == "multi-head"
    assert int(suite.get("tests", -1)) == len(all_cases)
    assert int(suite.get("failures", -1)) == sum(c.find("failure") is not None for c in all_cases)
    assert int(suite.get("skipped", -1)) == sum(c.find("skipped") is not None for c in all_cases)
    assert root.get("tests") == suite.get("tests")


def test_ordering_mismatch_is_a_failing_crossmatch_case(multi: dict[str, Any]) -> None:
    found = cases(junit_xml(multi))
    assert found["crossmatch[torch-vs-onnxrt]"].find("failure") is None
    for pair in ("onnxrt-vs-tensorrt", "torch-vs-tensorrt"):
        failure = found[f"crossmatch[{pair}]"].find("failure")
        assert failure is not None and "ordering mismatch" in failure.get("message", "")
        assert fixtures.INJECTED_NAME in failure.get(
            "message", ""
        )  # escaped by the writer, intact when parsed


def test_tensorrt_built_not_executed_is_skipped_not_failed() -> None:
    xml = junit_xml(fixtures.yolov5_results())
    found = cases(xml)
    skipped = found["backend:tensorrt"].find("skipped")
    assert skipped is not None and "built, not executed" in skipped.get("message", "")
    pair_cases = output_pair_cases(xml)
    assert len(pair_cases) == 3  # one output, three pairs
    for (_output, ref, cand), case in pair_cases.items():
        if "tensorrt" in (ref, cand):
            assert case.find("failure") is None
            assert "built, not executed" in case.find("skipped").get("message", "")
        else:
            assert case.find("failure") is not None  # the saved run is out of tolerance


def test_failed_stage_is_a_failing_stage_case() -> None:
    found = cases(junit_xml(fixtures.failed_build_results()))
    failure = found["stage:build"].find("failure")
    assert failure is not None and fixtures.INJECTED_NAME in failure.get("message", "")
    assert found["stage:export"].find("failure") is None and found["stage:export"].find("skipped") is None
    assert "not run" in found["stage:run"].find("skipped").get("message", "")


def test_text_xml_cannot_hold_still_gives_valid_xml(tmp_path: Path) -> None:
    results = fixtures.failed_build_results()
    build = next(s for s in results["stages"] if s["name"] == "build")
    build["reason"] = 'bad \x00 byte \x1b[31m and ]]> and "quotes" & <tags>'
    path = tmp_path / "junit.xml"
    write_junit(results, path)
    failure = cases(path.read_text())["stage:build"].find("failure")
    assert failure is not None
    message = failure.get("message", "")
    assert ']]> and "quotes" & <tags>' in message and "\x00" not in message
