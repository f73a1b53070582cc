"""Synthetic, geometrically consistent multi-view scenes for the MVS model (numpy only).

A scene is a tilted, infinite textured background plane and, for odd seeds, a textured rectangle in
front of it, seen by `n_views` pinhole cameras with small baselines. Each view is rendered by
intersecting every pixel's ray with the planes and evaluating a procedural texture (smoothed checker +
sinusoids + Gaussian blobs) at the hit point in the plane's own coordinates, so warping a source view
into the reference view at the true depth reproduces the reference image (up to occlusions and
bilinear sampling).

Conventions match `models.architectures.mvs`: view 0 is the reference camera (identity pose); pixel
(u, v) = (column, row) with pixel centres at integers; `proj_matrices[0, i]` is
`[[K, 0], [0, 1]] @ [[R, t], [0, 1]]` (world -> (u*z, v*z, z, 1)); depths are z-depths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from trt_harness.models.core.errors import HarnessError, UsageError

SOBEL_MAX = 4.0 * np.sqrt(2.0)  # largest Sobel gradient magnitude of an image in [0, 1]


@dataclass(frozen=True)
class ProceduralTexture:
    """RGB texture defined on continuous plane coordinates (world units), values in [0, 1]."""

    checker_period: float
    wave_frequencies: np.ndarray  # (2, 2): two plane-space wave vectors
    wave_phases: np.ndarray  # (2,)
    blob_centres: np.ndarray  # (B, 2)
    blob_sigmas: np.ndarray  # (B,)
    blob_weights: np.ndarray  # (B,) signed
    colour_mix: np.ndarray  # (3, 3): per-channel weights of checker, waves, blobs

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        period = self.checker_period
        checker = 0.5 + 0.5 * np.tanh(4.0 * np.sin(np.pi * u / period) * np.sin(np.pi * v / period))
        waves = sum(
            np.sin(2 * np.pi * (f[0] * u + f[1] * v) + phase)
            for f, phase in zip(self.wave_frequencies, self.wave_phases, strict=True)
        )
        blobs = np.zeros_like(u)
        for centre, sigma, weight in zip(self.blob_centres, self.blob_sigmas, self.blob_weights, strict=True):
            blobs += weight * np.exp(-((u - centre[0]) ** 2 + (v - centre[1]) ** 2) / (2 * sigma**2))
        components = np.stack([checker - 0.5, 0.25 * waves, blobs], axis=-1)
        return np.clip(0.5 + components @ self.colour_mix.T, 0.0, 1.0)


@dataclass(frozen=True)
class TexturedPlane:
    """A plane through `origin` spanned by unit vectors `axis_u`, `axis_v`; bounded when `half_extent` is set."""

    origin: np.ndarray
    axis_u: np.ndarray
    axis_v: np.ndarray
    half_extent: tuple[float, float] | None
    texture: ProceduralTexture

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.axis_u, self.axis_v)


def random_texture(rng: np.random.Generator, feature_size: float, extent: float) -> ProceduralTexture:
    """Texture whose checker cells, waves and blobs are about `feature_size` world units; blobs within `extent`."""
    n_blobs = 40
    return ProceduralTexture(
        checker_period=feature_size * rng.uniform(0.8, 1.2),
        wave_frequencies=rng.uniform(-1.0, 1.0, size=(2, 2)) / feature_size,
        wave_phases=rng.uniform(0, 2 * np.pi, size=2),
        blob_centres=rng.uniform(-extent, extent, size=(n_blobs, 2)),
        blob_sigmas=feature_size * rng.uniform(0.1, 0.4, size=n_blobs),
        blob_weights=rng.uniform(-0.5, 0.5, size=n_blobs),
        colour_mix=rng.uniform(0.2, 0.7, size=(3, 3)),
    )


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R_z(roll) @ R_x(pitch) @ R_y(yaw); as a world-to-camera rotation, yaw > 0 turns the view towards -x."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    about_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    about_x = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    about_z = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return about_z @ about_x @ about_y


def tilted_plane(
    rng: np.random.Generator,
    depth: float,
    max_tilt: float,
    half_extent: tuple[float, float] | None,
    texture_extent: float,
) -> TexturedPlane:
    """A plane through (x0, y0, depth) facing the reference camera, tilted by up to `max_tilt` radians."""
    frame = rotation(
        rng.uniform(-max_tilt, max_tilt), rng.uniform(-max_tilt, max_tilt), rng.uniform(-0.5, 0.5)
    )
    lateral = rng.uniform(-0.15, 0.15, size=2) * depth
    return TexturedPlane(
        origin=np.array([lateral[0], lateral[1], depth]),
        axis_u=frame[:, 0],
        axis_v=frame[:, 1],
        half_extent=half_extent,
        texture=random_texture(rng, 0.15 * depth, texture_extent),
    )


def render(
    planes: list[TexturedPlane], k: np.ndarray, rot: np.ndarray, trans: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ray-trace one view: image (3, H, W) and z-depth (H, W) of the nearest plane hit per pixel."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    rays_cam = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(k).T  # z-component 1
    rays_world = rays_cam @ rot  # R^T applied to each row vector
    centre = -rot.T @ trans
    depth = np.full((height, width), np.inf)
    image = np.zeros((height, width, 3))
    for plane in planes:
        normal = plane.normal
        # rays_cam has unit z, so the ray parameter s is the z-depth in this camera
        s = ((plane.origin - centre) @ normal) / (rays_world @ normal)
        hit = centre + s[..., None] * rays_world
        local_u = (hit - plane.origin) @ plane.axis_u
        local_v = (hit - plane.origin) @ plane.axis_v
        visible = (s > 0) & (s < depth)
        if plane.half_extent is not None:
            visible &= (np.abs(local_u) <= plane.half_extent[0]) & (np.abs(local_v) <= plane.half_extent[1])
        depth = np.where(visible, s, depth)
        image = np.where(visible[..., None], plane.texture(local_u, local_v), image)
    if not np.isfinite(depth).all():
        raise HarnessError(
            f"the background plane does not cover the whole {height}x{width} view; use an aspect ratio "
            "closer to 4:5 (height:width) so every ray hits it"
        )
    return image.transpose(2, 0, 1), depth


def sobel_magnitude(image: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude (H, W) of the luminance of a (3, H, W) image in [0, 1], scaled to [0, 1]."""
    gray = image.mean(axis=0)
    padded = np.pad(gray, 1, mode="edge")
    h, w = gray.shape

    def window(dy: int, dx: int) -> np.ndarray:
        return padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    gx = (window(-1, 1) + 2 * window(0, 1) + window(1, 1)) - (
        window(-1, -1) + 2 * window(0, -1) + window(1, -1)
    )
    gy = (window(1, -1) + 2 * window(1, 0) + window(1, 1)) - (
        window(-1, -1) + 2 * window(-1, 0) + window(-1, 1)
    )
    return np.hypot(gx, gy) / SOBEL_MAX


