"""Outputs of any nesting (issue 16.1): flattened in the exporters' pytree order on every backend, named
by their key paths (`0.boxes`) unless the recipe names them; a list of dicts converts end to end."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
from trt_harness.conversions.outputs import derived_output_names, flatten_outputs, name_outputs
from trt_harness.harness.pipeline import RunConfig, run_pipeline
from trt_harness.models.core.errors import ExitCode, HarnessError
from trt_harness.models.recipe import DetectionSpec, ExportOptions, Recipe, TensorSpec
from trt_harness.models.results.stages import CompareDetails, ExportDetails

IMAGES = 2  # a list of one dict per image: the export unrolls the loop, so the batch is static
SIDE = 16


def detector():
    """A seeded toy post-processed detector: per image a dict (keys deliberately unsorted) of
    3 boxes, scores and labels, plus a nested tuple, as torchvision detectors return lists of dicts."""
    import torch

    class Detector(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 12, 3, padding=1)

        def forward(self, images: torch.Tensor):
            features = self.conv(images).mean(dim=(2, 3))  # (N, 12)
            per_image = []
            for i in range(images.shape[0]):
                f = features[i]
                xy = torch.sigmoid(f[:6].reshape(3, 2)) * SIDE / 2
                wh = torch.sigmoid(f[6:12].reshape(3, 2)) * SIDE / 2 + 2
                per_image.append(
                    {
                        "scores": torch.sigmoid(f[:3] * 4) * 0.9 + 0.05,
                        "boxes": torch.cat([xy, xy + wh], dim=1),
                        # class ids 1..4: an all-zero labels tensor would be "no signal"
                        "labels": (f[3:6] > 0).long() + torch.arange(1, 4),
                    }
                )
            return per_image

    torch.manual_seed(0)
    return Detector().eval()


def detector_recipe(
    output_names: tuple[str, ...] = (), detection: DetectionSpec | None = None, images: int = IMAGES, **kw
) -> Recipe:
    rng = np.random.default_rng(0)
    samples = [{"images": rng.random((images, 3, SIDE, SIDE), dtype=np.float32)} for _ in range(2)]
    return Recipe(
        name="list_of_dicts_" + ("named" if output_names else "derived"),
        description="a list of dicts per image",
        build_model=lambda weights: detector(),
        sample_inputs=lambda: samples,
        inputs=(TensorSpec("images", (images, 3, SIDE, SIDE)),),
        output_names=output_names,
        export=ExportOptions(exporter=kw.pop("exporter", "dynamo"), opset=18),
        detection=detection,
        **kw,
    )


# --- the flattening is the exporters' ------------------------------------------------------------


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_flatten_order_is_the_order_a_real_export_gives_its_outputs(tmp_path: Path, dynamo: bool) -> None:
    """Export the nested model itself (no wrapper) and check the graph's outputs position by position."""
    import onnxruntime
    import torch

    class Nested(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.detector = detector()

        def forward(self, x: torch.Tensor):
            return self.detector(x), (x.sum(), {"z": x[:, 0, 0, 0], "a": x[:, 1, 0, 0] * 2})

    model = Nested().eval()
    x = torch.rand(IMAGES, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        leaves = flatten_outputs(model(x))
    path = tmp_path / "nested.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=dynamo, opset_version=18)
    session = onnxruntime.InferenceSession(str(path))
    values = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert len(values) == len(leaves) == 3 * IMAGES + 3
    for value, (name, leaf) in zip(values, leaves, strict=True):
        np.testing.assert_allclose(value, leaf.numpy(), atol=1e-5, err_msg=name)
    assert [name for name, _ in leaves] == [
        *(f"0.{i}.{key}" for i in range(IMAGES) for key in ("scores", "boxes", "labels")),
        "1.0",
        "1.1.z",
        "1.1.a",
    ]


def test_derived_names_follow_the_structure() -> None:
    import torch

    t = torch.zeros(1)
    Pair = collections.namedtuple("Pair", ["logits", "aux"])
    assert derived_output_names(t) == ("output",)
    assert derived_output_names((t, t)) == ("0", "1")
    assert derived_output_names({"b": t, "a": [t, {"c": t}]}) == ("b", "a.0", "a.1.c")
    assert derived_output_names([{"boxes": t, "scores": t}, {"boxes": t, "scores": t}]) == (
        "0.boxes",
        "0.scores",
        "1.boxes",
        "1.scores",
    )
    assert derived_output_names(Pair(t, t)) == ("logits", "aux")
    assert derived_output_names((t, None, 3, t)) == ("0", "3"), "non-tensor leaves are not outputs"


def test_recipe_names_label_by_position_or_by_key_where_they_are_the_keys() -> None:
    import torch

    boxes, scores, labels = torch.ones(3, 4), torch.full((3,), 0.5), torch.zeros(3, dtype=torch.long)
    one_image = [{"boxes": boxes, "labels": labels, "scores": scores}]
    # the keys of a one-image list, in another order: each keeps its true tensor
    named = name_outputs(one_image, ("boxes", "scores", "labels"))
    assert list(named) == ["boxes", "labels", "scores"]
    assert named["scores"] is scores and named["labels"] is labels
    # other names: labelled in the returned order
    positional = name_outputs(one_image, ("b", "l", "s"))
    assert positional["l"] is labels and positional["s"] is scores
    # two images have each key twice: only names per tensor, or none, can label them
    with pytest.raises(HarnessError, match=r"returned 6 outputs \(0\.boxes, 0\.labels"):
        name_outputs(one_image * 2, ("boxes", "labels", "scores"))


# --- through the pipeline ------------------------------------------------------------------------


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_a_list_of_dicts_converts_with_derived_names_on_every_backend(tmp_path: Path, exporter: str) -> None:
    spec = DetectionSpec(output="boxes", layout="postprocessed", conf_thres=0.0)
    results = run_pipeline(
        RunConfig(detector_recipe(detection=spec, exporter=exporter), tmp_path, backends=("torch", "onnxrt"))
    )
    assert results.verdict.exit_code == ExitCode.PASSED, results.verdict
    export = results.details(ExportDetails)
    expected = tuple(f"{i}.{key}" for i in range(IMAGES) for key in ("scores", "boxes", "labels"))
    assert export is not None and export.outputs == expected
    compare = results.details(CompareDetails)
    assert compare is not None
    assert not compare.comparisons, "boxes, scores and labels are compared as sets, not by position"
    detections = compare.detections
    assert detections is not None and detections.images == 2 * IMAGES  # 2 samples of 2 images
    assert all(len(dets) == 3 for dets in detections.runners["torch"] if dets is not None)
    assert (
        detections.passed and results.verdict.summary == "detections agree on 4 image(s) for 1 gated pair(s)"
    )
    for pair in detections.pairs:
        for image in pair.images:
            assert image.match is not None and image.match.max_box_delta is not None
            assert image.match.max_box_delta < 1e-3


def test_a_list_of_dicts_named_by_the_recipe_converts(tmp_path: Path) -> None:
    names = tuple(f"{key}_{i}" for i in range(IMAGES) for key in ("scores", "boxes", "labels"))
    results = run_pipeline(RunConfig(detector_recipe(names), tmp_path, backends=("torch", "onnxrt")))
    assert results.verdict.exit_code == ExitCode.PASSED, results.verdict
    export = results.details(ExportDetails)
    assert export is not None and export.outputs == names


@pytest.mark.parametrize(
    ("names", "exit_code"),
    [
        (("scores", "boxes", "labels"), ExitCode.PASSED),
        (("boxes", "scores", "labels"), ExitCode.ORDERING_MISMATCH),
    ],
    ids=["dict-order", "another-order"],
)
def test_a_one_image_list_named_by_its_keys(
    tmp_path: Path, names: tuple[str, ...], exit_code: ExitCode
) -> None:
    """torchvision's case: the recipe names the dict's keys. Torch keeps each key's tensor, the export
    labels by position, so keys listed out of the returned order are an ordering mismatch, not a pass."""
    spec = DetectionSpec(output="boxes", layout="postprocessed", conf_thres=0.0)
    recipe = detector_recipe(names, detection=spec, images=1, exporter="torchscript")
    results = run_pipeline(RunConfig(recipe, tmp_path, backends=("torch", "onnxrt")))
    assert results.verdict.exit_code == exit_code, results.verdict
    if exit_code == ExitCode.ORDERING_MISMATCH:
        assert "ordering mismatch" in results.verdict.summary
