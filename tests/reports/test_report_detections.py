from __future__ import annotations

import base64
import io
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from trt_harness.models.results.document import Results, results_to_text
from trt_harness.reports.junit import junit_xml
from trt_harness.reports.page import ReportView
from trt_harness.reports.render import render_html, write_reports
from trt_harness.reports.sections.detections import DRAWN_IMAGE_SIDE

from tests.harness import detection_runs as runs
from tests.reports.page import Element, parse

REPO = Path(__file__).resolve().parents[2]
JPEG_URI = "data:image/jpeg;base64,"
RUNNERS = ("torch", "onnxrt", "onnxrt-fp16")
SAMPLES, BATCH = 2, 2  # four images
FAILING_IMAGE = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Results]:
    """Torch, ORT shifted by 12 px on one image (gated: fails), ORT FP16 shifted everywhere (informational)."""
    run_dir = tmp_path_factory.mktemp("detector-run")
    outputs = {
        "torch": runs.outputs_per_sample(SAMPLES, BATCH),
        "onnxrt": runs.outputs_per_sample(SAMPLES, BATCH, runs.shift_boxes(12.0, images=[FAILING_IMAGE])),
        "onnxrt-fp16": runs.outputs_per_sample(SAMPLES, BATCH, runs.shift_boxes(12.0)),
    }
    results = runs.write_run(run_dir, outputs, batch=BATCH)
    write_reports(results, run_dir)
    return run_dir, results


@pytest.fixture(scope="module")
def page(run: tuple[Path, Results]) -> tuple[str, Element]:
    html = (run[0] / "report.html").read_text()
    return html, parse(html)


def section(tree: Element) -> Element:
    found = tree.by_id("detections")
    assert found is not None, "no Detections section"
    return found


def test_detections_section_is_linked_from_the_contents(page: tuple[str, Element]) -> None:
    _, tree = page
    (nav,) = tree.find_all("nav", "contents")
    assert "#detections" in [a.attrs.get("href") for a in nav.find_all("a")]
    section(tree)


def test_agreement_table_has_one_row_per_pair_and_image(
    page: tuple[str, Element], run: tuple[Path, Results]
) -> None:
    _, tree = page
    (table,) = section(tree).find_all("table", "detections")
    bodies = table.find_all("tbody")
    assert len(bodies) == 2  # torch-onnxrt (gated), torch-onnxrt-fp16 (informational)
    assert [b.classes & {"gated", "informational"} for b in bodies] == [{"gated"}, {"informational"}]
    images = SAMPLES * BATCH
    assert all(len(b.find_all("tr")) == images for b in bodies)
    gated_rows = bodies[0].find_all("tr")
    states = [row.find_all(None, "badge")[0].text.strip().lower() for row in gated_rows]
    assert states == ["disagree" if i == FAILING_IMAGE else "agree" for i in range(images)]
    assert "Torch vs ORT" in bodies[0].find_all("th", "pair")[0].text
    # the failing image: 3 boxes each side, none matched, so all are listed as unmatched
    failing = gated_rows[FAILING_IMAGE].text
    assert "3 / 3" in failing and "0 %" in failing
    assert "informational" in bodies[1].text and "differs" in bodies[1].text.lower()


def test_reduced_precision_is_said_to_be_informational(page: tuple[str, Element]) -> None:
    _, tree = page
    text = " ".join(section(tree).text.split())
    assert "Pairs at FP32 gate the verdict" in text
    assert "Pairs at reduced precision (FP16) are informational" in text


def test_each_image_is_drawn_once_per_runner_side_by_side_as_small_jpegs(page: tuple[str, Element]) -> None:
    _, tree = page
    articles = section(tree).find_all("article", "detection-image")
    assert [a.attrs["id"] for a in articles] == [f"detections-image-{i}" for i in range(SAMPLES * BATCH)]
    for article in articles:
        (panels,) = article.find_all("div", "panels")
        images = panels.find_all("img")
        assert len(images) == len(RUNNERS)
        for img in images:
            src = img.attrs["src"]
            assert src.startswith(JPEG_URI)
            picture = Image.open(io.BytesIO(base64.b64decode(src[len(JPEG_URI) :])))
            assert picture.format == "JPEG" and picture.width <= DRAWN_IMAGE_SIDE
        captions = [" ".join(f.text.split()) for f in panels.find_all("figcaption")]
        assert [c.split(" · ")[0] for c in captions] == ["Torch", "ORT", "ORT FP16"]
    failing = articles[FAILING_IMAGE]
    assert "fail" in failing.classes
    assert "0 matched with Torch" in failing.text


def test_drawn_boxes_differ_where_the_candidate_moved(page: tuple[str, Element]) -> None:
    _, tree = page

    def pixels(article: Element, panel: int) -> Any:
        import numpy as np

        src = article.find_all("img")[panel].attrs["src"]
        grey = Image.open(io.BytesIO(base64.b64decode(src[len(JPEG_URI) :]))).convert("L")
        return np.asarray(grey, dtype=float)[-runs.IMAGE_SIZE :]  # below the title band

    articles = section(tree).find_all("article", "detection-image")
    agreeing, moved = articles[0], articles[FAILING_IMAGE]
    # JPEG noise is a few grey levels; a box drawn 12 px away changes whole lines of pixels.
    assert abs(pixels(agreeing, 0) - pixels(agreeing, 1)).mean() < 1.0
    assert (
        abs(pixels(moved, 0) - pixels(moved, 1)).mean()
        > 2 * abs(pixels(agreeing, 0) - pixels(agreeing, 1)).mean()
    )


