"""applied(): registry, patching and restoring (also on error), aliases, error surfacing, and one dynamo export."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import types
from pathlib import Path

import einops
import pytest
import torch
import torch.nn.functional as F
from trt_harness.conversions.replacements import (
    ReplacementUnsupported,
    applied,
    get_replacement,
    register_replacement,
    replacement_names,
)
from trt_harness.conversions.replacements import _registry as registry
from trt_harness.conversions.replacements._patching import resolve
from trt_harness.models.architectures.torchvision_ops import import_torchvision
from trt_harness.models.core.errors import HarnessError, UsageError
from trt_harness.models.core.serde import to_json

from tests.conversions.test_replace_support import assert_runs_like_torch, export_onnx, op_types

NAMES = [
    "einops",
    "einsum",
    "grid_sample",
    "interpolate_size",
    "inverse",
    "pad",
    "squeeze_static",
    "tv_fcos_postprocess",
    "tv_rcnn_postprocess",
    "tv_retinanet_postprocess",
    "tv_ssd_postprocess",
]
# the ones a plain model's ops can hit (the detectors' are exercised in test_replace_tv_detectors.py
# and test_replace_tv_fcos_ssd.py)
OP_NAMES = [name for name in NAMES if not name.startswith("tv_")]


def _current_targets() -> dict[str, object]:
    import_torchvision()  # as the retinanet recipe does before export: its targets live in torchvision
    targets = {t for name in NAMES for t in get_replacement(name).targets}
    return {target: getattr(*resolve(target)) for target in targets}


def test_registry_holds_the_built_in_replacements() -> None:
    assert replacement_names() == NAMES
    for name in NAMES:
        described = get_replacement(name)
        assert described.name == name and described.targets and described.summary


def test_unknown_name_is_a_usage_error_listing_the_known_names() -> None:
    with pytest.raises(UsageError) as raised, applied(["pad", "grid_sampel"]):
        pass
    assert "grid_sampel" in str(raised.value)
    assert all(name in str(raised.value) for name in NAMES)


def test_a_single_string_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="list of names"), applied("pad"):
        pass


def test_originals_come_back_after_the_block_and_after_an_error() -> None:
    originals = _current_targets()
    with applied(NAMES):
        patched = _current_targets()
        assert all(patched[t] is not originals[t] for t in originals)
    assert _current_targets() == originals

    with pytest.raises(ZeroDivisionError), applied(NAMES):
        _ = 1 / 0
    assert _current_targets() == originals
    assert "squeeze" not in torch.Tensor.__dict__ and "inverse" not in torch.Tensor.__dict__


def test_names_bound_by_from_import_are_swapped_and_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    model_module = types.ModuleType("a_model_module")  # as if it ran `from einops import rearrange`, ...
    model_module.rearrange = einops.rearrange
    model_module.grid_sample = F.grid_sample
    model_module.einsum = torch.einsum
    monkeypatch.setitem(sys.modules, model_module.__name__, model_module)
    original_rearrange = einops.rearrange
    with applied(["einops", "grid_sample", "einsum"]) as record:
        assert model_module.rearrange is not original_rearrange
        model_module.rearrange(torch.randn(2, 3), "a b -> b a")
        model_module.einsum("ij->ji", torch.randn(2, 3))
    assert {c.replacement for c in record.calls} == {"einops", "einsum"}
    assert model_module.rearrange is einops.rearrange
    assert model_module.grid_sample is F.grid_sample and model_module.einsum is torch.einsum


def _run_as_if_from(path: str, code: str, namespace: dict) -> None:
    exec(compile(code, path, "exec"), namespace)


def test_calls_from_torch_internals_reach_the_original() -> None:
    torch_dir = os.path.dirname(os.path.realpath(torch.__file__))
    namespace = {"F": F, "x": torch.randn(1, 2, 4, 4)}
    code = "F.pad(x, (1, 1, 1, 1), mode='reflect')"
    with applied(["pad"]) as record:
        _run_as_if_from(os.path.join(torch_dir, "_decomp", "a_decomposition.py"), code, namespace)
        assert record.calls == []  # torch's own machinery keeps the real op
        _run_as_if_from(os.path.join(torch_dir, "nn", "modules", "a_module.py"), code, namespace)
    assert [c.action for c in record.calls] == ["replaced"]  # torch.nn calls on the model's behalf


def test_a_refusal_the_exporter_swallowed_is_raised_at_the_end() -> None:
    # suppress() plays an exporter that catches the error and retries another way
    with (
        pytest.raises(ReplacementUnsupported, match="mode='bicubic'"),
        applied(["grid_sample"]),
        contextlib.suppress(HarnessError),
    ):
        F.grid_sample(torch.randn(1, 1, 3, 3), torch.rand(1, 2, 2, 2), mode="bicubic", align_corners=False)


def test_a_refusal_wrapped_by_the_exporter_reaches_the_caller() -> None:
    with pytest.raises(ReplacementUnsupported, match="mode='bicubic'") as raised, applied(["grid_sample"]):
        try:
            F.grid_sample(
                torch.randn(1, 1, 3, 3), torch.rand(1, 2, 2, 2), mode="bicubic", align_corners=False
            )
        except HarnessError as error:
            raise RuntimeError("the exporter failed") from error
    assert isinstance(raised.value.__cause__, RuntimeError)


def test_static_dims_are_validated_and_recorded() -> None:
    with applied(["pad"], {"images": {0: 1, 2: 224}}) as record:
        pass
    assert record.static_dims == {"images": {0: 1, 2: 224}}
    with pytest.raises(UsageError, match="static_dims"), applied(["pad"], {"images": {0: 0}}):
        pass


def test_the_record_says_what_was_rewritten_where() -> None:
    values = torch.randn(1, 1, 4, 4)
    with applied(["pad", "interpolate_size"]) as record:
        for _ in range(3):
            F.pad(values, (1, 1, 1, 1), mode="replicate")  # pad-line
        F.interpolate(values, size=(6, 6))
    calls = json.loads(json.dumps(to_json(record.calls)))
    source = Path(__file__).read_text().splitlines()
    pad_line = next(i for i, line in enumerate(source, 1) if line.endswith("# pad-line"))
    assert calls[0] == {
        "replacement": "pad",
        "location": f"{os.path.relpath(__file__)}:{pad_line} in test_the_record_says_what_was_rewritten_where",
        "action": "replaced",
        "detail": "",
        "count": 3,
    }
    assert calls[1]["action"] == "kept original" and "not an integer multiple" in calls[1]["detail"]


def test_targets_of_packages_that_are_not_installed_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    replacement_names()  # load the real ones first
    register_replacement("absent", targets=("a_package_not_installed.f",), summary="test")(lambda context: {})
    try:
        with applied(["absent"]) as record:
            pass
    finally:
        registry.REPLACEMENTS.unregister("absent")
    assert "absent" not in replacement_names()
    assert record.unavailable_targets == ["a_package_not_installed.f"]


class Everything(torch.nn.Module):
    """Every replacement in one model; images have dynamic batch, height and width."""

    def forward(self, images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        sampled = F.grid_sample(images, grid, align_corners=False)  # (b, c, 4, 4) from any image size
        padded = F.pad(sampled, (1, 1, 1, 1), mode="reflect")  # (b, c, 6, 6)
        upscaled = F.interpolate(padded, size=(12, 12), mode="nearest")  # 2x
        split = einops.rearrange(upscaled, "b c (h p) w -> b (c p) h w", p=2)
        gram = torch.einsum("bchw,bdhw->bcd", split, split)[:, :3, :3] + 50 * torch.eye(3)
        inverse = torch.linalg.inv(gram)
        rows = inverse.reshape(inverse.shape[0], -1, 1).squeeze(2)  # (b, 9)
        energy = torch.einsum("bchw,bchw->bc", images, images)  # contracts the dynamic dims
        return rows.sum(1, keepdim=True) + einops.reduce(energy, "b c -> b 1", "sum") * 1e-3


def test_all_replacements_in_one_dynamo_export() -> None:
    model = Everything()
    args = (torch.randn(2, 3, 5, 6), torch.rand(2, 4, 4, 2) * 2 - 1)
    replaced, record = export_onnx(model, args, "dynamo", [[0, 2, 3], [0]], OP_NAMES)
    assert not op_types(replaced) & {"GridSample", "Einsum", "Pad", "If"}
    assert {(c.replacement, c.action) for c in record.calls} == {(name, "replaced") for name in OP_NAMES}
    assert_runs_like_torch(replaced, model, (torch.randn(3, 3, 7, 4), torch.rand(3, 4, 4, 2) * 2 - 1), 1e-4)
