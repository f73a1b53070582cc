"""The reports as a person sees them: headless Chromium at 1280 px, offline, no script errors."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from trt_harness.models.results.document import Results, results_to_text
from trt_harness.reports.index import write_index
from trt_harness.reports.render import write_reports
from trt_harness.reports.sections.common import slugify

from tests.reports import browser as chromium
from tests.reports import results_fixtures as fixtures

pytestmark = pytest.mark.skipif(
    chromium.unavailable_reason() is not None, reason=str(chromium.unavailable_reason())
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium.chromium() as instance:
        yield instance


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Results]]:
    root = tmp_path_factory.mktemp("artifacts")
    built = {}
    for name, results in (("yolov5", fixtures.yolov5_results()), ("multi", fixtures.multi_output_results())):
        run_dir = root / name
        run_dir.mkdir()
        (run_dir / "results.json").write_text(results_to_text(results))
        write_reports(results, run_dir)
        built[name] = (run_dir / "report.html", results)
    return built


class Visit:
    """A page opened on a file, with everything the browser reported while loading it."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.page = chromium.new_page(browser)
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.url = path.resolve().as_uri()
        self.page.goto(self.url, wait_until="networkidle")

    def close(self) -> None:
        self.page.close()


@pytest.mark.parametrize("name", ["yolov5", "multi"])
def test_report_loads_offline_without_errors_and_fits_1280px(
    browser: Any, reports: dict[str, tuple[Path, Results]], name: str
) -> None:
    path, results = reports[name]
    visit = Visit(browser, path)
    page = visit.page
    try:
        assert visit.console_errors == [] and visit.page_errors == []
        # The file itself and nothing else: no network, no other file (data: images are not requests).
        assert [u for u in visit.requests if not u.startswith("data:")] == [visit.url]
        assert page.evaluate("document.scripts.length") == 0
        assert page.locator("#verdict").is_visible()
        verdict_word = "PASS" if results.verdict.passed else "FAIL"
        assert verdict_word in page.locator("#verdict").inner_text()
        for output in results.recipe.output_names:
            section = page.locator(f"#output-{slugify(output)}")
            assert section.is_visible()
            assert section.locator("h3").inner_text().startswith(output)
            histograms = section.locator("svg.histogram")
            assert histograms.count() >= 1
            for i in range(histograms.count()):
                box = histograms.nth(i).bounding_box()
                assert box is not None and box["width"] > 300 and box["height"] > 100
            assert section.locator(".badge").first.is_visible()
        width = page.evaluate("window.innerWidth")
        assert width == chromium.WINDOW_WIDTH
        assert page.evaluate("document.scrollingElement.scrollWidth") <= width
        # what a user sees is drawn, not blank: the verdict banner's colour and many others in the page
        shot = chromium.save_screenshot(page, path.with_name("report.png"))
        with Image.open(shot) as image:
            assert image.width == width and image.height > 900
            colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50
        banner = page.locator("#verdict").evaluate("e => getComputedStyle(e).backgroundColor")
        banner_rgb = tuple(int(c) for c in banner.removeprefix("rgb(").removesuffix(")").split(",")[:3])
        assert banner_rgb in {rgb for _, rgb in colours}
        target = chromium.requested_screenshot("yolov5-report.png") if name == "yolov5" else None
        if target is not None and target.resolve() != shot.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, target)
    finally:
        visit.close()


def test_hostile_name_shows_as_text_not_as_an_element(
    browser: Any, reports: dict[str, tuple[Path, Results]]
) -> None:
    path, _ = reports["multi"]
    visit = Visit(browser, path)
    page = visit.page
    try:
        assert page.locator("img").count() == 0
        heading = page.locator(f"#output-{slugify(fixtures.INJECTED_NAME)} h3 .name")
        assert heading.inner_text() == fixtures.INJECTED_NAME
        assert heading.evaluate("e => e.children.length") == 0
        assert page.get_by_text(fixtures.INJECTED_REASON).first.is_visible()
        assert page.locator("#mismatch-alert").is_visible()
        heatmaps = page.locator(f"#output-{slugify(fixtures.SPATIAL_OUTPUT)} svg.heatmap")
        assert heatmaps.count() == 3 * (1 + 3) and heatmaps.first.is_visible()  # 3 pairs: all, per sample
    finally:
        visit.close()


def test_index_links_to_each_report_and_fits_1280px(
    browser: Any, reports: dict[str, tuple[Path, Results]]
) -> None:
    index = write_index(reports["yolov5"][0].parent.parent)
    visit = Visit(browser, index)
    page = visit.page
    try:
        assert visit.console_errors == [] and visit.page_errors == []
        links = page.locator("#runs a")
        assert links.count() == 2
        page.locator("#runs a", has_text="multi-head").click()
        page.wait_for_load_state()
        assert page.url == reports["multi"][0].resolve().as_uri()
        assert page.evaluate("document.scrollingElement.scrollWidth") <= page.evaluate("window.innerWidth")
    finally:
        visit.close()


def test_where_it_diverges_renders_the_curve_and_first_divergence_without_errors(
    browser: Any, tmp_path: Path
) -> None:
    """A real localization (the planted erf of tests/harness/test_localize.py), as a person sees it."""
    from trt_harness.conversions.replacements import _registry
    from trt_harness.harness.pipeline import RunConfig, localize_and_report, run_pipeline

    from tests.harness import test_localize as planted

    planted.register_plant()
    try:
        recipe = planted.recipe("torchscript", planted=True)
        run_pipeline(RunConfig(recipe, tmp_path, backends=("torch", "onnxrt")))
        results = localize_and_report(tmp_path, recipe)
    finally:
        _registry.REPLACEMENTS.unregister(planted.PLANT)
    assert results.localization.curves[0].first_divergence == planted.PLANTED

    visit = Visit(browser, tmp_path / "report.html")
    page = visit.page
    try:
        assert visit.console_errors == [] and visit.page_errors == []
        section = page.locator("#divergence")
        assert section.is_visible() and section.locator("h2").inner_text() == "Where it diverges"
        assert page.locator("nav.contents a[href='#divergence']").count() == 1
        first = page.locator("#first-divergence-fp32")
        assert planted.PLANTED in first.inner_text() and "ErfMix" in first.inner_text()
        chart = section.locator("svg.chart.divergence").first
        box = chart.bounding_box()
        assert box is not None and box["width"] > 400 and box["height"] > 150
        curve = results.localization.curves[0]
        assert chart.locator("circle").count() == len(curve.layers)
        assert section.locator("table.jumps tr.first td.mono").first.inner_text() == planted.PLANTED
        assert page.evaluate("document.scrollingElement.scrollWidth") <= page.evaluate("window.innerWidth")
        shot = tmp_path / "divergence.png"
        section.screenshot(path=str(shot))
        with Image.open(shot) as image:
            assert image.width > 600 and image.height > 300
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or ()) > 20
        target = chromium.requested_screenshot("divergence-section.png")
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, target)
    finally:
        visit.close()
