"""A tiny cascade multi-view-stereo depth network (CasMVSNet-like), written the way MVS research code is.

It deliberately keeps the ops research MVS code uses, several of which do not export cleanly
(`torch.inverse` in the differentiable homography, `F.grid_sample`, `torch.einsum`, einops patching,
reflect padding, `F.interpolate(size=...)`, a trailing `.squeeze(1)`): the export replacements are
tested against this model, so rewriting these ops here would defeat its purpose.

Input conventions of `MVSNet.forward(imgs, proj_matrices, depth_values, edge)`:
- `imgs` (N, V, 3, H, W): view 0 is the reference view; H and W must be divisible by 8
  (stage 1 runs at 1/4 resolution and patches it 2x2).
- `proj_matrices` (N, V, 4, 4): full-resolution pixel projection matrices
  `[[K, 0], [0, 1]] @ [[R, t], [0, 1]]`, mapping a world point to `(u*z, v*z, z, 1)` where `(u, v)` is
  (column, row) with pixel centres at integers (the `align_corners=True` convention) and `z` the depth in
  that camera. The model scales the first two rows by each stage's resolution factor itself.
- `depth_values` (N, D): candidate reference-view depths, ascending; stage 1 tests all of them, stages 2
  and 3 test a narrower, uniformly spaced range around the previous stage's estimate.
- `edge` (N, 3, H, W): edge/guidance image used to refine the stage-3 depth.

Outputs (a dict in `MVS_OUTPUT_NAMES` order), with h_s = H * scale_s, w_s = W * scale_s and
scales (1/4, 1/2, 1):
- `depth_stageS`, `conf_stageS` (N, h_s, w_s): soft-argmin depth and photometric confidence of stage S.
- `depth` (N, H, W): stage-3 depth refined with `edge`, clamped to [min, max] of `depth_values`.
- `photometric_confidence` (N, H, W): mean of the three stage confidences, upsampled to full resolution.
- `depth_min` (N,): the smallest value of `depth` per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

MVS_OUTPUT_NAMES: tuple[str, ...] = (
    "depth_stage1",
    "conf_stage1",
    "depth_stage2",
    "conf_stage2",
    "depth_stage3",
    "conf_stage3",
    "depth",
    "photometric_confidence",
    "depth_min",
)


@dataclass(frozen=True)
class StageSpec:
    """One cascade stage: resolution factor, feature width and its depth hypotheses.

    `num_depths=None` tests every candidate in `depth_values`; otherwise `num_depths` hypotheses spaced
    uniformly over `span_fraction` of the full depth range, centred on the previous stage's depth.
    """

    scale: float
    feature_channels: int
    num_depths: int | None
    span_fraction: float


STAGES: tuple[StageSpec, ...] = (
    StageSpec(scale=0.25, feature_channels=16, num_depths=None, span_fraction=1.0),
    StageSpec(scale=0.5, feature_channels=8, num_depths=16, span_fraction=0.5),
    StageSpec(scale=1.0, feature_channels=8, num_depths=8, span_fraction=0.125),
)
CORRELATION_GROUPS = 4
ATTENTION_PATCH = 2
SCORE_GAIN = 8.0


def homo_warping(
    src_fea: torch.Tensor, src_proj: torch.Tensor, ref_proj: torch.Tensor, depth_hypotheses: torch.Tensor
) -> torch.Tensor:
    """Warp source features into the reference view at every depth hypothesis.

    src_fea (B, C, H, W); src_proj, ref_proj (B, 4, 4) pixel projection matrices at this resolution;
    depth_hypotheses (B, D, H, W) reference-view depths. Returns (B, C, D, H, W).
    """
    batch, channels, height, width = src_fea.shape
    num_depth = depth_hypotheses.shape[1]
    proj = torch.matmul(src_proj, torch.inverse(ref_proj))
    rot = proj[:, :3, :3]
    trans = proj[:, :3, 3:4]

    y, x = torch.meshgrid(
        torch.arange(0, height, dtype=src_fea.dtype, device=src_fea.device),
        torch.arange(0, width, dtype=src_fea.dtype, device=src_fea.device),
        indexing="ij",
    )
    y, x = y.reshape(height * width), x.reshape(height * width)
    xyz = torch.stack((x, y, torch.ones_like(x)))
    xyz = torch.unsqueeze(xyz, 0).repeat(batch, 1, 1)
    rot_xyz = torch.matmul(rot, xyz)
    rot_depth_xyz = rot_xyz.unsqueeze(2).repeat(1, 1, num_depth, 1) * depth_hypotheses.view(
        batch, 1, num_depth, -1
    )
    proj_xyz = rot_depth_xyz + trans.view(batch, 3, 1, 1)
    proj_xy = proj_xyz[:, :2, :, :] / proj_xyz[:, 2:3, :, :]
    proj_x_normalized = proj_xy[:, 0, :, :] / ((width - 1) / 2) - 1
    proj_y_normalized = proj_xy[:, 1, :, :] / ((height - 1) / 2) - 1
    grid = torch.stack((proj_x_normalized, proj_y_normalized), dim=3)

    warped_src_fea = F.grid_sample(
        src_fea,
        grid.view(batch, num_depth * height, width, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    return warped_src_fea.view(batch, channels, num_depth, height, width)


class ReflectConv(nn.Module):
    """Conv + ReLU on a reflect-padded input: no zero border that MVS matching would latch onto."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(F.pad(x, (1, 1, 1, 1), mode="reflect")))


