"""Seeded yolov5s weights with one planted INT8 outlier channel (the classic failure of trained nets):
channel 0 of MODULE's output scaled by K (BN gamma and beta), its consumer's weights for that input
channel divided by K, so FP32 computes nearly the same function but the consumer's input has one
channel K times wider than the rest, which a per-tensor INT8 scale cannot hold. Not a test: the weights for the yolov5 INT8 triage check,

    python tests/harness/plant_int8_outlier.py model.0 model.1 1000 stem_outlier.pt
    harness convert yolov5 -p image_size=320 --weights stem_outlier.pt --precision fp32 int8 \
        --backends torch onnxrt --atol 3e-3 --rtol 0.4 --localize
"""

import sys

import torch
from trt_harness.models.recipes import get_recipe

module, consumers, k, out = sys.argv[1], sys.argv[2].split(","), float(sys.argv[3]), sys.argv[4]
model = get_recipe("yolov5", image_size=320).build_model(None)
sd = {n: t.clone() for n, t in model.state_dict().items()}
g, b = sd[f"{module}.bn.weight"], sd[f"{module}.bn.bias"]
g[0] = g[0].abs() * k
b[0] = (b[0].abs() + 1.0) * k  # positive: SiLU is ~linear there, so the consumer's 1/K undoes it
for consumer in consumers:
    sd[f"{consumer}.conv.weight"][:, 0] /= k
torch.save(sd, out)
print("wrote", out)
