from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from trt_harness.models.results.comparisons import SAMPLES
from trt_harness.models.results.document import Results
from trt_harness.models.results.stages import CompareDetails, RunDetails
from trt_harness.reports.junit import junit_xml, write_junit

from tests.reports import results_fixtures as fixtures

PAIR_CASE = re.compile(r"^(?P<output>.+)\[(?P<ref>[a-z0-9]+)-vs-(?P<cand>[a-z0-9-]+?)(@(?P<at>[^\]]+))?\]$")


def cases(xml: str) -> dict[str, ET.Element]:
    root = ET.fromstring(xml)
    (suite,) = root.findall("testsuite")
    return {case.get("name", ""): case for case in suite.findall("testcase")}


def output_pair_cases(xml: str) -> dict[tuple[str, str, str, str], ET.Element]:
    """(output, reference, candidate, sample set) -> the case of that comparison."""
    found = {}
    for name, case in cases(xml).items():
        match = PAIR_CASE.match(name)
        if match and not name.startswith(("crossmatch[", "detections:")):
            found[(match["output"], match["ref"], match["cand"], match["at"] or SAMPLES)] = case
    return found


def compare_details(results: Results) -> CompareDetails:
    found = results.details(CompareDetails)
    assert found is not None
    return found


@pytest.fixture(scope="module")
def multi() -> Results:
    return fixtures.multi_output_results()


def test_one_case_per_output_and_backend_pair_with_failures_from_the_comparison(multi: Results) -> None:
    xml = junit_xml(multi)
    pair_cases = output_pair_cases(xml)
    pairs = [("torch", "onnxrt"), ("onnxrt", "tensorrt"), ("torch", "tensorrt")]
    expected = {(o, r, c, SAMPLES) for o in multi.recipe.output_names for r, c in pairs}
    assert set(pair_cases) == expected
    comparisons = compare_details(multi).comparisons
    assert {(c.output, c.ref_backend, c.cand_backend, c.sample_set) for c in comparisons} == expected
    assert any(c.passed for c in comparisons) and not all(c.passed for c in comparisons)
    for comparison in comparisons:
        case = pair_cases[
            (comparison.output, comparison.ref_backend, comparison.cand_backend, comparison.sample_set)
        ]
        assert case.get("classname") == "harness.multi-head"
        failure = case.find("failure")
        assert (failure is None) == comparison.passed
        if failure is not None:
            assert failure.get("message") == comparison.reason
            assert failure.get("type") == "AccuracyFailed"


def test_suite_counts_match_its_cases(multi: Results) -> None:
    root = ET.fromstring(junit_xml(multi))
    (suite,) = root.findall("testsuite")
    all_cases = suite.findall("testcase")
    assert suite.get("name") == "multi-head"
    assert int(suite.get("tests", -1)) == len(all_cases)
    assert int(suite.get("failures", -1)) == sum(c.find("failure") is not None for c in all_cases) > 0
    assert int(suite.get("skipped", -1)) == sum(c.find("skipped") is not None for c in all_cases)
    assert root.get("tests") == suite.get("tests")


def test_ordering_mismatch_is_a_failing_crossmatch_case(multi: Results) -> None:
    found = cases(junit_xml(multi))
    assert found["crossmatch[torch-vs-onnxrt]"].find("failure") is None
    for pair in ("onnxrt-vs-tensorrt", "torch-vs-tensorrt"):
        failure = found[f"crossmatch[{pair}]"].find("failure")
        assert failure is not None and "ordering mismatch" in failure.get("message", "")
        assert failure.get("type") == "OrderingMismatch"
        # escaped by the writer, intact when parsed
        assert fixtures.INJECTED_NAME in failure.get("message", "")


def test_tensorrt_built_not_executed_is_skipped_not_failed() -> None:
    results = fixtures.yolov5_results()
    xml = junit_xml(results)
    found = cases(xml)
    skipped = found["backend:tensorrt"].find("skipped")
    assert skipped is not None and "built, not executed" in skipped.get("message", "")
    assert found["backend:torch"].find("skipped") is None and found["backend:torch"].find("failure") is None
    pair_cases = output_pair_cases(xml)
    comparisons = {
        (c.output, c.ref_backend, c.cand_backend, c.sample_set): c
        for c in compare_details(results).comparisons
    }
    # one output: Torch vs ORT on each sample set, and the two pairs with TensorRT on the samples
    assert set(pair_cases) == set(comparisons) | {
        ("output0", "onnxrt", "tensorrt", SAMPLES),
        ("output0", "torch", "tensorrt", SAMPLES),
    }
    assert {at for _, _, _, at in comparisons} == set(fixtures.details(results, "samples").sets)
    for key, case in pair_cases.items():
        if "tensorrt" in key[1:3]:
            assert case.find("failure") is None
            assert "built, not executed" in case.find("skipped").get("message", "")
        else:
            assert case.find("skipped") is None
            assert (case.find("failure") is None) == comparisons[key].passed


def test_profile_sample_sets_are_named_in_their_cases() -> None:
    results = fixtures.yolov5_results()
    names = set(cases(junit_xml(results)))
    for sample_set in fixtures.details(results, "samples").sets:
        name = (
            "output0[torch-vs-onnxrt]" if sample_set == SAMPLES else f"output0[torch-vs-onnxrt@{sample_set}]"
        )
        assert name in names


def test_failed_stage_is_a_failing_stage_case() -> None:
    results = fixtures.failed_build_results()
    found = cases(junit_xml(results))
    failure = found["stage:build"].find("failure")
    assert failure is not None and fixtures.INJECTED_NAME in failure.get("message", "")
    assert failure.get("type") == "StageFailed"
    assert found["stage:export"].find("failure") is None and found["stage:export"].find("skipped") is None
    assert "not run" in found["stage:run"].find("skipped").get("message", "")
    # no runner ran: the backends and output pairs are not listed as passing
    run = results.details(RunDetails)
    assert run is None and not any(name.startswith("backend:") for name in found)


def test_text_xml_cannot_hold_still_gives_valid_xml(tmp_path: Path) -> None:
    reason = 'bad \x00 byte \x1b[31m and ]]> and "quotes" & <tags>'
    results = fixtures.replace_stage(fixtures.failed_build_results(), "build", reason=reason)
    path = tmp_path / "junit.xml"
    write_junit(results, path)
    failure = cases(path.read_text())["stage:build"].find("failure")
    assert failure is not None
    message = failure.get("message", "")
    assert ']]> and "quotes" & <tags>' in message and "\x00" not in message
