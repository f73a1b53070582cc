"""JUnit XML of one run, so CI lists each stage, backend, output comparison and ordering check.

One <testsuite> per recipe (classname `harness.<recipe>`), with test cases:

- `stage:<name>` per ledger stage: failed -> <failure>, skipped -> <skipped>;
- `backend:<name>` per backend: not executed (TensorRT "built, not executed" included) -> <skipped>;
- `<output>[<ref>-vs-<cand>]` per output and backend pair: out of tolerance, no signal (not
  accepted) or missing -> <failure>, a pair with a backend that did not run (or a compare stage
  that did not) -> <skipped>;
- `check:<output>:<check>[<ref>-vs-<cand>]` per check the recipe declares (Recipe.checks), output and
  pair: the check failed -> <failure> (type CheckFailed), not judged (pair skipped, output missing)
  -> <skipped>; a failing check fails only its own case, not the output's;
- `crossmatch[<ref>-vs-<cand>]` per compared pair: an ordering mismatch -> <failure>;
- `detections:<output>[<ref>-vs-<cand>][image <i>]` per image of a pair at a gated precision:
  disagreeing boxes -> <failure>; `detections:<output>[<ref>-vs-<cand>]` per informational pair
  (reduced precision), always <skipped> with how many images differ.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from trt_harness.models.core.artifacts import write_text_atomic
from trt_harness.models.results.comparisons import SAMPLES
from trt_harness.models.results.diff import RunDiff
from trt_harness.models.results.document import Results
from trt_harness.models.results.stages import CompareDetails
from trt_harness.reports.page import ReportView

# Characters XML 1.0 cannot hold even escaped; ElementTree would write them and produce invalid XML.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: Any) -> str:
    return _NOT_XML.sub("\ufffd", str(text))


def _case(suite: ET.Element, classname: str, name: str, seconds: float = 0.0) -> ET.Element:
    return ET.SubElement(
        suite, "testcase", name=_clean(name), classname=_clean(classname), time=f"{seconds:.3f}"
    )


def _fail(case: ET.Element, message: str, text: str = "", kind: str = "failure") -> None:
    element = ET.SubElement(case, "failure", message=_clean(message), type=kind)
    element.text = _clean(text or message)


def _skip(case: ET.Element, message: str) -> None:
    ET.SubElement(case, "skipped", message=_clean(message))


def junit_tree(results: Results) -> ET.ElementTree:
    view = ReportView(results)
    recipe = results.recipe.name
    classname = f"harness.{recipe}"
    suite = ET.Element("testsuite", name=_clean(recipe))

    for stage in results.stages:
        case = _case(suite, classname, f"stage:{stage.name}", stage.duration_s)
        if stage.status == "failed":
            _fail(case, stage.reason or "stage failed", kind="StageFailed")
        elif stage.status in ("skipped", "interrupted"):
            _skip(case, stage.reason or f"stage {stage.status}")

    for runner_name, runner in view.runners.items():
        case = _case(suite, classname, f"backend:{runner_name}")
        if not runner.executed:
            _skip(case, f"{runner.display_name} {runner.state}: {runner.reason or 'no reason recorded'}")

    for output in view.outputs:
        for pair in output.pairs:
            at = "" if pair.sample_set == SAMPLES else f"@{pair.sample_set}"
            case = _case(suite, classname, f"{output.name}[{pair.ref}-vs-{pair.cand}{at}]")
            comparison = pair.comparison
            if pair.state == "skipped":
                _skip(case, pair.summary)
            elif pair.state == "fail":
                # a failing OutputComparison is falsy: test for None, not truth
                compared = comparison is not None
                message = comparison.statistics_reason if comparison is not None else pair.summary
                # the case name carries the sample set as `@set`; the text names it as the report does
                detail = f"{pair.failure_label or pair.label}: {pair.summary}" + (
                    f"\n{message}" if compared else ""
                )
                if message:  # empty: only the recipe's checks failed, each in its own case
                    _fail(case, message, detail, kind="AccuracyFailed" if compared else "MissingOutput")
            _check_cases(suite, classname, results, output.name, pair, at)

    compare = results.details(CompareDetails)
    for crossmatch in compare.crossmatch if compare else ():
        case = _case(suite, classname, f"crossmatch[{crossmatch.ref_backend}-vs-{crossmatch.cand_backend}]")
        if crossmatch.mismatches:
            _fail(case, "; ".join(crossmatch.mismatches), kind="OrderingMismatch")

    if view.detections is not None:
        _detection_cases(suite, classname, view)

    if results.baseline is not None:
        _baseline_cases(suite, classname, results.baseline)

    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", "0")
    suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))
    suite.set("time", f"{sum(s.duration_s for s in results.stages):.3f}")
    root = ET.Element("testsuites", name="harness")
    for key in ("tests", "failures", "errors", "skipped", "time"):
        root.set(key, suite.get(key, "0"))
    root.append(suite)
    ET.indent(root)
    return ET.ElementTree(root)


def _check_cases(
    suite: ET.Element, classname: str, results: Results, output: str, pair: Any, at: str
) -> None:
    """One case per check the recipe declares on `output`, for this pair."""
    outcomes = {o.name: o for o in pair.comparison.checks} if pair.comparison is not None else {}
    for check in results.recipe.checks.get(output, ()):
        case = _case(suite, classname, f"check:{output}:{check.name}[{pair.ref}-vs-{pair.cand}{at}]")
        outcome = outcomes.get(check.name)
        if outcome is None:
            why = pair.summary if pair.state == "skipped" else f"{output} was not compared for this pair"
            _skip(case, f"not judged: {why}")
        elif not outcome.passed:
            threshold = f" {outcome.relation} {outcome.threshold:g}" if outcome.threshold is not None else ""
            value = "-" if outcome.value is None else f"{outcome.value:.6g}"
            detail = f"{pair.label}: {check.kind} value {value} (required{threshold or ' by the function'})\n{outcome.reason}"
            _fail(case, outcome.reason, detail, kind="CheckFailed")


def _detection_cases(suite: ET.Element, classname: str, view: ReportView) -> None:
    detections = view.detections
    assert detections is not None
    output = detections.spec.output
    informational: dict[tuple[str, str], list[bool]] = {}
    for row in detections.rows:
        if not row.gated:
            informational.setdefault((row.ref, row.cand), []).append(row.passed)
            continue
        case = _case(suite, classname, f"detections:{output}[{row.ref}-vs-{row.cand}][image {row.image}]")
        if not row.passed:
            message = f"{row.label} on image {row.image}: " + "; ".join(row.failures)
            _fail(case, message, kind="DetectionsDisagree")
    for (ref, cand), passed in informational.items():
        case = _case(suite, classname, f"detections:{output}[{ref}-vs-{cand}]")
        differing = passed.count(False)
        _skip(
            case,
            f"informational ({view.pair_label(ref, cand)} is not at a gated precision): "
            f"detections differ on {differing} of {len(passed)} image(s)",
        )


def _baseline_cases(suite: ET.Element, classname: str, diff: RunDiff) -> None:
    """One case per comparison and detection pair the baseline gate judged: failed when it regressed."""
    for c in diff.comparisons:
        at = "" if c.sample_set == SAMPLES else f"@{c.sample_set}"
        prec = "" if c.precision == "fp32" else f":{c.precision}"
        case = _case(suite, classname, f"baseline:{c.output}[{c.ref_backend}-vs-{c.cand_backend}{at}{prec}]")
        if c.regressed:
            _fail(case, "; ".join(c.regressions), kind="BaselineRegression")
        elif c.status in ("added", "removed"):
            _skip(case, f"{c.status}: compared in only one of the baseline ({diff.a.source}) and this run")
    for d in diff.detections:
        prec = "" if d.precision == "fp32" else f":{d.precision}"
        case = _case(
            suite, classname, f"baseline:detections:{d.output}[{d.ref_backend}-vs-{d.cand_backend}{prec}]"
        )
        if d.regressed:
            _fail(case, "; ".join(d.regressions), kind="BaselineRegression")
        elif not d.gated or d.status in ("added", "removed"):
            _skip(case, f"{d.status}{'' if d.gated else ', informational'}")


def junit_xml(results: Results) -> str:
    root = junit_tree(results).getroot()
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(results: Results, path: Path) -> None:
    """Write the JUnit XML of `results` (one run) to `path`."""
    write_text_atomic(path, junit_xml(results))
