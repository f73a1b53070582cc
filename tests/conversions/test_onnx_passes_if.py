"""remove_stray_if: Ifs the TorchScript exporter emits for `squeeze`, decided from static shapes and inlined."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from trt_harness.conversions.onnx_files import op_counts
from trt_harness.conversions.onnx_passes.driver import run_passes

from tests.fixtures import make_onnx_fixtures as fixtures
from tests.fixtures.onnx_runtime import assert_identical_outputs

RNG = np.random.default_rng(7)


def _random(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _sibling_feeds() -> list[dict[str, np.ndarray]]:
    return [
        {"x": _random(n, 1, 3), "u": _random(n, 1, 3), "v": _random(n, 4, 3), "flag": np.array(flag)}
        for n, flag in ((1, True), (3, False))
    ]


def test_decidable_ifs_are_inlined_and_undecidable_ones_explained(tmp_path: Path) -> None:
    model = fixtures.sibling_ifs(tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    feeds = _sibling_feeds()
    remove, _ = run_passes(
        model, out, ["remove_stray_if", "cleanup"], static_dims={"x": {1: 1}, "v": {1: 4}}, check_feeds=feeds
    )
    assert remove.modified and remove.max_abs_diff == 0.0
    changes = "\n".join(remove.changes)
    assert "inlined If 'if_x' (then-branch): condition Equal(1, 1) is true" in changes
    assert "inlined If 'if_u' (then-branch)" in changes
    assert "inlined If 'if_v' (else-branch): condition Equal(4, 1) is false" in changes
    assert "left If 'if_flag'" in changes and "graph input 'flag'" in changes
    graph = onnx.load(out).graph
    assert [n.name for n in graph.node if n.op_type == "If"] == ["if_flag"]
    # if_x and if_u had the same branch-local names; both now live in the main graph under distinct names
    produced = [name for node in graph.node for name in node.output]
    assert len(produced) == len(set(produced))
    assert [o.name for o in graph.output] == ["x_out", "u_out", "v_out", "flag_out"]
    assert_identical_outputs(model, out, feeds)


def test_an_if_on_a_dynamic_dim_without_static_dims_is_left_with_the_reason(tmp_path: Path) -> None:
    model = fixtures.sibling_ifs(tmp_path / "m.onnx")
    (report,) = run_passes(
        model, tmp_path / "out.onnx", ["remove_stray_if"], check_feeds=_sibling_feeds()[:1]
    )
    left_x = next(c for c in report.changes if c.startswith("left If 'if_x'"))
    assert "dim 1 of 'x' ('C') is dynamic" in left_x
    assert report.op_counts_after["If"] == 3  # if_u is decided from the graph's own static shape


def test_nested_ifs_are_both_inlined(tmp_path: Path) -> None:
    model = fixtures.nested_ifs(tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    feeds = [{"x": _random(n, 1, 3), "u": _random(n, 1, 3)} for n in (1, 4)]
    remove, cleanup = run_passes(
        model, out, ["remove_stray_if", "cleanup"], static_dims={"x": {1: 1}}, check_feeds=feeds
    )
    assert remove.op_counts_before["If"] == 2
    assert "If" not in remove.op_counts_after
    assert cleanup.op_counts_after == {"Add": 1, "Constant": 1, "Squeeze": 2}
    assert_identical_outputs(model, out, feeds)


@pytest.fixture(scope="module")
def torchscript_squeeze_if(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    return fixtures.torchscript_squeeze_if(tmp_path_factory.mktemp("ts") / "squeeze_if.onnx")


def _image_feeds() -> list[dict[str, np.ndarray]]:
    return [{"x": _random(n, 1, h, w)} for n, h, w in ((1, 8, 8), (3, 5, 12))]


def test_torchscript_squeeze_if_is_removed_with_static_channel(
    tmp_path: Path, torchscript_squeeze_if: Path
) -> None:
    assert op_counts(onnx.load(torchscript_squeeze_if))["If"] >= 1  # the exporter's If is really there
    out = tmp_path / "out.onnx"
    feeds = _image_feeds()
    remove, _ = run_passes(
        torchscript_squeeze_if,
        out,
        ["remove_stray_if", "cleanup"],
        static_dims={"x": {1: 1}},
        check_feeds=feeds,
    )
    assert remove.modified
    assert all(c.startswith("inlined If") for c in remove.changes)
    assert "If" not in op_counts(onnx.load(out))
    assert [i.name for i in onnx.load(out).graph.input] == ["x"]
    assert [o.name for o in onnx.load(out).graph.output] == ["y"]
    assert_identical_outputs(torchscript_squeeze_if, out, feeds)


def test_torchscript_if_after_a_resize_is_decided_by_shape_inference(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    model = fixtures.torchscript_resized_squeeze_if(tmp_path / "m.onnx")
    assert op_counts(onnx.load(model))["If"] == 1
    out = tmp_path / "out.onnx"
    feeds = [{"x": _random(n, 3, h, w)} for n, h, w in ((1, 8, 8), (2, 6, 10))]
    (report,) = run_passes(model, out, ["remove_stray_if"], check_feeds=feeds)  # no static_dims needed
    assert report.changes == ("inlined If '/If' (then-branch): condition Equal(1, 1) is true",)
    assert "If" not in report.op_counts_after
    assert_identical_outputs(model, out, feeds)


def _use_tensorrt_rtx() -> None:
    """Point polygraphy at TensorRT for RTX; it binds its TensorRT module when backend.trt is imported."""
    pytest.importorskip("tensorrt_rtx")
    config = sys.modules.get("polygraphy.config")
    if "polygraphy.backend.trt" in sys.modules and not getattr(config, "USE_TENSORRT_RTX", False):
        pytest.skip("polygraphy was bound to full TensorRT earlier in this process")
    os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1"
    if config is not None:
        config.USE_TENSORRT_RTX = True


def _tensorrt_rtx_build(model: Path) -> bool:
    """Parse and build for compute capability 8.6 (no GPU needed); True if an engine came out."""
    from polygraphy.backend.tensorrt_rtx import CreateConfigRTX
    from polygraphy.backend.trt import EngineBytesFromNetwork, NetworkFromOnnxPath, Profile
    from polygraphy.exception import PolygraphyException

    # The exported graph declares the channel dim dynamic, so the profile may let it vary; TensorRT-RTX
    # 1.7 only rejects the If when that leaves its condition undecided at build time.
    profile = Profile().add("x", min=(1, 1, 4, 4), opt=(2, 1, 8, 8), max=(4, 3, 16, 16))
    config = CreateConfigRTX(profiles=[profile], compute_capabilities=[(8, 6)])
    try:
        return EngineBytesFromNetwork(NetworkFromOnnxPath(str(model)), config=config)() is not None
    except PolygraphyException:
        return False


@pytest.mark.filterwarnings("ignore:.*Timing cache operations are no-ops:DeprecationWarning")
def test_tensorrt_rtx_rejects_the_if_and_builds_after_the_pass(
    tmp_path: Path, torchscript_squeeze_if: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    _use_tensorrt_rtx()
    assert not _tensorrt_rtx_build(torchscript_squeeze_if)
    captured = capfd.readouterr()
    log = captured.out + captured.err
    assert "IConditionalOutputLayer" in log and "equal ranks" in log

    out = tmp_path / "out.onnx"
    run_passes(torchscript_squeeze_if, out, ["remove_stray_if", "cleanup"], static_dims={"x": {1: 1}})
    assert _tensorrt_rtx_build(out)