def test_class_names_and_everything_else_are_escaped(page: tuple[str, Element]) -> None:
    html, tree = page
    assert "<script" not in html and "<b>bus" not in html
    assert "&lt;script&gt;alert(" in html and "car &amp; &lt;b&gt;bus&lt;/b&gt;" in html
    # the unmatched boxes of the failing image are listed by (hostile) class name, as text
    assert runs.CLASS_NAMES[1] in section(tree).text and runs.CLASS_NAMES[2] in section(tree).text
    assert not tree.find_all("script") and not tree.find_all("b")


def test_report_stays_self_contained(page: tuple[str, Element]) -> None:
    html, tree = page
    for forbidden in ("http://", "https://", "<link", "@import", "@font-face", "<iframe", "<object"):
        assert forbidden not in html.lower()
    for element in tree.iter():
        for attribute in ("src", "href", "xlink:href"):
            value = element.attrs.get(attribute)
            if value is not None:
                assert value.startswith(("#", "data:image/png;base64,", JPEG_URI)), value[:60]


def test_verdict_names_the_disagreeing_pair_and_image(page: tuple[str, Element]) -> None:
    _, tree = page
    verdict = tree.by_id("verdict")
    assert verdict is not None
    assert f"detections disagree: Torch vs ORT on image {FAILING_IMAGE}" in verdict.text


def test_without_the_run_directory_the_table_stays_and_images_are_explained(
    run: tuple[Path, Results],
) -> None:
    tree = parse(render_html(run[1]))
    detections = section(tree)
    assert not detections.find_all("img")
    assert len(detections.find_all("table", "detections")) == 1
    assert "rendered without its run directory" in detections.text


def test_reports_of_runs_without_detections_have_no_section(tmp_path: Path) -> None:
    import dataclasses

    reference = runs.outputs_per_sample(1, 1)
    recipe = dataclasses.replace(runs.detector_recipe(), detection=None)
    results = runs.write_run(tmp_path, {"torch": reference, "onnxrt": reference}, recipe)
    tree = parse(render_html(results, tmp_path))
    assert tree.by_id("detections") is None
    assert ReportView(results).detections is None


def test_no_boxes_anywhere_is_called_out(tmp_path: Path) -> None:
    recipe = runs.detector_recipe(conf_thres=0.99)
    reference = runs.outputs_per_sample(1, 1)
    results = runs.write_run(tmp_path, {"torch": reference, "onnxrt": reference}, recipe)
    text = " ".join(section(parse(render_html(results, tmp_path))).text.split())
    assert "agree trivially" in text


def junit_cases(results: Results) -> dict[str, ET.Element]:
    root = ET.fromstring(junit_xml(results))
    (suite,) = root.findall("testsuite")
    return {case.get("name", ""): case for case in suite.findall("testcase")}


def test_junit_has_a_case_per_gated_pair_and_image_and_skips_informational_pairs(
    run: tuple[Path, Results],
) -> None:
    cases = junit_cases(run[1])
    gated = {n: c for n, c in cases.items() if n.startswith("detections:output0[torch-vs-onnxrt][image ")}
    assert sorted(gated) == [
        f"detections:output0[torch-vs-onnxrt][image {i}]" for i in range(SAMPLES * BATCH)
    ]
    for name, case in gated.items():
        failure = case.find("failure")
        assert (failure is not None) == name.endswith(f"[image {FAILING_IMAGE}]")
    failure = gated[f"detections:output0[torch-vs-onnxrt][image {FAILING_IMAGE}]"].find("failure")
    assert failure is not None and failure.get("type") == "DetectionsDisagree"
    assert "matched fraction" in failure.get("message", "")
    informational = cases["detections:output0[torch-vs-onnxrt-fp16]"]
    skipped = informational.find("skipped")
    assert skipped is not None and f"differ on {SAMPLES * BATCH} of {SAMPLES * BATCH}" in skipped.get(
        "message", ""
    )
    assert not any(n.startswith("detections:output0[torch-vs-onnxrt-fp16][image") for n in cases)


def test_rendering_detections_imports_no_heavy_backend(run: tuple[Path, Results], tmp_path: Path) -> None:
    run_dir, results = run
    copy = tmp_path / "run"
    copy.mkdir()
    (copy / "results.json").write_text(results_to_text(results))
    (copy / "detection_images.npz").write_bytes((run_dir / "detection_images.npz").read_bytes())
    script = f"""
import sys
from pathlib import Path
from trt_harness.models.results.document import load_results
from trt_harness.reports.render import write_reports
out = Path({str(copy)!r})
write_reports(load_results(out), out)
assert "data:image/jpeg" in (out / "report.html").read_text()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {{"torch", "tensorrt", "tensorrt_rtx", "onnxruntime", "polygraphy", "onnx", "harness"}})
print(heavy)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