class FeatureNet(nn.Module):
    """Three-scale FPN; returns features at 1/4, 1/2 and full resolution (coarse first)."""

    def __init__(self) -> None:
        super().__init__()
        coarse, middle, fine = (stage.feature_channels for stage in STAGES)
        self.conv0 = nn.Sequential(ReflectConv(3, 8), ReflectConv(8, 8))
        self.conv1 = nn.Sequential(ReflectConv(8, 16, stride=2), ReflectConv(16, 16))
        self.conv2 = nn.Sequential(ReflectConv(16, 32, stride=2), ReflectConv(32, 32))
        self.out1 = nn.Conv2d(32, coarse, 1)
        self.inner1 = nn.Conv2d(16, coarse, 1)
        self.out2 = nn.Conv2d(coarse, middle, 1)
        self.inner2 = nn.Conv2d(8, middle, 1)
        self.out3 = nn.Conv2d(middle, fine, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        conv0 = self.conv0(x)
        conv1 = self.conv1(conv0)
        conv2 = self.conv2(conv1)
        stage1 = self.out1(conv2)
        intra = F.interpolate(stage1, size=conv1.shape[2:], mode="nearest") + self.inner1(conv1)
        stage2 = self.out2(intra)
        intra = F.interpolate(stage2, size=conv0.shape[2:], mode="nearest") + self.inner2(conv0)
        stage3 = self.out3(intra)
        return [stage1, stage2, stage3]


class PatchAttention(nn.Module):
    """Self-attention over non-overlapping patches: global context for the coarse matching stage."""

    def __init__(self, channels: int, patch: int = ATTENTION_PATCH, dim: int = 32) -> None:
        super().__init__()
        self.patch = patch
        self.dim = dim
        token = channels * patch * patch
        self.qkv = nn.Linear(token, 3 * dim)
        self.proj = nn.Linear(dim, token)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch
        tokens = rearrange(x, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p)
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        attn = (torch.einsum("bqc,bkc->bqk", q, k) * self.dim**-0.5).softmax(dim=-1)
        mixed = self.proj(torch.einsum("bqk,bkc->bqc", attn, v))
        return x + rearrange(mixed, "b (h w) (p1 p2 c) -> b c (h p1) (w p2)", h=x.shape[2] // p, p1=p, p2=p)


class CostRegNet(nn.Module):
    """Small 3D CNN turning the group-correlation volume (B, G, D, H, W) into matching scores (B, D, H, W)."""

    def __init__(self, groups: int, width: int = 8) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv3d(groups, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv3d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv3d(width, 1, 3, padding=1),
        )

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        return self.layers(volume).squeeze(1)


class DepthRefineNet(nn.Module):
    """Edge-guided residual refinement of the final depth; the residual is bounded by the stage-3 spacing."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, width, 3)
        self.conv2 = nn.Conv2d(width, width, 3)
        self.conv3 = nn.Conv2d(width, 1, 3)

    def forward(self, depth_normalized: torch.Tensor, edge: torch.Tensor) -> torch.Tensor:
        x = torch.cat([depth_normalized, edge], dim=1)
        x = F.relu(self.conv1(F.pad(x, (1, 1, 1, 1), mode="replicate")))
        x = F.relu(self.conv2(F.pad(x, (1, 1, 1, 1), mode="replicate")))
        return torch.tanh(self.conv3(F.pad(x, (1, 1, 1, 1), mode="replicate")))


def depth_regression(prob_volume: torch.Tensor, depth_hypotheses: torch.Tensor) -> torch.Tensor:
    """Soft-argmin: the probability-weighted mean depth, (B, D, H, W) -> (B, H, W)."""
    return torch.sum(prob_volume * depth_hypotheses, dim=1)


def photometric_confidence(prob_volume: torch.Tensor) -> torch.Tensor:
    """Probability mass of the four hypotheses around the regressed index (CasMVSNet's confidence)."""
    num_depth = prob_volume.shape[1]
    prob_volume_sum4 = 4 * F.avg_pool3d(
        F.pad(prob_volume.unsqueeze(1), pad=(0, 0, 0, 0, 1, 2)), (4, 1, 1), stride=1, padding=0
    ).squeeze(1)
    index_values = torch.arange(num_depth, device=prob_volume.device, dtype=prob_volume.dtype)
    depth_index = depth_regression(prob_volume, index_values.view(1, num_depth, 1, 1)).long()
    depth_index = depth_index.clamp(min=0, max=num_depth - 1)
    return torch.gather(prob_volume_sum4, 1, depth_index.unsqueeze(1)).squeeze(1)


def cascade_hypotheses(
    prev_depth: torch.Tensor, depth_values: torch.Tensor, stage: StageSpec, size: tuple[int, int]
) -> torch.Tensor:
    """Uniform hypotheses around the upsampled previous depth, kept inside the full depth range."""
    assert stage.num_depths is not None
    depth_min = depth_values.amin(dim=1).view(-1, 1, 1)
    depth_max = depth_values.amax(dim=1).view(-1, 1, 1)
    span = (depth_max - depth_min) * stage.span_fraction
    interval = span / (stage.num_depths - 1)
    cur_depth = F.interpolate(prev_depth.unsqueeze(1), size=size, mode="bilinear", align_corners=False)
    cur_depth = cur_depth.squeeze(1)
    low = torch.minimum(torch.maximum(cur_depth - span / 2, depth_min), depth_max - span)
    steps = torch.arange(stage.num_depths, device=depth_values.device, dtype=depth_values.dtype)
    return low.unsqueeze(1) + steps.view(1, -1, 1, 1) * interval.unsqueeze(1)


class MVSNet(nn.Module):
    """Three-stage cascade MVS: group-correlation cost volumes, soft-argmin, edge-guided refinement."""

    def __init__(self) -> None:
        super().__init__()
        self.feature = FeatureNet()
        self.attention = PatchAttention(STAGES[0].feature_channels)
        self.cost_regularization = nn.ModuleList(CostRegNet(CORRELATION_GROUPS) for _ in STAGES)
        self.refine = DepthRefineNet()

    def forward(
        self,
        imgs: torch.Tensor,
        proj_matrices: torch.Tensor,
        depth_values: torch.Tensor,
        edge: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        num_views = imgs.shape[1]
        features = self.feature(rearrange(imgs, "n v c h w -> (n v) c h w"))
        features[0] = self.attention(features[0])
        features = [rearrange(f, "(n v) c h w -> n v c h w", v=num_views) for f in features]

        outputs: dict[str, torch.Tensor] = {}
        depth = None
        for index, (stage, stage_features) in enumerate(zip(STAGES, features, strict=True)):
            height, width = stage_features.shape[3], stage_features.shape[4]
            row_scale = torch.tensor(
                [stage.scale, stage.scale, 1.0, 1.0], dtype=proj_matrices.dtype, device=proj_matrices.device
            )
            stage_proj = proj_matrices * row_scale.view(1, 1, 4, 1)
            if depth is None:
                hypotheses = repeat(depth_values, "n d -> n d h w", h=height, w=width)
            else:
                hypotheses = cascade_hypotheses(depth, depth_values, stage, (height, width))
            prob_volume = self.match(stage_features, stage_proj, hypotheses, index)
            depth = depth_regression(prob_volume, hypotheses)
            outputs[f"depth_stage{index + 1}"] = depth
            outputs[f"conf_stage{index + 1}"] = photometric_confidence(prob_volume)

        near = depth_values.amin(dim=1).view(-1, 1, 1, 1)
        far = depth_values.amax(dim=1).view(-1, 1, 1, 1)
        final_interval = (far - near) * STAGES[-1].span_fraction / (STAGES[-1].num_depths - 1)
        coarse = depth.unsqueeze(1)
        residual = self.refine((coarse - near) / (far - near), edge)
        refined = torch.minimum(torch.maximum(coarse + residual * final_interval, near), far)
        outputs["depth"] = refined.squeeze(1)

        full_size = outputs["depth"].shape[1:]
        stage_confidences = [
            F.interpolate(
                outputs[f"conf_stage{i + 1}"].unsqueeze(1),
                size=full_size,
                mode="bilinear",
                align_corners=False,
            )
            for i in range(len(STAGES))
        ]
        outputs["photometric_confidence"] = torch.stack(stage_confidences).mean(dim=0).squeeze(1)
        outputs["depth_min"] = torch.amin(outputs["depth"], dim=(1, 2))
        return outputs

    def match(
        self, features: torch.Tensor, proj: torch.Tensor, hypotheses: torch.Tensor, stage_index: int
    ) -> torch.Tensor:
        """Probability volume (N, D, h, w) from view-averaged group correlation at one stage."""
        ref_fea = rearrange(features[:, 0], "n (g c) h w -> n g c h w", g=CORRELATION_GROUPS)
        group_channels = ref_fea.shape[2]
        correlation = 0
        for view in range(1, features.shape[1]):
            warped = homo_warping(features[:, view], proj[:, view], proj[:, 0], hypotheses)
            warped = rearrange(warped, "n (g c) d h w -> n g c d h w", g=CORRELATION_GROUPS)
            correlation = correlation + torch.einsum("ngchw,ngcdhw->ngdhw", ref_fea, warped) / group_channels
        correlation = correlation / (features.shape[1] - 1)
        scores = self.cost_regularization[stage_index](correlation)
        return F.softmax(scores, dim=1)


def mvs_net() -> nn.Module:
    """The cascade MVS net with PyTorch's default init; call `init_mvs_seeded` for reproducible weights."""
    return MVSNet()


def init_mvs_seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    """Deterministic initialisation from `seed`, independent of (and not advancing) the global RNG.

    Weights are Gaussian with variance `gain / fan_in`: He (gain 2) for the convs feeding a ReLU,
    1 for linear projections (1x1 FPN convs, attention) so the FPN sums do not blow up, and
    `SCORE_GAIN` for the single-channel heads so the probability volumes are neither flat nor one-hot.
    Biases are small so the cost volumes stay driven by the image evidence.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, nn.Conv2d | nn.Conv3d | nn.Linear):
                continue
            if isinstance(module, nn.Linear) or all(k == 1 for k in module.kernel_size):
                gain = 1.0
            elif module.out_channels == 1:
                gain = SCORE_GAIN
            else:
                gain = 2.0
            std = (gain / module.weight[0].numel()) ** 0.5
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
            if module.bias is not None:
                module.bias.copy_((torch.rand(module.bias.shape, generator=generator) - 0.5) * 0.02)
    return model
