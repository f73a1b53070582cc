"""ResNet-50 (torchvision-compatible state_dict), 224x224 photos, dynamic batch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from trt_harness.models.recipe import Recipe, ShapeRange, TensorSpec, Tolerance
from trt_harness.models.recipes import register_recipe

if TYPE_CHECKING:
    import torch

SEED = 0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_resnet50(weights: Path | None) -> torch.nn.Module:
    # architectures import torch: the recipe module stays light for `harness list`
    from trt_harness.models.architectures.resnet import init_resnet_seeded, resnet50
    from trt_harness.models.weights import weighted

    return weighted(resnet50(), weights, lambda model: init_resnet_seeded(model, SEED))


@register_recipe
def resnet50(image_size: int = 224, batch: int = 1, max_batch: int = 8) -> Recipe:
    from trt_harness.models.photos import center_cropped_batches

    return Recipe(
        name="resnet50",
        weights_source=f"seeded random initialisation (seed {SEED})",
        description="ResNet-50 classifier (torchvision state_dict keys), centre-cropped photos",
        build_model=build_resnet50,
        sample_inputs=lambda: [
            {"images": b} for b in center_cropped_batches(image_size, IMAGENET_MEAN, IMAGENET_STD, batch)
        ],
        inputs=(TensorSpec("images", ("batch", 3, image_size, image_size)),),
        output_names=("logits",),
        shape_ranges={
            "images": ShapeRange(
                (1, 3, image_size, image_size),
                (batch, 3, image_size, image_size),
                (max_batch, 3, image_size, image_size),
            )
        },
        # 53 convolutions in FP32: reordered sums move logits (spread ~2) by ~1e-5; top-1 must not change
        default_tolerance=Tolerance(atol=1e-3, rtol=1e-3, min_argmax_agreement=1.0),
        # FP16 on ORT, measured on the 4 photos: p99 |logit error| 0.30 (max 0.47) on logits spread ~2-3, top-1
        # unchanged. INT8 has no tolerance here on purpose: the seeded net keeps its top-1 on only 2 of 4
        # photos, so `--precision int8` fails against the FP32 tolerance until real weights are given.
        precision_tolerances={
            "fp16": Tolerance(atol=0.75, rtol=0.0, check="quantile", quantile=0.99, min_argmax_agreement=1.0)
        },
        class_axes={"logits": 1},
    )
