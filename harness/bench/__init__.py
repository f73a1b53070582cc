"""`python -m trt_harness.harness.bench`: how fast the harness is, and how it scales.

One module per benchmark, each registered with `@register_benchmark` (see `base.py`):
`pipeline_time` (cold/warm/tolerance-change `harness convert`), `latency` (Torch eager vs ONNX
Runtime), `throughput` (our comparison vs Polygraphy's) and `memory` (peak RSS of few vs many
samples). `suite` runs them and writes `bench.json` and `bench.md`.
"""
