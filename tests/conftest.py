from __future__ import annotations

import os

# Polygraphy picks TensorRT or TensorRT for RTX at import time; select before any test imports it.
from trt_harness.conversions.tensorrt_flavor import select_flavor

select_flavor()
os.environ.setdefault("CI", "true")  # no live progress display inside pytest
