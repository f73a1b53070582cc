"""The stage cache, through the pipeline: what a warm run serves, what a change re-runs, and which
code each stage's key covers (its import closure, `harness.code_keys`)."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import trt_harness.harness.pipeline as pipeline
import trt_harness.harness.stages.base as stage_base
import trt_harness.harness.stages.build as build_stage
from trt_harness.harness.cache import CacheEntry, StageCache
from trt_harness.harness.code_keys import ROOT, closure, code_hash, module_file
from trt_harness.harness.pipeline import STAGES, RunConfig, run_pipeline, stage_key
from trt_harness.harness.stages.base import Stage, StageInput
from trt_harness.harness.stages.samples import STAGE as SAMPLES_STAGE
from trt_harness.models.core.artifacts import Artifact
from trt_harness.models.recipe import BuildOptions, ExportOptions, Recipe, ShapeRange, TensorSpec, Tolerance
from trt_harness.models.results.document import Results
from trt_harness.models.results.recipe import RecipeRecord, ToleranceOverrides
from trt_harness.models.results.stages import StageRecord, SurgeryDetails, TensorRTFlavor

from tests.harness.cache_recipe import feeds, sample_feeds, tiny_model

CACHED_STAGES = [stage.name for stage in STAGES if stage.key is not None]
KEY = "5e" * 32  # keys are SHA-256 hex digests


def make_recipe(**changes) -> Recipe:
    recipe = Recipe(
        name="tiny",
        description="cache test",
        build_model=tiny_model,
        sample_inputs=sample_feeds,
        inputs=(TensorSpec("x", ("batch", 3, 8, 8)),),
        output_names=("y",),
        shape_ranges={"x": ShapeRange((1, 3, 8, 8), (1, 3, 8, 8), (2, 3, 8, 8))},
        export=ExportOptions(exporter="torchscript", opset=17),
        default_tolerance=Tolerance(1e-4, 1e-4),
    )
    return dataclasses.replace(recipe, **changes)


@dataclasses.dataclass(frozen=True)
class ColdRun:
    cache_dir: Path
    weights: Path
    results: Results

    def config(self, out_dir: Path, recipe: Recipe | None = None, **changes) -> RunConfig:
        changes.setdefault("weights", self.weights)
        changes.setdefault("backends", ("torch", "onnxrt"))
        return RunConfig(recipe or make_recipe(), out_dir, cache_dir=self.cache_dir, **changes)

    @property
    def ledger(self) -> dict[str, StageRecord]:
        return {s.name: s for s in self.results.stages}


@pytest.fixture(scope="module")
def cold(tmp_path_factory) -> ColdRun:
    """One run on an empty cache, shared: later runs store their own entries under other keys."""
    root = tmp_path_factory.mktemp("cache")
    weights = root / "w.pt"
    weights.write_bytes(b"weights v1")  # the model ignores it; its hash is part of the keys
    run = ColdRun(root / "cache", weights, None)  # type: ignore[arg-type]
    results = run_pipeline(run.config(root / "cold"))
    assert results.verdict.passed, results.verdict
    return dataclasses.replace(run, results=results)


def statuses(results: Results) -> dict[str, str]:
    return {s.name: s.status for s in results.stages}


def rerun(results: Results) -> set[str]:
    """The cacheable stages that ran instead of coming from the cache."""
    return {s.name for s in results.stages if s.name in CACHED_STAGES and s.status == "ok"}


# --- through the pipeline -------------------------------------------------------------------------------


def test_a_warm_run_serves_every_stage_from_the_cache_into_a_new_folder(cold, tmp_path):
    cold_statuses = statuses(cold.results)
    assert {cold_statuses[name] for name in CACHED_STAGES} <= {"ok", "skipped"}
    assert cold_statuses["build"] == "ok" or cold_statuses["build"] == "skipped"

    warm = run_pipeline(cold.config(tmp_path))
    expected = {
        name: "ok" if name == SAMPLES_STAGE.name else ("cached" if status == "ok" else status)
        for name, status in cold_statuses.items()
    }
    assert statuses(warm) == expected, "samples are never cached; skipped stages stay skipped"
    assert warm.verdict == cold.results.verdict
    for stage in warm.stages:
        before = cold.ledger[stage.name]
        assert {k: a.sha256 for k, a in stage.artifacts.items()} == {
            k: a.sha256 for k, a in before.artifacts.items()
        }
        for artifact in stage.artifacts.values():
            artifact.verified(tmp_path)  # restored into the new folder, every file with its hash


@pytest.mark.parametrize(
    "change",
    [
        {"overrides": ToleranceOverrides.parse(["1e-2"], [])},
        {"recipe": make_recipe(default_tolerance=Tolerance(1e-3, 1e-4))},
    ],
    ids=["--atol", "recipe-tolerance"],
)
def test_changing_only_a_tolerance_reruns_only_compare(cold, tmp_path, change):
    changed = run_pipeline(cold.config(tmp_path, **change))
    assert rerun(changed) == {"compare"}
    assert {s.status for s in changed.stages if s.name not in ("compare", "samples")} <= {"cached", "skipped"}
    compare = changed.stage("compare")
    assert compare is not None and compare.details is not None
    assert {c.tolerance.atol for c in compare.details.comparisons} == {
        1e-2 if "overrides" in change else 1e-3
    }


def edited(path: Path) -> Callable[[Path], bytes]:
    """`read` hook of `code_hash` for which `path` holds one more line, as after an edit."""

    def read(file: Path) -> bytes:
        data = file.read_bytes()
        return data + b"\n# edited\n" if file == path else data

    return read


def stage_files(stage: Stage, recipe: Recipe) -> set[Path]:
    """Every source file whose code the stage's key covers."""
    modules = [stage.run.__module__, *(pipeline.recipe_modules(recipe) if stage.runs_recipe_code else [])]
    return {f for module in modules for f in closure(module_file(module))}


