from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import harness.pipeline as pipeline
from models.core.artifacts import Artifact
from harness.cache import StageCache, stable_hash
from harness.pipeline import PipelineRun, RunConfig
from models.recipe import BuildOptions, ExportOptions, Recipe, ShapeRange, TensorSpec, Tolerance


def make_recipe(**changes) -> Recipe:
    recipe = Recipe(
        name="tiny",
        description="key test",
        build_model=lambda weights: None,
        sample_inputs=lambda: [{"x": np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2)}],
        inputs=(TensorSpec("x", ("batch", 3, 2, 2)),),
        output_names=("y",),
        shape_ranges={"x": ShapeRange((1, 3, 2, 2), (2, 3, 2, 2), (4, 3, 2, 2))},
        default_tolerance=Tolerance(1e-4, 1e-4),
    )
    return dataclasses.replace(recipe, **changes)


@pytest.fixture
def base(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights v1")
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"onnx v1")
    return {"weights": weights, "onnx": onnx_file}


def keys(base, recipe=None, **config) -> dict[str, str]:
    run = PipelineRun(
        RunConfig(recipe or make_recipe(), base["onnx"].parent, weights=base["weights"], **config)
    )
    run.artifacts["onnx"] = Artifact.from_file(base["onnx"])
    stages = {s.name: s for s in pipeline.STAGES}
    return {
        name: stable_hash(stages[name].cache_key(run))
        for name in ("export", "surgery", "build", "run", "compare")
    }


def test_keys_are_stable_when_nothing_changes(base):
    assert keys(base) == keys(base)


def _change_weights(base, monkeypatch):
    base["weights"].write_bytes(b"weights v2")


def _change_samples(base, monkeypatch):
    sample = [{"x": np.ones((1, 3, 2, 2), np.float32)}]
    return {"recipe": make_recipe(sample_inputs=lambda: sample)}


def _change_export_option(base, monkeypatch):
    return {"recipe": make_recipe(export=ExportOptions(opset=17))}


def _change_build_target(base, monkeypatch):
    return {"recipe": make_recipe(build=BuildOptions(compute_capabilities=((8, 9),)))}


def _change_workspace(base, monkeypatch):
    return {"recipe": make_recipe(build=BuildOptions(workspace_bytes=1 << 28))}


def _change_tolerance(base, monkeypatch):
    return {"recipe": make_recipe(default_tolerance=Tolerance(1e-3, 1e-4))}


def _change_pass_code(base, monkeypatch):
    real = pipeline.source_hash
    monkeypatch.setattr(
        pipeline, "source_hash", lambda *p: real(*p) + ("x" if "conversions/onnx_passes" in p else "")
    )


def _change_library_version(name):
    def change(base, monkeypatch):
        import harness.environment

        real = harness.environment.package_versions
        monkeypatch.setattr(harness.environment, "package_versions", lambda: {**real(), name: "999.0"})

    change.__name__ = f"_change_{name}_version"
    return change


def _change_tensorrt_flavor(base, monkeypatch):
    from conversions.tensorrt_flavor import TensorRTFlavor

    monkeypatch.setattr(
        "conversions.tensorrt_flavor.select_flavor",
        lambda: TensorRTFlavor("tensorrt_rtx", "TensorRT for RTX", "9.9"),
    )


def _change_onnx_input(base, monkeypatch):
    base["onnx"].write_bytes(b"onnx v2")


# change -> the stages whose key must change (all others must not)
CASES = [
    (_change_weights, {"export", "run"}),
    (_change_samples, {"export", "surgery", "run"}),
    (_change_export_option, {"export", "run"}),
    (_change_build_target, {"export", "build", "run"}),
    (_change_workspace, {"export", "build", "run"}),
    (_change_tolerance, {"compare"}),
    (_change_pass_code, {"surgery"}),
    (_change_library_version("torch"), {"export", "run"}),
    (_change_library_version("onnxruntime"), {"surgery", "run"}),
    (_change_library_version("onnx-graphsurgeon"), {"surgery"}),
    (_change_tensorrt_flavor, {"build"}),
    (_change_onnx_input, {"surgery", "build", "run"}),
]


@pytest.mark.parametrize(
    ("change", "affected"), CASES, ids=[c[0].__name__.removeprefix("_change_") for c in CASES]
)
def test_a_change_alters_exactly_the_keys_of_the_stages_it_feeds(base, monkeypatch, change, affected):
    before = keys(base)
    changed_config = change(base, monkeypatch) or {}
    after = keys(base, **changed_config)
    changed = {stage for stage in before if before[stage] != after[stage]}
    assert changed == affected


def test_entry_round_trip_and_corrupt_entry_is_not_trusted(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    engine = run_dir / "model.engine"
    engine.write_bytes(b"plan" * 100)
    cache = StageCache(tmp_path / "cache")
    cache.store("build", "k1", {"engine": Artifact.from_file(engine)}, {"network_layers": 3})
    entry = cache.lookup("build", "k1")
    assert entry is not None and entry.record["details"] == {"network_layers": 3}

    engine.unlink()
    restored = cache.restore(entry, run_dir)
    assert restored["engine"].verified().read_bytes() == b"plan" * 100

    (entry.path / "model.engine").write_bytes(b"plan" * 50)  # truncated, as by a crash or a disk error
    assert cache.lookup("build", "k1") is None
    assert not entry.path.exists(), "a damaged entry is removed so the stage re-runs"


def test_half_written_entry_is_invisible(tmp_path):
    cache = StageCache(tmp_path / "cache")
    partial = tmp_path / "cache" / "build" / ".k1.abc.partial"
    partial.mkdir(parents=True)
    (partial / "entry.json").write_text(json.dumps({"artifacts": {}, "details": {}}))
    assert cache.lookup("build", "k1") is None
    assert cache.entries() == []
