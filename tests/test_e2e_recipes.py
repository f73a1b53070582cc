"""Every classic recipe through every stage on CPU, TensorRT for RTX build included (what convert-all runs)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from trt_harness.models.core.errors import ExitCode
from trt_harness.models.results.document import load_results
from trt_harness.models.results.stages import CompareDetails

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    return {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path_factory.mktemp("cache")), "CI": "true"}


@pytest.mark.parametrize("recipe", ["mnist", "resnet50", "yolov8"])
def test_recipe_passes_end_to_end(recipe, tmp_path, env):
    out = tmp_path / recipe
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "convert", recipe, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == ExitCode.PASSED, proc.stdout + proc.stderr
    results = load_results(out)
    assert results.stage("build").status == "ok"
    compare = results.details(CompareDetails)
    assert compare.comparisons and all(c.passed for c in compare.comparisons)
    if recipe in ("mnist", "resnet50"):
        # classifiers gate on the predicted class too
        assert all(c.argmax_agreement == 1.0 for c in compare.comparisons)
    if recipe == "yolov8":
        assert compare.detections is not None and compare.detections.passed
        assert any(p.gated for p in compare.detections.pairs)

    index = subprocess.run(
        [sys.executable, "-m", "harness", "index", str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert index.returncode == 0 and recipe in (tmp_path / "index.html").read_text()