# harness/bench/memory.py: outside every stage's closure (the recipe's code here is this module's)
@pytest.mark.parametrize("edit", ["harness/crossmatch.py", "harness/bench/memory.py"])
def test_a_simulated_edit_reruns_the_stages_whose_closure_holds_the_file(cold, tmp_path, monkeypatch, edit):
    path = (ROOT / edit).resolve()
    expected = {s.name for s in STAGES if s.key is not None and path in stage_files(s, make_recipe())}
    monkeypatch.setattr(pipeline, "code_hash", functools.partial(code_hash, read=edited(path)))
    changed = run_pipeline(cold.config(tmp_path))
    ran = {s.name for s in STAGES if cold.ledger[s.name].status == "ok"}
    assert rerun(changed) == expected & ran
    if edit == "harness/crossmatch.py":
        assert "compare" in expected  # the cross-match is compare's code
    else:
        assert expected == set()


# --- each stage's key, from the cold run's ledger ---------------------------------------------------------


def keys(config: RunConfig, ledger: Mapping[str, StageRecord]) -> dict[str, str]:
    """Every cacheable stage's key as the pipeline computes it, each reading the ledger before it."""
    record = RecipeRecord.of(config.recipe, config.weights)
    found, earlier = {}, {}
    for stage in STAGES:
        inp = StageInput(
            config.out_dir, record, config.overrides, config.precisions_in_order, dict(earlier), config
        )
        key = stage_key(stage, inp)
        if key is not None:
            found[stage.name] = key
        earlier[stage.name] = ledger[stage.name]
    return found


@pytest.fixture
def rtx(monkeypatch):
    """One TensorRT flavor for every key test, whatever is installed."""
    flavor = TensorRTFlavor("tensorrt_rtx", "TensorRT for RTX", "1.7.1.116")
    monkeypatch.setattr(build_stage, "select_flavor", lambda: flavor)


def _new_weights(cold, tmp_path, monkeypatch):
    (tmp_path / "w.pt").write_bytes(b"weights v2")  # the same file, trained further


def _new_samples(cold, tmp_path, monkeypatch):
    other = feeds(0.5)
    recipe = make_recipe(sample_inputs=lambda: other)
    config = cold.config(tmp_path, recipe)
    record = RecipeRecord.of(recipe, config.weights)
    out = SAMPLES_STAGE.run(StageInput(tmp_path, record, config.overrides, ("fp32",), {}, config))
    samples = StageRecord("samples", "ok", artifacts=dict(out.artifacts), details=out.details)
    return {"recipe": recipe, "ledger": {"samples": samples}}


def _recipe(**changes):
    return lambda cold, tmp_path, monkeypatch: {"recipe": make_recipe(**changes)}


def _config(**changes):
    return lambda cold, tmp_path, monkeypatch: changes


def _library_version(name):
    def change(cold, tmp_path, monkeypatch):
        real = stage_base.package_versions
        monkeypatch.setattr(stage_base, "package_versions", lambda: {**real(), name: "999.0"})

    return change


