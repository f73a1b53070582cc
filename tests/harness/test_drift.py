"""The version matrix's drift table (`harness index DIR --drift`, what `nox -s version-matrix` ends with)
on a real tiny run and copies of it as if made under other versions: an environment change is named in
its row, an unchanged copy is "no drift", a grown error is a regression; runs of other parameters are
another model and get no table. Also the noxfile's cells (one per onnxruntime version, overridable).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from trt_harness.harness.cli import main
from trt_harness.harness.drift import drift_diffs, finished_runs
from trt_harness.harness.pipeline import RunConfig, run_pipeline
from trt_harness.models.recipes import RECIPES
from trt_harness.models.results.document import load_results, save_results
from trt_harness.models.results.stages import CompareDetails

from tests.harness.diff_recipe import NAME, PLANTED, diff_noise
from tests.harness.test_diff import with_comparison
from tests.reports.page import parse

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registered() -> Iterator[None]:
    RECIPES.register(NAME, diff_noise)
    yield
    RECIPES.unregister(NAME)


@pytest.fixture(scope="module")
def base_run(registered: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("drift") / "base"
    results = run_pipeline(RunConfig(diff_noise(0.5), out, backends=("torch", "onnxrt")))
    assert results.verdict.passed, results.verdict
    return out


def as_other_version(base: Path, out: Path, *, ort: str, minutes: int, error_factor: float = 1.0) -> None:
    """A copy of `base` as if run `minutes` later under onnxruntime `ort`, `planted`'s error scaled."""
    shutil.copytree(base, out)
    results = load_results(out / "results.json")
    env = results.environment
    results = dataclasses.replace(
        results,
        environment=dataclasses.replace(env, packages={**env.packages, "onnxruntime": ort}),
        created_unix=results.created_unix + 60 * minutes,
        run_id=f"{results.run_id}-{ort}",
    )
    if error_factor != 1.0:
        details = results.details(CompareDetails)
        assert details is not None
        compare = next(c for c in details.comparisons if c.output == PLANTED)
        results = with_comparison(
            results,
            PLANTED,
            max_abs_err=compare.max_abs_err * error_factor,
            quantile_abs_err=compare.quantile_abs_err * error_factor,
        )
    save_results(results, out)


def drift_rows(index: Path) -> dict[str, tuple[str, str]]:
    """Per run of the drift table: (what differs, status badge)."""
    page = parse(index.read_text())
    rows = {}
    for row in page.find_all("tr", "drift-row"):
        cells = row.find_all("td")
        rows[cells[0].text.strip()] = (cells[1].text.strip(), cells[-1].text.strip())
    return rows


def test_drift_table_names_the_version_change_and_the_regression(base_run: Path, tmp_path: Path) -> None:
    artifacts = tmp_path / "matrix"
    shutil.copytree(base_run, artifacts / "onnxruntime-1.21.1")
    as_other_version(base_run, artifacts / "onnxruntime-1.22.1", ort="1.22.1", minutes=1)
    as_other_version(base_run, artifacts / "onnxruntime-1.23.2", ort="1.23.2", minutes=2, error_factor=10)

    assert main(["index", str(artifacts), "--drift"]) == 0
    rows = drift_rows(artifacts / "index.html")
    reference_ort = load_results(base_run / "results.json").environment.packages["onnxruntime"]
    assert set(rows) == {"onnxruntime-1.22.1", "onnxruntime-1.23.2"}  # the earliest run is the reference
    assert f"onnxruntime {reference_ort} → 1.22.1" in rows["onnxruntime-1.22.1"][0]
    assert rows["onnxruntime-1.22.1"][1] == "no drift"
    assert f"onnxruntime {reference_ort} → 1.23.2" in rows["onnxruntime-1.23.2"][0]
    assert rows["onnxruntime-1.23.2"][1] == "regressed"


def test_runs_of_other_parameters_are_another_model(base_run: Path, tmp_path: Path) -> None:
    artifacts = tmp_path / "matrix"
    shutil.copytree(base_run, artifacts / "a")
    other = load_results(base_run / "results.json")
    shutil.copytree(base_run, artifacts / "b")
    recipe = dataclasses.replace(other.recipe, params={"noise": 0.25})
    save_results(dataclasses.replace(other, recipe=recipe), artifacts / "b")
    assert drift_diffs(finished_runs(artifacts)) == ()
    assert main(["index", str(artifacts), "--drift"]) == 0
    assert drift_rows(artifacts / "index.html") == {}


def _noxfile():
    spec = importlib.util.spec_from_file_location("harness_noxfile", ROOT / "noxfile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_version_matrix_cells_one_per_onnxruntime_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    noxfile = _noxfile()
    monkeypatch.delenv("HARNESS_ORT_VERSIONS", raising=False)
    monkeypatch.delenv("HARNESS_RTX_VERSIONS", raising=False)
    cells = noxfile.version_matrix_cells()
    assert [c["onnxruntime"] for c in cells] == list(noxfile.ORT_VERSIONS)
    assert all(set(c) == {"onnxruntime"} for c in cells)  # one TensorRT for RTX version: no axis
    monkeypatch.setenv("HARNESS_ORT_VERSIONS", "1.22.1, 1.30.0")
    monkeypatch.setenv("HARNESS_RTX_VERSIONS", "1.6.0,1.7.1.116")
    cells = noxfile.version_matrix_cells()
    assert [noxfile.version_matrix_label(c) for c in cells] == [
        "onnxruntime-1.22.1-tensorrt-rtx-1.6.0",
        "onnxruntime-1.22.1-tensorrt-rtx-1.7.1.116",
        "onnxruntime-1.30.0-tensorrt-rtx-1.6.0",
        "onnxruntime-1.30.0-tensorrt-rtx-1.7.1.116",
    ]
