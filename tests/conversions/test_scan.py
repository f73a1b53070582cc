"""Op scanner: finds every known problem op with its fix and place, and nothing in a plain CNN."""

from __future__ import annotations

import json
import re
from pathlib import Path

import einops
import einops.layers.torch
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from trt_harness.conversions.replacements import replacement_names
from trt_harness.conversions.replacements._patching import resolve
from trt_harness.conversions.scan import PROBLEM_OPS, Finding, scan_module
from trt_harness.models.core.errors import UsageError
from trt_harness.models.core.serde import from_json, to_json

SOURCE = Path(__file__).read_text().splitlines()


def _line(marker: str) -> int:
    return next(i for i, text in enumerate(SOURCE, 1) if text.endswith(f"# {marker}"))


class Problems(nn.Module):
    """Every problem op the table knows, called the ways models call them."""

    def __init__(self) -> None:
        super().__init__()
        self.reflect = nn.ReflectionPad2d(1)
        self.resize = nn.Upsample(size=(16, 16))
        self.tokens = einops.layers.torch.Rearrange("b c h w -> b (h w) c")

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        grid = torch.rand(images.shape[0], 4, 4, 2) * 2 - 1
        sampled = F.grid_sample(images, grid, align_corners=False)  # grid_sample
        bicubic = F.grid_sample(images, grid, mode="bicubic", align_corners=False)  # bicubic
        gram = torch.einsum("bchw,bdhw->bcd", images, images)  # einsum
        small = torch.linalg.inv(torch.eye(3) + gram[:, :3, :3] * 0.01)  # inverse
        large = torch.inverse(torch.eye(6))  # inverse 6x6
        padded = self.reflect(images)  # pad
        zero_padded = F.pad(images, (1, 1))  # harmless: constant zero padding
        squeezed = images.mean((2, 3), keepdim=True).squeeze(-1)  # squeeze
        resized = self.resize(images)  # interpolate size
        smooth = F.interpolate(images, scale_factor=0.5, mode="bilinear", antialias=True)  # antialias
        tokens = self.tokens(images) + einops.rearrange(images, "b c h w -> b (h w) c")  # einops
        determinant = torch.linalg.det(small)  # det
        values = torch.unique(images.round())  # unique
        spectrum = torch.fft.rfft(images).abs()  # fft
        outputs = (sampled, bicubic, small, large, padded, zero_padded, squeezed, resized, smooth, tokens)
        return (*outputs, determinant, values, spectrum)


EXPECTED = {  # marker -> (op, fix)
    "grid_sample": ("torch.nn.functional.grid_sample", "grid_sample"),
    "bicubic": ("torch.nn.functional.grid_sample", None),
    "einsum": ("torch.einsum", "einsum"),
    "inverse": ("torch.linalg.inv", "inverse"),
    "inverse 6x6": ("torch.linalg.inv", None),
    "pad": ("torch.nn.functional.pad", "pad"),
    "squeeze": ("torch.squeeze", "squeeze_static"),
    "interpolate size": ("torch.nn.functional.interpolate(size=...)", "interpolate_size"),
    "antialias": ("torch.nn.functional.interpolate(antialias=True)", None),
    "einops": ("einops.rearrange/repeat", "einops"),
    "det": ("torch.linalg.det", None),
    "unique": ("torch.unique", None),
    "fft": ("torch.fft", None),
}


def _by_line(findings: list[Finding]) -> dict[int, set[tuple[str, str | None]]]:
    found: dict[int, set[tuple[str, str | None]]] = {}
    for finding in findings:
        match = re.fullmatch(r".*test_scan\.py:(\d+) in forward", finding.location)
        assert match, finding.location
        found.setdefault(int(match[1]), set()).add((finding.op, finding.replacement))
    return found


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_every_problem_op_is_found_with_its_fix_at_its_line(exporter: str) -> None:
    findings = scan_module(Problems().eval(), (torch.randn(2, 3, 8, 8),), exporter)
    expected = {
        _line(marker): {fix}
        for marker, fix in EXPECTED.items()
        if not (marker == "squeeze" and exporter == "dynamo")  # the If comes from TorchScript only
    }
    assert _by_line(findings) == expected
    assert all(f.count == 1 for f in findings if f.op != "einops.rearrange/repeat")


def test_findings_without_a_fix_say_why_the_replacement_does_not_cover_them() -> None:
    findings = scan_module(Problems().eval(), (torch.randn(2, 3, 8, 8),), "torchscript")
    reasons = {f.location.rsplit(":", 1)[1]: f.reason for f in findings if f.replacement is None}
    assert "mode='bicubic'" in reasons[f"{_line('bicubic')} in forward"]
    assert "6x6" in reasons[f"{_line('inverse 6x6')} in forward"]
    assert "TensorRT" in reasons[f"{_line('det')} in forward"]


def test_findings_are_json_and_count_repeated_calls() -> None:
    class Repeated(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for _ in range(3):
                x = torch.einsum("ij,jk->ik", x, x)  # repeated
            return x

    [finding] = scan_module(Repeated(), (torch.randn(2, 2),), "dynamo")
    assert finding.count == 3 and finding.location.endswith(f":{_line('repeated')} in forward")
    as_json = json.loads(json.dumps(to_json(finding)))
    assert as_json == {
        "op": "torch.einsum",
        "reason": finding.reason,
        "replacement": "einsum",
        "location": finding.location,
        "count": 3,
        "fixed_by_recipe": False,
    }
    unknown = Finding("torch.unique", "why", None, "here", 1)
    assert from_json(Finding, json.loads(json.dumps(to_json(unknown)))) == unknown


class Plain(nn.Module):
    """conv / BN / SiLU / upsample / concat: nothing for either exporter to trip over."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU())
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.stem(images)
        return self.head(torch.cat([self.up(features), self.up(features)], dim=1))


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_plain_cnn_has_no_findings(exporter: str) -> None:
    assert scan_module(Plain().eval(), (torch.randn(1, 3, 8, 8),), exporter) == []


def test_the_scan_leaves_no_patch_behind() -> None:
    before = (einops.rearrange, einops.layers.torch.Rearrange.forward)
    scan_module(Problems().eval(), (torch.randn(1, 3, 8, 8),), "dynamo")
    assert (einops.rearrange, einops.layers.torch.Rearrange.forward) == before


def test_unknown_exporter_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="tensorrt"):
        scan_module(Plain(), (torch.randn(1, 3, 8, 8),), "tensorrt")  # type: ignore[arg-type]


def test_the_table_names_registered_fixes_and_real_callables() -> None:
    # the torchvision entries resolve only once torchvision imports (its C++ ops may need the CPU shim)
    from trt_harness.models.architectures.torchvision_ops import import_torchvision

    import_torchvision()
    for problem in PROBLEM_OPS:
        assert problem.replacement is None or problem.replacement in replacement_names()
        assert problem.reason and problem.exporters
        for path in problem.functions:
            assert resolve(path) is not None, path