def _full_tensorrt(cold, tmp_path, monkeypatch):
    flavor = TensorRTFlavor("tensorrt", "TensorRT", "10.13.0.35")
    monkeypatch.setattr(build_stage, "select_flavor", lambda: flavor)


def _artifact_of(stage: str, name: str):
    def change(cold, tmp_path, monkeypatch):
        record = cold.ledger[stage]
        artifact = dataclasses.replace(record.artifacts[name], sha256="0" * 64)
        return {
            "ledger": {stage: dataclasses.replace(record, artifacts={**record.artifacts, name: artifact})}
        }

    return change


def _code_of(module: str):
    def change(cold, tmp_path, monkeypatch):
        edit = functools.partial(code_hash, read=edited(module_file(module)))
        monkeypatch.setattr(pipeline, "code_hash", edit)

    return change


# change -> the stages whose key must change (all others must not)
CASES = {
    "weights": (_new_weights, {"scan", "export", "run"}),
    "samples": (_new_samples, {"scan", "export", "surgery", "precision", "run", "compare"}),
    "export-option": (
        _recipe(export=ExportOptions(exporter="torchscript", opset=18)),
        {"scan", "export", "run"},
    ),
    "build-target": (
        _recipe(build=BuildOptions(compute_capabilities=((8, 9),))),
        {"scan", "export", "build", "run"},
    ),
    "workspace": (_recipe(build=BuildOptions(workspace_bytes=1 << 28)), {"scan", "export", "build", "run"}),
    "recipe-tolerance": (_recipe(default_tolerance=Tolerance(1e-3, 1e-4)), {"compare"}),
    "--atol": (_config(overrides=ToleranceOverrides.parse(["1e-2"], [])), {"compare"}),
    "--precision": (_config(precisions=("fp32", "fp16")), {"precision", "build", "run"}),
    "--backends": (_config(backends=("torch",)), {"run"}),
    "torch-version": (_library_version("torch"), {"scan", "export", "run"}),
    "onnxruntime-version": (_library_version("onnxruntime"), {"surgery", "precision", "run"}),
    "graphsurgeon-version": (_library_version("onnx-graphsurgeon"), {"surgery", "precision"}),
    "tensorrt-flavor": (_full_tensorrt, {"build"}),
    "exported-onnx": (_artifact_of("export", "onnx"), {"surgery"}),
    "final-onnx": (_artifact_of("surgery", "onnx_final"), {"precision", "build", "run"}),
    "run-outputs": (_artifact_of("run", "outputs_onnxrt"), {"compare"}),
    "surgery-driver-code": (_code_of("trt_harness.conversions.onnx_passes.driver"), {"surgery"}),
    "pass-code": (_code_of("trt_harness.conversions.onnx_passes.passes.fold_constants"), {"surgery"}),
    "comparison-code": (_code_of("trt_harness.harness.comparison"), {"compare"}),
    "recipe-code": (_code_of("tests.harness.cache_recipe"), {"scan", "export", "run"}),
}


@pytest.mark.usefixtures("rtx")
def test_keys_are_stable_when_nothing_changes(cold, tmp_path):
    config = cold.config(tmp_path)
    assert keys(config, cold.ledger) == keys(config, cold.ledger)
    assert set(keys(config, cold.ledger)) == set(CACHED_STAGES)


@pytest.mark.usefixtures("rtx")
@pytest.mark.parametrize(
    ("change", "affected"),
    [pytest.param(*case, id=name) for name, case in CASES.items()],
)
def test_a_change_alters_exactly_the_keys_of_the_stages_it_feeds(
    cold, tmp_path, monkeypatch, change, affected
):
    weights = tmp_path / "w.pt"
    weights.write_bytes(cold.weights.read_bytes())
    before = keys(cold.config(tmp_path, weights=weights), cold.ledger)
    changed = change(cold, tmp_path, monkeypatch) or {}
    ledger = {**cold.ledger, **changed.pop("ledger", {})}
    recipe = changed.pop("recipe", None)
    after = keys(cold.config(tmp_path, recipe, weights=weights, **changed), ledger)
    assert {stage for stage in before if before[stage] != after[stage]} == affected


# --- the code part of a key: each stage's import closure -----------------------------------------------