def make_scene(
    seed: int, n_views: int = 3, height: int = 64, width: int = 80, n_depths: int = 32
) -> dict[str, np.ndarray]:
    """One scene with batch dimension 1: model inputs plus the reference view's `gt_depth` (1, H, W).

    Keys: `imgs` (1, V, 3, H, W) in [0, 1], `proj_matrices` (1, V, 4, 4), `depth_values` (1, D) ascending
    and enclosing every true depth, `edge` (1, 3, H, W), `gt_depth` (1, H, W); all float32.
    Seeds with odd parity add a foreground rectangle (two depth layers with occlusions).
    """
    if n_views < 2:
        raise UsageError(
            f"n_views={n_views}: multi-view stereo needs a reference and at least one source view"
        )
    rng = np.random.default_rng(seed)
    k = np.array([[0.8 * width, 0.0, (width - 1) / 2], [0.0, 0.8 * width, (height - 1) / 2], [0.0, 0.0, 1.0]])

    background_depth = rng.uniform(4.5, 6.0)
    planes = [tilted_plane(rng, background_depth, 0.3, None, 0.6 * background_depth)]
    if seed % 2 == 1:
        front_depth = rng.uniform(2.5, 3.2)
        half = (rng.uniform(0.25, 0.35) * front_depth, rng.uniform(0.2, 0.3) * front_depth)
        planes.insert(0, tilted_plane(rng, front_depth, 0.35, half, max(half)))

    poses = [(np.eye(3), np.zeros(3))]
    for view in range(1, n_views):
        angle = 2 * np.pi * (view - 1) / (n_views - 1) + rng.uniform(-0.3, 0.3)
        baseline = rng.uniform(0.5, 0.8)
        centre = np.array([baseline * np.cos(angle), 0.6 * baseline * np.sin(angle), rng.uniform(-0.1, 0.1)])
        # toe in halfway towards the background centre so the views overlap despite the baseline
        yaw = 0.5 * np.arctan2(centre[0], background_depth)
        pitch = -0.5 * np.arctan2(centre[1], background_depth)
        rot = rotation(yaw, pitch, 0.0)
        rot = rotation(*rng.uniform(-0.01, 0.01, size=3)) @ rot
        poses.append((rot, -rot @ centre))

    intrinsics = np.eye(4)
    intrinsics[:3, :3] = k
    renders = [render(planes, k, rot, trans, height, width) for rot, trans in poses]
    images = [image for image, _ in renders]
    gt_depth = renders[0][1]
    projections = []
    for rot, trans in poses:
        extrinsics = np.eye(4)
        extrinsics[:3, :3], extrinsics[:3, 3] = rot, trans
        projections.append(intrinsics @ extrinsics)

    depth_values = np.linspace(0.8 * gt_depth.min(), 1.2 * gt_depth.max(), n_depths)
    edge = np.repeat(sobel_magnitude(images[0])[None], 3, axis=0)
    arrays = {
        "imgs": np.stack(images)[None],
        "proj_matrices": np.stack(projections)[None],
        "depth_values": depth_values[None],
        "edge": edge[None],
        "gt_depth": gt_depth[None],
    }
    return {name: array.astype(np.float32) for name, array in arrays.items()}


def make_scenes(count: int, seed: int = 0, **kw: int) -> list[dict[str, np.ndarray]]:
    """`count` scenes with seeds `seed, seed + 1, ...` (alternating one and two planes)."""
    return [make_scene(seed + i, **kw) for i in range(count)]
