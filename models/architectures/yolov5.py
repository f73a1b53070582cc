"""YOLOv5s (Ultralytics v6.0 / v7.0) in plain torch, with the same state_dict as upstream.

The module tree mirrors what Ultralytics' `parse_model` builds from `yolov5s.yaml` (depth 0.33,
width 0.50): layers live in `self.model`, an `nn.Sequential`, so a state_dict saved from an upstream
`DetectionModel` (`ckpt["model"].float().state_dict()`) loads here with `strict=True`.

The Detect head decodes boxes in the graph (v7.0 form): xy = (2*sigmoid + grid - 0.5) * stride and
wh = (2*sigmoid)**2 * anchor_pixels. The grid is derived from each feature map's shape inside
`forward`, so any input size that is a multiple of 32 and any batch size export correctly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.photos import SAMPLES_DIR
from trt_harness.models.photos import sample_photos as photos

STRIDES = (8.0, 16.0, 32.0)
# Pixel anchors of yolov5s.yaml per detection level (P3/8, P4/16, P5/32): (w, h) pairs.
ANCHORS_PX = (
    ((10.0, 13.0), (16.0, 30.0), (33.0, 23.0)),
    ((30.0, 61.0), (62.0, 45.0), (59.0, 119.0)),
    ((116.0, 90.0), (156.0, 198.0), (373.0, 326.0)),
)


class Conv(nn.Module):
    """Conv2d (no bias, 'same' padding unless given) + BatchNorm2d + SiLU, as upstream `Conv`."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1, p: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2 if p is None else p, bias=False)
        # upstream's initialize_weights() sets these on every BatchNorm2d
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c_in: int, c_out: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = Conv(c_in, c_out, 1, 1)
        self.cv2 = Conv(c_out, c_out, 3, 1)
        self.add = shortcut and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP bottleneck with three convolutions; hidden width is half the output width."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        hidden = c_out // 2
        self.cv1 = Conv(c_in, hidden, 1, 1)
        self.cv2 = Conv(c_in, hidden, 1, 1)
        self.cv3 = Conv(2 * hidden, c_out, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained max-pools equal SPP with k=(5, 9, 13)."""

    def __init__(self, c_in: int, c_out: int, k: int = 5) -> None:
        super().__init__()
        hidden = c_in // 2
        self.cv1 = Conv(c_in, hidden, 1, 1)
        self.cv2 = Conv(hidden * 4, c_out, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.d = dim

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, self.d)


class Detect(nn.Module):
    """Per-level 1x1 output convs plus the in-graph anchor decode.

    `anchors` is a buffer in grid units (pixels / stride), exactly as upstream stores it after
    `Model.__init__` divides by the stride; it is part of the state_dict.
    """

    def __init__(self, num_classes: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.nc = num_classes
        self.no = num_classes + 5  # x, y, w, h, objectness, classes
        self.nl = len(ANCHORS_PX)
        self.na = len(ANCHORS_PX[0])
        self.stride = STRIDES
        strides = torch.tensor(STRIDES).view(-1, 1, 1)
        self.register_buffer("anchors", torch.tensor(ANCHORS_PX) / strides)
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in channels)
        self.export = True

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor] | tuple:
        raw: list[torch.Tensor] = []
        decoded: list[torch.Tensor] = []
        for i in range(self.nl):
            x = self.m[i](xs[i])
            bs, _, ny, nx = x.shape
            # (bs, na*no, ny, nx) -> (bs, na, ny, nx, no)
            x = x.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            raw.append(x)
            if self.training:
                continue
            grid, anchor_grid = self._make_grid(nx, ny, i, x.dtype, x.device)
            xy, wh, conf = x.sigmoid().split((2, 2, self.nc + 1), 4)
            xy = (xy * 2 + grid) * self.stride[i]
            wh = (wh * 2) ** 2 * anchor_grid
            decoded.append(torch.cat((xy, wh, conf), 4).view(bs, self.na * ny * nx, self.no))
        if self.training:
            return raw
        predictions = torch.cat(decoded, 1)
        return predictions if self.export else (predictions, raw)

    def _make_grid(
        self, nx: int, ny: int, i: int, dtype: torch.dtype, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.na, ny, nx, 2)
        yv, xv = torch.meshgrid(
            torch.arange(ny, device=device, dtype=dtype),
            torch.arange(nx, device=device, dtype=dtype),
            indexing="ij",
        )
        # the -0.5 offset makes xy = 2*sigmoid - 0.5 + cell, i.e. centres may sit in (-0.5, 1.5) of a cell
        grid = torch.stack((xv, yv), 2).expand(shape) - 0.5
        anchor_grid = (self.anchors[i].to(dtype) * self.stride[i]).view(1, self.na, 1, 1, 2).expand(shape)
        return grid, anchor_grid


# Where each layer of `model` takes its input from (-1: the previous layer), per yolov5s.yaml.
_SOURCES: tuple[int | tuple[int, ...], ...] = (
    *(-1,) * 12,  # 0-11: backbone, then head Conv + Upsample
    (-1, 6),  # 12: cat backbone P4
    -1,
    -1,
    -1,
    (-1, 4),  # 16: cat backbone P3
    -1,  # 17: P3/8 out
    -1,
    (-1, 14),  # 19: cat head P4
    -1,  # 20: P4/16 out
    -1,
    (-1, 10),  # 22: cat head P5
    -1,  # 23: P5/32 out
    (17, 20, 23),  # 24: Detect
)


class YOLOv5(nn.Module):
    """yolov5s: input (N, 3, H, W) RGB in [0, 1], H and W multiples of 32.

    Output in eval mode: (N, 3 * (H*W/64 + H*W/256 + H*W/1024), 5 + num_classes) holding pixel
    xywh, objectness and class scores (both sigmoids). Set `model.model[-1].export = False` to
    get upstream's eval output `(predictions, raw_per_level)` instead.
    """

    def __init__(self, num_classes: int = 80) -> None:
        super().__init__()
        # Channels are yolov5s.yaml's widths times 0.5; repeats are its counts times 0.33, rounded.
        self.model = nn.Sequential(
            Conv(3, 32, 6, 2, 2),  # 0 P1/2
            Conv(32, 64, 3, 2),  # 1 P2/4
            C3(64, 64, 1),
            Conv(64, 128, 3, 2),  # 3 P3/8
            C3(128, 128, 2),
            Conv(128, 256, 3, 2),  # 5 P4/16
            C3(256, 256, 3),
            Conv(256, 512, 3, 2),  # 7 P5/32
            C3(512, 512, 1),
            SPPF(512, 512, 5),  # 9
            Conv(512, 256, 1, 1),  # 10
            nn.Upsample(scale_factor=2, mode="nearest"),
            Concat(1),
            C3(512, 256, 1, shortcut=False),  # 13
            Conv(256, 128, 1, 1),  # 14
            nn.Upsample(scale_factor=2, mode="nearest"),
            Concat(1),
            C3(256, 128, 1, shortcut=False),  # 17 P3/8 out
            Conv(128, 128, 3, 2),
            Concat(1),
            C3(256, 256, 1, shortcut=False),  # 20 P4/16 out
            Conv(256, 256, 3, 2),
            Concat(1),
            C3(512, 512, 1, shortcut=False),  # 23 P5/32 out
            Detect(num_classes, (128, 256, 512)),  # 24
        )

    @property
    def detect(self) -> Detect:
        return self.model[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor | list[torch.Tensor] | tuple:
        outputs: list[torch.Tensor] = []
        x: torch.Tensor | list[torch.Tensor] = images
        for layer, source in zip(self.model, _SOURCES, strict=True):
            if isinstance(source, tuple):
                x = [x if j == -1 else outputs[j] for j in source]
            x = layer(x)
            outputs.append(x)
        return x


def yolov5s(num_classes: int = 80) -> YOLOv5:
    """The yolov5s module in eval mode, with torch's default (untrained) initialization."""
    return YOLOv5(num_classes).eval()


def init_yolov5_seeded(model: YOLOv5, seed: int = 0, calibration_images: torch.Tensor | None = None) -> None:
    """Give `model` deterministic random weights whose activations look like a trained network's.

    Conv weights get a fan-in scaled normal init from a local generator (the global RNG is not
    touched), BatchNorm affine parameters a mild spread around (1, 0), and every BatchNorm's running
    statistics are calibrated layer by layer on `calibration_images` (default: the photos shipped in
    `models/samples` at 320x320, which suit 640 inputs too) so that post-BN activations are
    ~N(0, 1) * gamma + beta. The 1x1 output convs are scaled to unit logit spread and biased like
    upstream's `_initialize_biases`. Same seed and images -> bit-identical state_dict on one machine.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / math.sqrt(fan_in))
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=generator))
        _calibrate(model, sample_photos(320) if calibration_images is None else calibration_images)


def sample_photos(size: int) -> torch.Tensor:
    """The photos in `models/samples`, stretched to (N, 3, size, size) RGB in [0, 1].

    Calibration needs natural images: on synthetic patterns (smooth fields, 1/f noise, dead leaves)
    the statistics of deep layers drift 6-15x from those of photos, saturating every output.
    """
    loaded = photos()
    if not loaded:
        raise HarnessError(
            f"no sample photos (*.jpg) in {SAMPLES_DIR}; reinstall the package or restore them"
        )
    images = [
        torch.from_numpy(
            np.asarray(Image.fromarray(p.rgb).resize((size, size), Image.Resampling.BILINEAR)).copy()
        )
        for p in loaded
    ]
    return torch.stack(images).permute(0, 3, 1, 2).contiguous().float() / 255


def _calibrate(model: YOLOv5, batch: torch.Tensor) -> None:
    """One eval forward in which each BatchNorm first sets its running stats from its own input.

    Layers run in order, so every BatchNorm sees inputs already produced by calibrated layers.
    """
    detect = model.detect

    def set_bn_stats(bn: nn.BatchNorm2d, args: tuple[torch.Tensor]) -> None:
        x = args[0]
        bn.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        bn.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False))

    def set_head_scale(level: int) -> Callable[[nn.Conv2d, tuple[torch.Tensor]], None]:
        def hook(conv: nn.Conv2d, args: tuple[torch.Tensor]) -> None:
            # unit-std logits per output channel, then upstream's objectness/class priors as biases
            std = nn.functional.conv2d(args[0], conv.weight).std(dim=(0, 2, 3))
            conv.weight.div_(std.clamp_min(1e-6).view(-1, 1, 1, 1))
            bias = conv.bias.view(detect.na, detect.no)
            bias[:, 4] = math.log(8 / (640 / detect.stride[level]) ** 2)  # 8 objects per 640 image
            bias[:, 5:] = math.log(0.6 / (detect.nc - 0.999999))

        return hook

    handles = [
        m.register_forward_pre_hook(set_bn_stats) for m in model.modules() if isinstance(m, nn.BatchNorm2d)
    ]
    handles += [conv.register_forward_pre_hook(set_head_scale(i)) for i, conv in enumerate(detect.m)]
    was_training = model.training
    model.eval()
    try:
        model(batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


class BatchSqueezed(nn.Module):
    """The batch-1 deployment head many YOLO export scripts add: `model(x)[...]` -> `.squeeze(0)`.

    With the batch exported as a dynamic axis, the TorchScript exporter turns this squeeze into a
    Shape->Gather->Equal->If subgraph (the stray If the `remove_stray_if` pass removes).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).squeeze(0)
