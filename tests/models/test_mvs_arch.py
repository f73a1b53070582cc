from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from trt_harness.models.architectures.mvs import (
    MVS_OUTPUT_NAMES,
    STAGES,
    StageSpec,
    cascade_hypotheses,
    homo_warping,
    init_mvs_seeded,
    mvs_net,
)
from trt_harness.models.mvs_scenes import make_scene

INPUT_NAMES = ("imgs", "proj_matrices", "depth_values", "edge")


def scene_inputs(seed: int, **kw: int) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(array) for name, array in make_scene(seed, **kw).items()}


def run(model: torch.nn.Module, scene: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model(*(scene[name] for name in INPUT_NAMES))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return init_mvs_seeded(mvs_net(), seed=0).eval()


@pytest.fixture(scope="module")
def scene() -> dict[str, torch.Tensor]:
    return scene_inputs(1)


def test_outputs_follow_mvs_output_names_with_documented_shapes(model, scene) -> None:
    outputs = run(model, scene)
    assert tuple(outputs) == MVS_OUTPUT_NAMES
    batch, _, _, height, width = scene["imgs"].shape
    expected = {"depth": (batch, height, width), "photometric_confidence": (batch, height, width)}
    expected["depth_min"] = (batch,)
    for index, stage in enumerate(STAGES, start=1):
        stage_shape = (batch, int(height * stage.scale), int(width * stage.scale))
        expected[f"depth_stage{index}"] = expected[f"conf_stage{index}"] = stage_shape
    assert {name: tuple(tensor.shape) for name, tensor in outputs.items()} == expected


@pytest.mark.parametrize(("model_seed", "scene_seed"), [(0, 0), (1, 1), (2, 2), (3, 3)])
def test_activations_are_realistic(model_seed: int, scene_seed: int) -> None:
    model = init_mvs_seeded(mvs_net(), seed=model_seed).eval()
    scene = scene_inputs(scene_seed)
    outputs = run(model, scene)
    low, high = scene["depth_values"].min().item(), scene["depth_values"].max().item()
    for name, tensor in outputs.items():
        assert torch.isfinite(tensor).all(), name
        if name.startswith("depth"):
            assert low - 1e-4 <= tensor.min().item() and tensor.max().item() <= high + 1e-4, name
            assert name == "depth_min" or tensor.std() > 0, f"{name} is constant"
        else:
            assert tensor.min().item() > 0.0 and tensor.max().item() < 1.0, name
    torch.testing.assert_close(outputs["depth_min"], outputs["depth"].amin(dim=(1, 2)))


def test_forward_is_deterministic(model, scene) -> None:
    first, second = run(model, scene), run(model, scene)
    for name in MVS_OUTPUT_NAMES:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0)


def test_init_is_deterministic_and_ignores_the_global_rng() -> None:
    torch.manual_seed(1)
    first = init_mvs_seeded(mvs_net(), seed=3).state_dict()
    torch.manual_seed(2)
    model = mvs_net()  # a different default init than `first` started from
    rng_before = torch.random.get_rng_state()
    second = init_mvs_seeded(model, seed=3).state_dict()
    assert torch.equal(rng_before, torch.random.get_rng_state()), "init_mvs_seeded advanced the global RNG"
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0)


def test_different_init_seeds_give_different_models(scene) -> None:
    outputs = [run(init_mvs_seeded(mvs_net(), seed=seed).eval(), scene) for seed in (0, 1)]
    assert not torch.allclose(outputs[0]["depth"], outputs[1]["depth"])


def test_batched_forward_matches_per_scene_forward(model) -> None:
    scenes = [scene_inputs(seed) for seed in (0, 1)]
    batched = {name: torch.cat([s[name] for s in scenes]) for name in INPUT_NAMES}
    outputs = run(model, batched)
    for index, single in enumerate(scenes):
        for name, tensor in run(model, single).items():
            torch.testing.assert_close(outputs[name][index : index + 1], tensor, rtol=1e-4, atol=1e-4)


def test_more_source_views_are_supported(model) -> None:
    outputs = run(model, scene_inputs(2, n_views=5, height=32, width=40))
    assert outputs["depth"].shape == (1, 32, 40)


def test_edge_only_affects_the_refined_depth(model, scene) -> None:
    outputs = run(model, scene)
    other = run(model, {**scene, "edge": torch.zeros_like(scene["edge"])})
    for name in ("depth_stage1", "depth_stage2", "depth_stage3", "conf_stage3"):
        torch.testing.assert_close(other[name], outputs[name], rtol=0, atol=0)
    assert not torch.allclose(other["depth"], outputs["depth"])


