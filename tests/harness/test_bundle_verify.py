"""`harness bundle` and `harness verify`: a run folder becomes a small bundle that a target device
verifies with ONNX Runtime and TensorRT against the bundled Torch reference, with no torch installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from trt_harness.harness.sample_files import read_sample, sample_file, write_sample
from trt_harness.models.core.artifacts import Artifact, sha256_file
from trt_harness.models.results.bundle import MANIFEST_FILE, load_manifest, save_manifest
from trt_harness.models.results.document import UNFINISHED, load_results, save_results
from trt_harness.models.results.stages import BuildDetails, CompareDetails, RunDetails

from tests.harness import verify_recipe

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory):
    """A finished run of the tiny recipe at FP32 and FP16, and its bundle."""
    from trt_harness.harness.cli import main
    from trt_harness.models.recipes import RECIPES

    RECIPES.register(verify_recipe.NAME, verify_recipe.verify_tiny)
    root = tmp_path_factory.mktemp("bundle")
    run_dir, bundle = root / "run", root / "run-bundle"
    convert = ["convert", verify_recipe.NAME, "--out", str(run_dir), "--no-cache"]
    assert main([*convert, "--precision", "fp32", "fp16"]) == 0
    assert main(["bundle", str(run_dir)]) == 0  # default: beside the run folder
    yield root, run_dir, bundle, main
    RECIPES.unregister(verify_recipe.NAME)


def _copy(bundle: Path, to: Path) -> Path:
    shutil.copytree(bundle, to, ignore=shutil.ignore_patterns("verify"))
    return to


def _reference_file(bundle: Path, sample_set: str = "samples", index: int = 0) -> Path:
    return sample_file(bundle / "outputs" / "torch" / sample_set, index)


def test_bundle_holds_models_inputs_reference_and_hashes(bundled) -> None:
    _root, run_dir, bundle, _main = bundled
    manifest = load_manifest(bundle)
    run = load_results(run_dir)
    assert manifest.recipe == run.recipe  # tolerances, checks, class axes as the run judged them
    assert manifest.precisions == ("fp32", "fp16")
    assert set(manifest.artifacts) == {"samples", "outputs_torch", "onnx_final", "onnx_fp16"}
    assert manifest.settings.shape_ranges["x"].max == (4, 3, 6, 6)
    assert [o.name for o in manifest.settings.outputs] == ["features", "logits"]
    assert manifest.reference == "torch" and manifest.reference_runner.device["torch"].startswith("2.")
    assert manifest.origin.run_id == run.run_id and manifest.origin.environment == run.environment
    listed = {m.path for a in manifest.artifacts.values() for m in a.members}
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert on_disk - listed == {MANIFEST_FILE}  # no engine, no ORT outputs, nothing unlisted
    for artifact in manifest.artifacts.values():
        for member in artifact.members:
            assert sha256_file(bundle / member.path) == member.sha256
    # the profile sample sets travel too: the reference at batch 1, 2 and 4
    assert set(manifest.samples.sets) == {"samples", "batch1", "batch2", "batch4"}


def test_verify_passes_on_the_bundle(bundled, tmp_path: Path, capsys) -> None:
    _root, run_dir, bundle, main = bundled
    out = tmp_path / "verified"
    assert main(["verify", str(bundle), "--out", str(out)]) == 0
    assert "PASS" in capsys.readouterr().out
    results = load_results(out)
    assert [s.name for s in results.stages] == ["bundle", "samples", "build", "run", "compare"]
    runners = results.details(RunDetails).runners
    assert runners["torch"] == load_results(run_dir).details(RunDetails).runners["torch"]
    assert runners["onnxrt"].executed and runners["onnxrt-fp16"].executed
    build = results.details(BuildDetails)
    if build is not None:  # TensorRT installed: built here, executed only where a GPU runs it
        assert set(build.engines) == {"fp32", "fp16"}
        assert runners["tensorrt"].state in ("executed", "built, not executed")
    compared = results.details(CompareDetails)
    pairs = {(c.ref_backend, c.cand_backend, c.sample_set) for c in compared.comparisons}
    assert ("torch", "onnxrt", "batch4") in pairs and ("torch", "onnxrt-fp16", "samples") in pairs
    assert all(compared.comparisons)
    assert (out / "report.html").is_file() and (out / "junit.xml").is_file()
    # the verify folder is a run folder like any other: `harness compare` re-judges it
    assert main(["compare", str(out)]) == 0


def test_a_samples_only_bundle_leaves_out_the_profile_batches(bundled, tmp_path: Path) -> None:
    _root, run_dir, full, main = bundled
    small = tmp_path / "small"
    assert main(["bundle", str(run_dir), "--out", str(small), "--samples-only"]) == 0
    manifest = load_manifest(small)
    assert set(manifest.samples.sets) == {"samples"} and manifest.reference_runner.sample_sets == ("samples",)
    assert not list(small.rglob("batch*"))
    assert sum(a.size_bytes for a in manifest.artifacts.values()) < sum(
        a.size_bytes for a in load_manifest(full).artifacts.values()
    )
    assert main(["verify", str(small)]) == 0
    compared = load_results(small / "verify").details(CompareDetails).comparisons
    assert {c.sample_set for c in compared} == {"samples"}


def test_verify_imports_no_torch(bundled, tmp_path: Path) -> None:
    """In a fresh interpreter that has torch installed: verify never imports it."""
    _root, _run, bundle, _main = bundled
    code = (
        "import sys; from trt_harness.harness.cli import main; "
        f"rc = main(['verify', {str(bundle)!r}, '--out', {str(tmp_path / 'v')!r}]); "
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH'); sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "NO TORCH"


def test_a_perturbed_reference_output_fails_with_exit_1(bundled, tmp_path: Path, capsys) -> None:
    """A bundle whose reference differs (made so, its manifest consistent) fails the accuracy gate."""
    _root, _run, bundle, main = bundled
    copy = _copy(bundle, tmp_path / "perturbed")
    path = _reference_file(copy)
    tensors = read_sample(path)
    tensors["logits"] = tensors["logits"] + np.float32(1.0)
    write_sample(path, tensors)
    manifest = load_manifest(copy)
    artifacts = {**manifest.artifacts, "outputs_torch": Artifact.of_folder(copy, "outputs/torch")}
    save_manifest(type(manifest)(**{**manifest.__dict__, "artifacts": artifacts}), copy)
    assert main(["verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "logits (Torch vs ORT)" in out and "features" not in out
    failing = [c for c in load_results(copy / "verify").details(CompareDetails).comparisons if not c]
    assert {(c.output, c.sample_set) for c in failing} <= {("logits", "samples")} and failing


def test_a_tampered_file_is_exit_2_naming_it(bundled, tmp_path: Path, capsys) -> None:
    _root, _run, bundle, main = bundled
    copy = _copy(bundle, tmp_path / "tampered")
    path = _reference_file(copy, "batch2")
    tensors = read_sample(path)
    write_sample(path, {k: v * 2 for k, v in tensors.items()})
    assert main(["verify", str(copy), "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "sha256" in err
    assert not (tmp_path / "v").exists()  # refused before anything ran
    other = _copy(bundle, tmp_path / "incomplete")
    (other / "model.final.fp16.onnx").unlink()
    assert main(["verify", str(other)]) == 2
    err = capsys.readouterr().err
    assert "model.final.fp16.onnx: missing from the bundle" in err and "onnx_fp16" in err


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda d: d.mkdir(), "not found"),
        (lambda d: (d.mkdir(), (d / MANIFEST_FILE).write_text("{}")), "not written by `harness bundle`"),
    ],
)
def test_verify_bad_bundle_is_exit_2(bundled, tmp_path: Path, capsys, make, words) -> None:
    main = bundled[3]
    make(tmp_path / "b")
    assert main(["verify", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err


def test_bundle_bad_input_is_exit_2(bundled, tmp_path: Path, capsys) -> None:
    _root, run_dir, _bundle, main = bundled
    (tmp_path / "empty").mkdir()
    assert main(["bundle", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "results.json not found" in err
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run_dir, unfinished)
    results = load_results(unfinished)
    save_results(type(results)(results.recipe, results.environment, (), UNFINISHED), unfinished)
    assert main(["bundle", str(unfinished), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has not finished" in err and not (tmp_path / "b").exists()
    (tmp_path / "file").write_text("x")
    assert main(["bundle", str(run_dir), "--out", str(tmp_path / "file")]) == 2
    assert "is not a bundle" in capsys.readouterr().err


def test_verify_loads_a_given_engine(bundled, tmp_path: Path) -> None:
    _root, _run, bundle, main = bundled
    first = load_results(_verified(main, bundle, tmp_path / "built"))
    build = first.details(BuildDetails)
    if build is None:
        pytest.skip("no TensorRT installed: no engine to load")
    engine = tmp_path / "built" / build.engines["fp32"].engine
    out = tmp_path / "loaded"
    assert (
        main(["verify", str(bundle), "--engine", str(engine), "--precision", "fp32", "--out", str(out)]) == 0
    )
    loaded = load_results(out).details(BuildDetails).engines["fp32"]
    assert loaded.reason.startswith("loaded from --engine") and (out / engine.name).is_file()
    assert main(["verify", str(bundle), "--engine", str(engine)]) == 2  # which precision is it?


def _verified(main, bundle: Path, out: Path) -> Path:
    assert main(["verify", str(bundle), "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_verify_in_a_venv_without_torch(bundled, tmp_path: Path) -> None:
    """The package installs without its torch extra (base + TensorRT for RTX), and verify passes
    there. About 15 s here: pip takes the wheels from its cache and the local index."""
    _root, _run, bundle, _main = bundled
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "-q", f"{ROOT}[rtx]"]
    done = subprocess.run(install, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    no_torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = tmp_path / "verified"
    harness = env_dir / "bin" / "harness"
    verified = subprocess.run(
        [str(harness), "verify", str(bundle), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "PASS" in verified.stdout
    results = load_results(out)
    assert "torch" not in results.environment.packages  # the device's versions: no torch there
    assert all(results.details(CompareDetails).comparisons)


def test_full_tensorrt_builds_for_the_gpu_without_torch(monkeypatch) -> None:
    """A Jetson has full TensorRT and no torch: the engine's target comes from the driver."""
    from trt_harness.conversions import tensorrt_build
    from trt_harness.conversions.cuda_driver import CudaDevice
    from trt_harness.models.core.errors import HarnessError
    from trt_harness.models.recipe import BuildOptions
    from trt_harness.models.results.stages import TensorRTFlavor

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    orin = CudaDevice(0, "Orin (nvgpu)", (8, 7))
    monkeypatch.setattr(tensorrt_build, "cuda_devices", lambda: (orin,))
    flavor = TensorRTFlavor("tensorrt", "TensorRT", "10.3.0")
    tag = tensorrt_build.build_target_tag(flavor, BuildOptions())
    assert tag == ("sm87-Orinnvgpu", ("sm87 (Orin (nvgpu))",))
    monkeypatch.setattr(tensorrt_build, "cuda_devices", lambda: ())
    with pytest.raises(HarnessError, match="no CUDA GPU"):
        tensorrt_build.build_target_tag(flavor, BuildOptions())
