"""ResNet-50 in plain torch, state_dict-compatible with torchvision's `resnet50()`.

The layout is torchvision's v1.5 variant (stride on the 3x3 conv of each bottleneck), so a torchvision
checkpoint loads unchanged. No weights can be downloaded here, so `init_resnet_seeded` gives a
deterministic stand-in whose activations stay in realistic ranges: Kaiming fan-out convs like
torchvision, then BatchNorm running statistics calibrated on deterministic photo-like images, so
BN outputs have about unit variance in eval mode (neither dead nor saturated), also on real photos.
"""

from __future__ import annotations

import math

import torch
from torch import nn

RESNET50_LAYERS = (3, 4, 6, 3)
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225])
CALIBRATED_LOGIT_STD = 2.0
CALIBRATION_IMAGES = 4  # enough: BN outputs on unseen images stay within 0.85-1.2 std at 224


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, layers: tuple[int, int, int, int], num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        stages = []
        for index, (blocks, width) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
            stride = 1 if index == 0 else 2
            stage = [Bottleneck(channels, width, stride)]
            channels = width * Bottleneck.expansion
            stage += [Bottleneck(channels, width) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet-50 with torchvision's module names; input (N, 3, H, W) normalized RGB, output logits."""
    return ResNet(RESNET50_LAYERS, num_classes)


def init_resnet_seeded(model: ResNet, seed: int = 0, calibration_size: int = 224) -> ResNet:
    """Deterministic stand-in weights for `model` (in place; returned, in eval mode).

    Uses its own generator, so the global RNG neither influences nor sees it. BN affine parameters
    get a small random spread around identity (so a conversion that drops gamma or beta shows up);
    running statistics are then calibrated on ImageNet-normalized `dead_leaves_images` of side
    `calibration_size`, and `fc` is rescaled so that the logits over them are centred, with a
    spread like a trained classifier's.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(
                    module.weight, mode="fan_out", nonlinearity="relu", generator=generator
                )
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.uniform_(module.weight, 0.8, 1.2, generator=generator)
                nn.init.normal_(module.bias, 0.0, 0.1, generator=generator)
            elif isinstance(module, nn.Linear):
                # torch's default Linear init, drawn from our generator
                bound = 1.0 / math.sqrt(module.in_features)
                nn.init.uniform_(module.weight, -bound, bound, generator=generator)
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
    rgb = dead_leaves_images((CALIBRATION_IMAGES, 3, calibration_size, calibration_size), generator)
    images = (rgb - IMAGENET_MEAN.view(1, 3, 1, 1)) / IMAGENET_STD.view(1, 3, 1, 1)
    calibrate_batchnorm(model, images)
    _calibrate_classifier(model, images)
    return model.eval()


def _calibrate_classifier(model: ResNet, images: torch.Tensor) -> None:
    """Scale and shift `fc` so that over `images` each class's mean logit is zero and the logits
    vary with a standard deviation of `CALIBRATED_LOGIT_STD`.

    The pooled post-ReLU features share a large positive component; with random fc weights it would
    pick the same class for every image, and an argmax check would then prove little. The scale
    keeps top-1 margins of a trained classifier's order, well above fp16 rounding.
    """
    features: list[torch.Tensor] = []
    handle = model.fc.register_forward_hook(lambda module, args, output: features.append(args[0]))
    with torch.no_grad():
        model(images)
        handle.remove()
        logits = features[0] @ model.fc.weight.T
        mean = logits.mean(dim=0)
        scale = CALIBRATED_LOGIT_STD / (logits - mean).std()
        model.fc.weight *= scale
        model.fc.bias.copy_(-scale * mean)


def dead_leaves_images(
    shape: tuple[int, int, int, int], generator: torch.Generator, discs: int = 400
) -> torch.Tensor:
    """Photo-like random images in [0, 1]: the 'dead leaves' model of occluding flat-coloured discs.

    Its scale-invariant disc sizes (density ~ 1/r^3) give natural images' sharp edges, flat regions
    and power-law spectrum. Noise lacks the edges, and BN statistics calibrated on noise leave deep
    activations on real photos several times too large.
    """
    batch, channels, height, width = shape
    side = max(height, width)
    r_min, r_max = 0.02 * side, 0.25 * side
    images = torch.rand(batch, channels, 1, 1, generator=generator).expand(shape).contiguous()
    draws = torch.rand(batch, discs, 3 + channels, generator=generator)
    for image, image_draws in zip(images, draws, strict=True):
        for x_frac, y_frac, u, *colour in image_draws.tolist():
            cx, cy = x_frac * width, y_frac * height
            radius = (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5  # inverse CDF of the 1/r^3 density
            x0, x1 = max(int(cx - radius), 0), min(int(cx + radius) + 1, width)
            y0, y1 = max(int(cy - radius), 0), min(int(cy + radius) + 1, height)
            xs = torch.arange(x0, x1, dtype=torch.float32) + 0.5 - cx
            ys = torch.arange(y0, y1, dtype=torch.float32) + 0.5 - cy
            inside = ys[:, None] ** 2 + xs[None, :] ** 2 <= radius**2
            crop = image[:, y0:y1, x0:x1]
            crop.copy_(torch.where(inside, torch.tensor(colour).view(-1, 1, 1), crop))
    return images


def calibrate_batchnorm(model: nn.Module, images: torch.Tensor) -> None:
    """Set every BN's running statistics to the batch statistics it sees on `images`.

    One train-mode pass normalizes each layer with its own batch statistics, so each BN sees the
    input it will see in eval mode once all earlier BNs use their calibrated statistics.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
    model.train()
    with torch.no_grad():
        model(images)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.eval()
