from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trt_harness.models.core.errors import UsageError
from trt_harness.models.mvs_scenes import make_scene, make_scenes, sobel_magnitude


def warp_to_reference(
    scene: dict[str, np.ndarray], view: int, depth: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Independent numpy warp: sample source `view` at the reference pixels' back-projections at `depth`.

    Returns the warped image (3, H, W) and the mask of reference pixels that land inside the source view.
    """
    imgs, projs = scene["imgs"][0], scene["proj_matrices"][0]
    _, _, height, width = imgs.shape
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    ref_points = np.stack([u * depth, v * depth, depth, np.ones_like(depth)]).reshape(4, -1)
    src = projs[view].astype(np.float64) @ np.linalg.inv(projs[0].astype(np.float64)) @ ref_points
    us, vs = src[0] / src[2], src[1] / src[2]
    inside = (us >= 0) & (us <= width - 1) & (vs >= 0) & (vs <= height - 1)
    u0 = np.clip(np.floor(us).astype(int), 0, width - 2)
    v0 = np.clip(np.floor(vs).astype(int), 0, height - 2)
    fu, fv = us - u0, vs - v0
    image = imgs[view]
    warped = (
        image[:, v0, u0] * (1 - fu) * (1 - fv)
        + image[:, v0, u0 + 1] * fu * (1 - fv)
        + image[:, v0 + 1, u0] * (1 - fu) * fv
        + image[:, v0 + 1, u0 + 1] * fu * fv
    )
    return warped.reshape(3, height, width), inside.reshape(height, width)


def median_photometric_error(scene: dict[str, np.ndarray], view: int, depth: np.ndarray) -> float:
    warped, inside = warp_to_reference(scene, view, depth)
    error = np.abs(warped - scene["imgs"][0, 0]).mean(axis=0)
    return float(np.median(error[inside]))


def test_scene_has_documented_keys_shapes_and_dtypes() -> None:
    scene = make_scene(0, n_views=4, height=48, width=64, n_depths=24)
    expected = {
        "imgs": (1, 4, 3, 48, 64),
        "proj_matrices": (1, 4, 4, 4),
        "depth_values": (1, 24),
        "edge": (1, 3, 48, 64),
        "gt_depth": (1, 48, 64),
    }
    assert {name: array.shape for name, array in scene.items()} == expected
    assert all(array.dtype == np.float32 for array in scene.values())
    assert scene["imgs"].min() >= 0.0 and scene["imgs"].max() <= 1.0


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_scene_is_deterministic_per_seed(seed: int) -> None:
    first, second = make_scene(seed), make_scene(seed)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_different_seeds_give_different_scenes(seed: int) -> None:
    scene, other = make_scene(seed), make_scene(seed + 2)
    for name in ("imgs", "proj_matrices", "depth_values", "gt_depth"):
        assert not np.allclose(scene[name], other[name]), name


def test_make_scenes_uses_consecutive_seeds() -> None:
    scenes = make_scenes(3, seed=5, height=32, width=40)
    for offset, scene in enumerate(scenes):
        np.testing.assert_array_equal(scene["imgs"], make_scene(5 + offset, height=32, width=40)["imgs"])


@pytest.mark.parametrize("seed", range(4))
def test_depth_values_ascend_and_enclose_the_true_depth(seed: int) -> None:
    scene = make_scene(seed)
    depth_values, gt_depth = scene["depth_values"][0], scene["gt_depth"]
    assert np.all(np.diff(depth_values) > 0)
    assert depth_values[0] < gt_depth.min() and gt_depth.max() < depth_values[-1]


def test_reference_camera_has_identity_pose_and_centred_intrinsics() -> None:
    height, width = 48, 64
    proj = make_scene(3, height=height, width=width)["proj_matrices"][0]
    ref = proj[0]
    np.testing.assert_allclose(
        ref[:3, :3], [[0.8 * width, 0, (width - 1) / 2], [0, 0.8 * width, (height - 1) / 2], [0, 0, 1]]
    )
    np.testing.assert_allclose(ref[:3, 3], 0)
    np.testing.assert_allclose(proj[:, 3], np.broadcast_to([0, 0, 0, 1], (proj.shape[0], 4)))
    source_centres = [-np.linalg.solve(p[:3, :3], p[:3, 3]) for p in proj[1:]]
    assert all(0.1 < np.linalg.norm(c) < 2.0 for c in source_centres), (
        "baselines should be small but non-zero"
    )


@pytest.mark.parametrize("seed", range(4))
def test_views_align_at_the_true_depth_and_not_at_a_wrong_one(seed: int) -> None:
    scene = make_scene(seed)
    gt_depth = scene["gt_depth"][0].astype(np.float64)
    for view in range(1, scene["imgs"].shape[1]):
        true_error = median_photometric_error(scene, view, gt_depth)
        for wrong in (0.87 * gt_depth, 1.15 * gt_depth):
            assert true_error < 0.3 * median_photometric_error(scene, view, wrong)


def inverse_depth_plane_residual(gt_depth: np.ndarray) -> float:
    """RMS residual of fitting 1/depth with a + b*u + c*v: zero for a single plane seen by a pinhole camera."""
    height, width = gt_depth.shape
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    design = np.stack([np.ones(u.size), u.ravel(), v.ravel()], axis=1)
    target = 1.0 / gt_depth.astype(np.float64).ravel()
    coeffs, *_ = np.linalg.lstsq(design, target, rcond=None)
    return float(np.sqrt(np.mean((design @ coeffs - target) ** 2)) / np.mean(target))


@pytest.mark.parametrize("seed", [0, 2, 4])
def test_even_seeds_show_a_single_plane(seed: int) -> None:
    assert inverse_depth_plane_residual(make_scene(seed)["gt_depth"][0]) < 1e-5


@pytest.mark.parametrize("seed", [1, 3, 5])
def test_odd_seeds_add_a_foreground_plane(seed: int) -> None:
    gt_depth = make_scene(seed)["gt_depth"][0]
    assert inverse_depth_plane_residual(gt_depth) > 1e-2
    split = 0.5 * (gt_depth.min() + gt_depth.max())
    assert 0.05 < np.mean(gt_depth < split) < 0.9


def test_edge_is_the_reference_sobel_magnitude_on_three_channels() -> None:
    scene = make_scene(1)
    edge = scene["edge"][0]
    np.testing.assert_array_equal(edge[0], edge[1])
    np.testing.assert_array_equal(edge[0], edge[2])
    np.testing.assert_allclose(edge[0], sobel_magnitude(scene["imgs"][0, 0].astype(np.float64)), atol=1e-6)
    assert edge.min() >= 0.0 and edge.max() <= 1.0


def test_sobel_magnitude_peaks_on_a_step_and_vanishes_on_flat_regions() -> None:
    image = np.zeros((3, 8, 10))
    image[:, :, 5:] = 1.0
    magnitude = sobel_magnitude(image)
    assert np.all(magnitude[:, [4, 5]] == magnitude.max())
    assert magnitude.max() == pytest.approx(4.0 / (4.0 * np.sqrt(2.0)))
    assert np.all(magnitude[:, :3] == 0) and np.all(magnitude[:, 7:] == 0)


def test_a_single_view_is_rejected() -> None:
    with pytest.raises(UsageError, match="n_views=1"):
        make_scene(0, n_views=1)
