"""An anchor-free YOLOv8n detector in plain torch, laid out like Ultralytics' YOLOv8n.

Structure and module names follow Ultralytics (`ultralytics/cfg/models/v8/yolov8.yaml` at scale n:
depth 0.33, width 0.25, max_channels 1024; `Conv`, `C2f`, `SPPF` from `nn/modules/block.py` and
`conv.py`; the v8 `Detect` head with DFL from `nn/modules/head.py`), so keys read `model.0.conv.weight`
... `model.22.cv2.0.0.conv.weight`, `model.22.dfl.conv.weight`. The output is Ultralytics' export
output: (N, 4 + nc, anchors) with boxes as xywh in input pixels and sigmoid class scores.

Anchor points and strides are computed from the feature shapes inside `forward`, so any input side
divisible by 32 works (640 -> 8400 anchors, 320 -> 2100) and both ONNX exporters trace them.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from trt_harness.models.architectures.resnet import calibrate_batchnorm, dead_leaves_images

STRIDES = (8, 16, 32)
REG_MAX = 16
HEAD_LOGIT_STD = 1.5
# P5 features see most of the image, so their BN statistics need several images; with 2, other
# images' deep activations came out several times too large
CALIBRATION_IMAGES = 8


class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm + SiLU, 'same' padding; Ultralytics' BN eps/momentum."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c_in: int, c_out: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = Conv(c_in, c_out, 3)
        self.cv2 = Conv(c_out, c_out, 3)
        self.add = shortcut and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP bottleneck with two convolutions: split, n chained bottlenecks, concatenate every stage."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = False) -> None:
        super().__init__()
        self.c = c_out // 2
        self.cv1 = Conv(c_in, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c_out, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained max-pools instead of three parallel ones."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 5) -> None:
        super().__init__()
        hidden = c_in // 2
        self.cv1 = Conv(c_in, hidden, 1)
        self.cv2 = Conv(hidden * 4, c_out, 1)
        self.m = nn.MaxPool2d(kernel, stride=1, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, 1)


class DFL(nn.Module):
    """Distribution focal loss integral: the expected value of a softmax over `reg_max` bins."""

    def __init__(self, reg_max: int = REG_MAX) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.reset_bins()

    def reset_bins(self) -> None:
        with torch.no_grad():
            self.conv.weight.copy_(torch.arange(self.reg_max, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 4 * reg_max, A) bin logits -> (N, 4, A) expected distances, in strides."""
        bins = x.unflatten(1, (4, self.reg_max)).transpose(2, 1).softmax(1)
        return self.conv(bins).flatten(1, 2)