def test_homo_warping_with_identical_cameras_returns_the_source() -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(2, 5, 6, 7, generator=generator)
    proj = torch.eye(4).repeat(2, 1, 1)
    proj[:, :3, :3] = torch.tensor([[5.0, 0, 3], [0, 5, 2.5], [0, 0, 1]])
    depths = torch.rand(2, 3, 6, 7, generator=generator) * 4 + 1
    warped = homo_warping(features, proj, proj, depths)
    torch.testing.assert_close(warped, features.unsqueeze(2).expand(-1, -1, 3, -1, -1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_homo_warping_aligns_scene_views_at_the_true_depth(seed: int) -> None:
    scene = scene_inputs(seed)
    imgs, proj, gt_depth = scene["imgs"], scene["proj_matrices"], scene["gt_depth"]

    def median_error(depth: torch.Tensor) -> float:
        warped = homo_warping(imgs[:, 1], proj[:, 1], proj[:, 0], depth.unsqueeze(1))[:, :, 0]
        inside = warped.abs().sum(dim=1) > 0
        return (warped - imgs[:, 0]).abs().mean(dim=1)[inside].median().item()

    assert median_error(gt_depth) < 0.3 * median_error(gt_depth * 1.15)


@settings(max_examples=50, deadline=None)
@given(
    depth_min=st.floats(0.5, 5.0),
    depth_range=st.floats(0.5, 20.0),
    positions=st.lists(st.floats(-0.2, 1.2), min_size=6, max_size=6),
    stage_index=st.sampled_from([1, 2]),
)
def test_cascade_hypotheses_stay_in_range_and_bracket_the_previous_depth(
    depth_min: float, depth_range: float, positions: list[float], stage_index: int
) -> None:
    stage: StageSpec = STAGES[stage_index]
    depth_values = torch.linspace(depth_min, depth_min + depth_range, 32, dtype=torch.float64).unsqueeze(0)
    prev_depth = depth_min + depth_range * torch.tensor(positions, dtype=torch.float64).view(1, 2, 3)
    hypotheses = cascade_hypotheses(prev_depth, depth_values, stage, (2, 3))

    assert hypotheses.shape == (1, stage.num_depths, 2, 3)
    tolerance = 1e-9 * (depth_min + depth_range)
    assert hypotheses.min() >= depth_min - tolerance
    assert hypotheses.max() <= depth_min + depth_range + tolerance
    steps = hypotheses.diff(dim=1)
    torch.testing.assert_close(
        steps, torch.full_like(steps, depth_range * stage.span_fraction / (stage.num_depths - 1))
    )
    inside = (prev_depth >= depth_min) & (prev_depth <= depth_min + depth_range)
    brackets = (hypotheses[:, 0] <= prev_depth + tolerance) & (prev_depth <= hypotheses[:, -1] + tolerance)
    assert brackets[inside].all()


def test_legacy_export_fails_on_the_matrix_inverse(model, scene, tmp_path) -> None:
    args = tuple(scene[name] for name in INPUT_NAMES)
    with pytest.raises(torch.onnx.errors.UnsupportedOperatorError, match="'aten::linalg_inv'"):
        torch.onnx.export(
            model,
            args,
            str(tmp_path / "mvs.onnx"),
            dynamo=False,
            input_names=list(INPUT_NAMES),
            output_names=list(MVS_OUTPUT_NAMES),
            opset_version=17,
        )


class WarpOneView(torch.nn.Module):
    """Just the homography warp: the op that blocks export, without the cost of tracing the whole net."""

    def forward(
        self, src_fea: torch.Tensor, src_proj: torch.Tensor, ref_proj: torch.Tensor, depth: torch.Tensor
    ):
        return homo_warping(src_fea, src_proj, ref_proj, depth)


def test_dynamo_export_of_the_warp_fails_on_the_matrix_inverse(scene, tmp_path) -> None:
    proj = scene["proj_matrices"]
    args = (scene["imgs"][:, 1], proj[:, 1], proj[:, 0], scene["gt_depth"].unsqueeze(1))
    with pytest.raises(torch.onnx.OnnxExporterError, match="aten.linalg_inv_ex"):
        torch.onnx.export(WarpOneView(), args, str(tmp_path / "warp.onnx"), dynamo=True, external_data=False)


@pytest.mark.slow
def test_dynamo_export_fails_on_the_matrix_inverse(model, scene, tmp_path) -> None:
    args = tuple(scene[name] for name in INPUT_NAMES)
    with pytest.raises(torch.onnx.OnnxExporterError, match="aten.linalg_inv_ex"):
        torch.onnx.export(
            model,
            args,
            str(tmp_path / "mvs.onnx"),
            dynamo=True,
            external_data=False,
            input_names=list(INPUT_NAMES),
            output_names=list(MVS_OUTPUT_NAMES),
        )
