"""Headless Chromium (Debian's `chromium` package) driven by Playwright, for report tests and screenshots.

Nothing is downloaded: Playwright launches the system Chromium (no `playwright install`).
`HARNESS_SCREENSHOT=<path>` makes the browser test save a full-page PNG of the YOLOv5 report
(beside the report, and copied to <path>; a directory gets `yolov5-report.png`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
SCREENSHOT_ENV = "HARNESS_SCREENSHOT"
WINDOW_WIDTH = 1280
WINDOW_HEIGHT = 900


def chromium_path() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


def unavailable_reason() -> str | None:
    """Why a headless browser cannot run here, or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return (
            "Playwright for Python is not installed (pip install playwright; no `playwright install` needed)"
        )
    if chromium_path() is None:
        return "Chromium is not installed (apt-get install -y chromium)"
    return None


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (Playwright `Browser`)."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise RuntimeError("Chromium is not installed (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Any, width: int = WINDOW_WIDTH, height: int = WINDOW_HEIGHT) -> Any:
    return browser.new_page(viewport={"width": width, "height": height})


def save_screenshot(page: Any, path: Path) -> Path:
    """Full-page PNG of what `page` shows, written to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def screenshot_report(report: Path, path: Path, width: int = WINDOW_WIDTH) -> Path:
    """Open `report` (an HTML file) in a `width` px wide window and save a full-page PNG to `path`."""
    with chromium() as browser:
        page = new_page(browser, width)
        page.goto(report.resolve().as_uri())
        return save_screenshot(page, path)


def requested_screenshot(name: str) -> Path | None:
    """Where `HARNESS_SCREENSHOT` asks for the screenshot `name`, or None when it is not set."""
    value = os.environ.get(SCREENSHOT_ENV)
    if not value:
        return None
    target = Path(value)
    return target / name if target.is_dir() else target