class Detect(nn.Module):
    """YOLOv8 decoupled head: per level a box branch (4 x reg_max DFL logits) and a class branch."""

    def __init__(self, nc: int, channels: tuple[int, ...], strides: tuple[int, ...] = STRIDES) -> None:
        super().__init__()
        self.nc = nc
        self.reg_max = REG_MAX
        self.strides = strides
        box_hidden = max(16, channels[0] // 4, self.reg_max * 4)
        cls_hidden = max(channels[0], min(nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(
                Conv(c, box_hidden, 3),
                Conv(box_hidden, box_hidden, 3),
                nn.Conv2d(box_hidden, 4 * self.reg_max, 1),
            )
            for c in channels
        )
        self.cv3 = nn.ModuleList(
            nn.Sequential(
                Conv(c, cls_hidden, 3), Conv(cls_hidden, cls_hidden, 3), nn.Conv2d(cls_hidden, nc, 1)
            )
            for c in channels
        )
        self.dfl = DFL(self.reg_max)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        box_logits = torch.cat(
            [branch(x).flatten(2) for branch, x in zip(self.cv2, features, strict=True)], 2
        )
        cls_logits = torch.cat(
            [branch(x).flatten(2) for branch, x in zip(self.cv3, features, strict=True)], 2
        )
        anchor_points, stride_per_anchor = make_anchors(features, self.strides)
        boxes = dist2bbox(self.dfl(box_logits), anchor_points) * stride_per_anchor
        return torch.cat((boxes, cls_logits.sigmoid()), 1)


def make_anchors(
    features: list[torch.Tensor], strides: tuple[int, ...], offset: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid-cell centres (2, anchors) in feature units and each anchor's stride (1, anchors)."""
    points, strides_out = [], []
    for x, stride in zip(features, strides, strict=True):
        height, width = x.shape[2:]
        xs = torch.arange(width, dtype=x.dtype, device=x.device) + offset
        ys = torch.arange(height, dtype=x.dtype, device=x.device) + offset
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((grid_x, grid_y)).flatten(1))
        strides_out.append(torch.full_like(grid_x, float(stride)).flatten().unsqueeze(0))
    return torch.cat(points, 1), torch.cat(strides_out, 1)


def dist2bbox(distance: torch.Tensor, anchor_points: torch.Tensor) -> torch.Tensor:
    """(N, 4, A) left/top/right/bottom distances -> (N, 4, A) centre-x, centre-y, width, height."""
    left_top, right_bottom = distance.chunk(2, 1)
    top_left = anchor_points - left_top
    bottom_right = anchor_points + right_bottom
    return torch.cat(((top_left + bottom_right) / 2, bottom_right - top_left), 1)


class YOLOv8(nn.Module):
    """Layers 0-22 of yolov8.yaml in one `model` list; `_sources` are the yaml's `from` entries."""

    def __init__(self, nc: int, depth: float, width: float, max_channels: int) -> None:
        super().__init__()

        def ch(c: int) -> int:
            return math.ceil(min(c, max_channels) * width / 8) * 8

        def n(repeats: int) -> int:
            return max(round(repeats * depth), 1)

        c64, c128, c256, c512, c1024 = (ch(c) for c in (64, 128, 256, 512, 1024))
        layers: list[tuple[tuple[int, ...], nn.Module]] = [
            ((-1,), Conv(3, c64, 3, 2)),  # 0 P1/2
            ((-1,), Conv(c64, c128, 3, 2)),  # 1 P2/4
            ((-1,), C2f(c128, c128, n(3), shortcut=True)),
            ((-1,), Conv(c128, c256, 3, 2)),  # 3 P3/8
            ((-1,), C2f(c256, c256, n(6), shortcut=True)),
            ((-1,), Conv(c256, c512, 3, 2)),  # 5 P4/16
            ((-1,), C2f(c512, c512, n(6), shortcut=True)),
            ((-1,), Conv(c512, c1024, 3, 2)),  # 7 P5/32
            ((-1,), C2f(c1024, c1024, n(3), shortcut=True)),
            ((-1,), SPPF(c1024, c1024, 5)),  # 9
            ((-1,), nn.Upsample(scale_factor=2, mode="nearest")),
            ((-1, 6), Concat()),
            ((-1,), C2f(c1024 + c512, c512, n(3))),  # 12
            ((-1,), nn.Upsample(scale_factor=2, mode="nearest")),
            ((-1, 4), Concat()),
            ((-1,), C2f(c512 + c256, c256, n(3))),  # 15 P3 out
            ((-1,), Conv(c256, c256, 3, 2)),
            ((-1, 12), Concat()),
            ((-1,), C2f(c256 + c512, c512, n(3))),  # 18 P4 out
            ((-1,), Conv(c512, c512, 3, 2)),
            ((-1, 9), Concat()),
            ((-1,), C2f(c512 + c1024, c1024, n(3))),  # 21 P5 out
            ((15, 18, 21), Detect(nc, (c256, c512, c1024))),  # 22
        ]
        self._sources = tuple(sources for sources, _ in layers)
        self.model = nn.ModuleList(module for _, module in layers)
        self._kept = {i for sources in self._sources for i in sources if i >= 0}

    @property
    def detect(self) -> Detect:
        head = self.model[-1]
        assert isinstance(head, Detect)
        return head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [0, 1] -> (N, 4 + nc, anchors)."""
        x = images
        outputs: dict[int, torch.Tensor] = {}
        for index, (sources, module) in enumerate(zip(self._sources, self.model, strict=True)):
            if sources != (-1,):
                inputs = [x if i == -1 else outputs[i] for i in sources]
                x = module(inputs)
            else:
                x = module(x)
            if index in self._kept:
                outputs[index] = x
        return x


def yolov8n(num_classes: int = 12) -> YOLOv8:
    """YOLOv8n (depth 0.33, width 0.25, max_channels 1024) with `num_classes` classes."""
    return YOLOv8(num_classes, depth=0.33, width=0.25, max_channels=1024)


def init_yolov8_seeded(model: YOLOv8, seed: int = 0, calibration_size: int = 640) -> YOLOv8:
    """Deterministic stand-in weights for a `yolov8n` model (in place; returned, in eval mode).

    Uses its own generator, so the global RNG neither influences nor sees it. Convs get torch's
    default fan-in init, BN affine parameters a small spread around identity, then BN running
    statistics are calibrated on photo-like `dead_leaves_images` of side `calibration_size`. The
    head biases follow Ultralytics' `Detect.bias_init`: box logits 1.0 and class logits at the prior
    of about 5 objects per 640x640 image; the head's last convs are scaled so box and class logits
    vary by `HEAD_LOGIT_STD` (peaked DFL distributions, scores spread over orders of magnitude).
    """
    generator = torch.Generator().manual_seed(seed)
    detect = model.detect
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and module is not detect.dfl.conv:
                # torch's default Conv2d init (kaiming_uniform with a=sqrt(5)): bound 1/sqrt(fan_in)
                bound = 1.0 / math.sqrt(module.weight[0].numel())
                nn.init.uniform_(module.weight, -bound, bound, generator=generator)
                if module.bias is not None:
                    nn.init.uniform_(module.bias, -bound, bound, generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.uniform_(module.weight, 0.8, 1.2, generator=generator)
                nn.init.normal_(module.bias, 0.0, 0.1, generator=generator)
        detect.dfl.reset_bins()
        for box_branch, cls_branch, stride in zip(detect.cv2, detect.cv3, detect.strides, strict=True):
            box_branch[-1].bias.fill_(1.0)
            cls_branch[-1].bias.fill_(math.log(5 / detect.nc / (640 / stride) ** 2))
    images = dead_leaves_images((CALIBRATION_IMAGES, 3, calibration_size, calibration_size), generator)
    calibrate_batchnorm(model, images)
    _scale_head_outputs(model, images)
    return model


def _scale_head_outputs(model: YOLOv8, images: torch.Tensor) -> None:
    """Rescale the weights of the head's last convs so their outputs vary by `HEAD_LOGIT_STD` over `images`.

    At the default init these logits vary by ~0.3: every DFL softmax is nearly flat (all boxes about
    the same size) and all class scores sit at the prior, which a comparison could not tell apart
    from a broken head. Biases stay at their `bias_init` values.
    """
    detect = model.detect
    last_convs = [branch[-1] for branch in (*detect.cv2, *detect.cv3)]
    outputs: dict[nn.Module, torch.Tensor] = {}
    handles = [
        conv.register_forward_hook(lambda m, args, out: outputs.__setitem__(m, out)) for conv in last_convs
    ]
    with torch.no_grad():
        model(images)
        for handle in handles:
            handle.remove()
        for conv in last_convs:
            spread = (outputs[conv] - conv.bias.view(1, -1, 1, 1)).std()
            conv.weight *= HEAD_LOGIT_STD / spread