def _project_files() -> set[Path]:
    return {
        p.resolve()
        for top in ("harness", "models", "conversions", "reports")
        for p in (ROOT / top).rglob("*.py")
    }


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_editing_any_module_of_a_stages_closure_changes_its_code_hash_and_no_other_module_does(stage):
    module = stage.run.__module__
    files = set(closure(module_file(module)))
    base = code_hash(module)
    changed_by = {f for f in _project_files() if code_hash(module, read=edited(f)) != base}
    assert changed_by == files
    assert code_hash(module) == base


CLOSURE_HOLDS = {
    "samples": ["harness/sample_files.py", "models/core/artifacts.py", "models/results/stages.py"],
    "scan": ["conversions/scan.py"],
    "export": ["conversions/export.py", "conversions/onnx_files.py"],
    "surgery": ["conversions/onnx_passes/driver.py", "conversions/onnx_passes/passes/fold_constants.py"],
    "precision": ["conversions/precision/__init__.py"],
    "build": ["conversions/tensorrt_build.py"],
    "run": [
        "harness/backends/torch_backend.py",
        "harness/backends/onnxrt.py",
        "harness/backends/tensorrt.py",
    ],
    "compare": [
        "harness/comparison.py",
        "harness/crossmatch.py",
        "harness/detections.py",
        "harness/heatmap.py",
        "models/recipe.py",
        "models/results/recipe.py",
    ],
}


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_a_stages_closure_holds_the_code_it_runs_and_not_the_orchestrator(stage):
    files = {f.relative_to(ROOT).as_posix() for f in closure(module_file(stage.run.__module__))}
    assert set(CLOSURE_HOLDS[stage.name]) <= files
    assert not files & {"harness/pipeline.py", "harness/cli.py", "reports/render.py", "harness/verdict.py"}


def test_a_stages_closure_leaves_out_the_other_stages():
    files = {s.name: set(closure(module_file(s.run.__module__))) for s in STAGES}
    assert (ROOT / "harness/crossmatch.py").resolve() not in files["export"]
    assert (ROOT / "conversions/export.py").resolve() not in files["compare"]


# --- the store itself --------------------------------------------------------------------------------------


def test_entry_round_trip_and_corrupt_entry_is_not_trusted(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.engine").write_bytes(b"plan" * 100)
    cache = StageCache(tmp_path / "cache")
    details = SurgeryDetails(passes=())
    cache.store(
        CacheEntry("build", KEY, {"engine": Artifact.of_file(run_dir, "model.engine")}, details, "why"),
        run_dir,
    )
    entry = cache.lookup("build", KEY)
    assert entry is not None and entry.details == details and entry.reason == "why"
    assert [row["key"] for row in cache.entries()] == [KEY]

    (run_dir / "model.engine").unlink()
    restored = cache.restore(entry, run_dir)
    assert restored["engine"].verified(run_dir).read_bytes() == b"plan" * 100

    entry_dir = tmp_path / "cache" / "build" / KEY
    (entry_dir / "model.engine").write_bytes(b"plan" * 50)  # truncated, as by a crash or a disk error
    assert cache.lookup("build", KEY) is None
    assert not entry_dir.exists(), "a damaged entry is removed so the stage re-runs"


def test_a_folder_artifact_is_restored_without_files_of_an_earlier_run(tmp_path):
    run_dir = tmp_path / "run"
    for i in range(2):
        path = run_dir / "outputs" / "onnxrt" / f"{i}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([i]) * 10)
    cache = StageCache(tmp_path / "cache")
    cache.store(
        CacheEntry("run", KEY, {"outputs_onnxrt": Artifact.of_folder(run_dir, "outputs/onnxrt")}), run_dir
    )
    stale = run_dir / "outputs" / "onnxrt" / "7.npz"
    stale.write_bytes(b"an earlier run's sample")
    entry = cache.lookup("run", KEY)
    assert entry is not None
    cache.restore(entry, run_dir)
    assert sorted(p.name for p in (run_dir / "outputs" / "onnxrt").iterdir()) == ["0.npz", "1.npz"]


def test_half_written_entry_is_invisible(tmp_path):
    cache = StageCache(tmp_path / "cache")
    partial = tmp_path / "cache" / "build" / f".{KEY[:16]}.abc.partial"
    partial.mkdir(parents=True)
    (partial / "entry.json").write_text(json.dumps({"stage": "build", "key": KEY, "artifacts": {}}))
    assert cache.lookup("build", KEY) is None
    assert cache.entries() == []
