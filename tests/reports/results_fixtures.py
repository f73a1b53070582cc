"""results.json contents for report tests: the saved YOLOv5 run and runs built here from synthetic outputs.

The synthetic runs go through the real comparison, cross-match, heatmap and verdict code, so they
have exactly the shape the pipeline writes.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

from harness.comparison import compare_runs, default_pairs
from harness.crossmatch import cross_match
from harness.heatmap import ErrorHeatmap
from harness.pipeline import STAGES
from harness.verdict import verdict_for
from models.recipe import Tolerance

YOLOV5_RESULTS = Path(__file__).parents[1] / "fixtures" / "results_yolov5.json"
# Stages of real runs, trimmed by tests/fixtures/make_report_sections.py
SECTIONS_RESULTS = Path(__file__).parents[1] / "fixtures" / "results_sections.json"
INJECTED_NAME = "<img src=x onerror=alert(1)>"
INJECTED_REASON = "pass crashed: <script>alert('reason')</script> & more"
SPATIAL_OUTPUT = "depth"
# No space to break at: the page must wrap it rather than grow sideways.
LONG_NAME = (
    "model.heads.classification.final_projection.logits_before_softmax_for_all_eighty_coco_classes"
    ".after_temperature_scaling_and_label_smoothing_calibrated_on_the_validation_split"
)
BACKENDS = ("torch", "onnxrt", "tensorrt")
DISPLAY = {"torch": "Torch", "onnxrt": "ORT", "tensorrt": "TensorRT"}


def yolov5_results() -> dict[str, Any]:
    return json.loads(YOLOV5_RESULTS.read_text())


def _with_stages(results: dict[str, Any], stages: list[dict[str, Any]]) -> dict[str, Any]:
    """`results` with `stages` in place of those of the same name (or added), in pipeline order."""
    by_name = {s["name"]: s for s in results["stages"]}
    by_name.update({s["name"]: copy.deepcopy(s) for s in stages})
    results["stages"] = [by_name[stage.name] for stage in STAGES if stage.name in by_name]
    return results


def precision_results() -> dict[str, Any]:
    """The saved YOLOv5 results with the scan-to-build stages of a real `yolov5 --precision fp32 fp16 int8`
    run: FP16 and INT8 variants, the FP16 range check (nothing flagged) and an engine per precision."""
    sections = json.loads(SECTIONS_RESULTS.read_text())
    return _with_stages(yolov5_results(), sections["precision_run"]["stages"])


def scan_results() -> dict[str, Any]:
    """The saved YOLOv5 results with the scan and export stages of a real MVS run (findings at 26 call
    sites, every one replaced or kept by the recipe's replacements) and its skipped precision stage."""
    sections = json.loads(SECTIONS_RESULTS.read_text())
    return _with_stages(yolov5_results(), sections["scan_run"]["stages"])


def _synthetic_outputs(samples: int, seed: int = 0) -> list[dict[str, dict[str, np.ndarray]]]:
    """Per sample {backend: {output: array}}: logits (a long name), a depth map and an output with a hostile name.

    ORT is close to Torch on every output; TensorRT has a hot spot of error in the depth map, and
    returns logits and the hostile-name output swapped (same shape: an ordering mismatch).
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(samples):
        logits = rng.normal(size=(2, 10)).astype(np.float32)
        hostile = rng.normal(size=(2, 10)).astype(np.float32)
        depth = rng.uniform(1, 10, size=(1, 1, 48, 80)).astype(np.float32)
        ort_depth = depth + rng.normal(scale=1e-6, size=depth.shape).astype(np.float32)
        trt_depth = ort_depth.copy()
        trt_depth[..., 10:20, 50:70] += rng.normal(scale=3e-3, size=(1, 1, 10, 20)).astype(np.float32)
        torch_outputs = {LONG_NAME: logits, SPATIAL_OUTPUT: depth, INJECTED_NAME: hostile}
        ort_outputs = {
            LONG_NAME: logits + np.float32(1e-7),
            SPATIAL_OUTPUT: ort_depth,
            INJECTED_NAME: hostile + np.float32(1e-7),
        }
        trt_outputs = {LONG_NAME: hostile, SPATIAL_OUTPUT: trt_depth, INJECTED_NAME: logits}
        out.append({"torch": torch_outputs, "onnxrt": ort_outputs, "tensorrt": trt_outputs})
    return out


def multi_output_results(samples: int = 3) -> dict[str, Any]:
    """A three-backend run of three outputs: a spatial one with heatmaps, a failure, an ordering mismatch."""
    base = yolov5_results()
    outputs = _synthetic_outputs(samples)
    output_names = list(outputs[0]["torch"])
    tolerance = Tolerance(atol=1e-4, rtol=1e-3)
    pairs = default_pairs(BACKENDS)
    report = compare_runs(
        outputs, pairs=pairs, tolerance_for=lambda _name: tolerance, class_axes={LONG_NAME: 1}
    )
    crossmatch = [
        cross_match(outputs[0][r], outputs[0][c], ref_backend=r, cand_backend=c).to_json() for r, c in pairs
    ]
    heatmaps: dict[str, dict[str, Any]] = {SPATIAL_OUTPUT: {}}
    for ref, cand in pairs:
        heatmap = ErrorHeatmap((-2, -1), max_side=32)
        for sample in outputs:
            heatmap.update(sample[ref][SPATIAL_OUTPUT], sample[cand][SPATIAL_OUTPUT])
        heatmaps[SPATIAL_OUTPUT][f"{ref}-{cand}"] = heatmap.to_json()

    results = copy.deepcopy(base)
    results["recipe"].update(
        name="multi-head",
        description="Synthetic three-output model: classifier logits, a depth map and a hostile output name",
        params={"heads": 3},
        inputs=[{"name": "image", "shape": ["batch", 3, 48, 80], "dtype": "float32"}],
        output_names=output_names,
        default_tolerance=tolerance.to_json(),
        class_axes={LONG_NAME: 1},
    )
    stages = {s["name"]: s for s in results["stages"]}
    export = stages["export"]["details"]
    export["inputs"], export["outputs"] = ["image"], output_names
    surgery = stages["surgery"]
    surgery["status"], surgery["reason"] = "skipped", INJECTED_REASON
    surgery["details"], surgery["artifacts"] = {}, {}
    build = stages["build"]["details"]
    build["network_io"] = {"inputs": ["image"], "outputs": [INJECTED_NAME, SPATIAL_OUTPUT, LONG_NAME]}
    build["profile"] = {"image": {"min": [1, 3, 48, 80], "opt": [1, 3, 48, 80], "max": [4, 3, 48, 80]}}
    io_orders = {
        "torch": output_names,
        "onnxrt": output_names,
        "tensorrt": [INJECTED_NAME, SPATIAL_OUTPUT, LONG_NAME],
    }
    stages["run"]["artifacts"]["outputs_tensorrt"] = {
        "path": "tensorrt_outputs.json",
        "sha256": "0" * 64,
        "size_bytes": stages["run"]["artifacts"]["outputs_onnxrt"]["size_bytes"],
    }
    stages["run"]["details"] = {
        "backends": {
            name: {
                "display_name": DISPLAY[name],
                "executed": True,
                "samples": samples,
                "io_order": {"inputs": ["image"], "outputs": io_orders[name]},
                "median_latency_s": 0.01 * (i + 1),
            }
            for i, name in enumerate(BACKENDS)
        },
        "samples": samples,
    }
    stages["compare"]["details"] = {
        **report.to_json(),
        "crossmatch": crossmatch,
        "tolerances": {name: tolerance.to_json() for name in output_names},
        "heatmaps": heatmaps,
    }
    results["verdict"] = verdict_for(results)
    return results


def failed_build_results() -> dict[str, Any]:
    """The YOLOv5 run as if TensorRT had refused the model: nothing after the build ran."""
    results = yolov5_results()
    for stage in results["stages"]:
        if stage["name"] == "build":
            stage.update(
                status="failed", reason=f"TensorRT could not parse node {INJECTED_NAME}", artifacts={}
            )
            stage["details"] = {
                "flavor": stage["details"]["flavor"],
                "phase": "parse",
                "messages": [f"unsupported op in node '{INJECTED_NAME}'"],
            }
        elif stage["name"] in ("run", "compare"):
            stage.update(status="skipped", reason="not run: stage 'build' failed", details={}, artifacts={})
    results["verdict"] = verdict_for(results)
    return results


INJECTED_TENSOR = "<script>alert('tensor')</script>"
INJECTED_LOCATION = "models/<script>alert('site')</script>.py:12 in forward"
INT8_REFUSAL = ["INT8 is not supported on this platform", "builder returned no engine for <int8>"]


def _stage(results: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in results["stages"] if s["name"] == name)


def flagged_precision_results() -> dict[str, Any]:
    """`precision_results` where the FP16 range check flagged two tensors (one with a hostile name) and
    put their nodes on the FP16 variant's block list, and the builder refused INT8."""
    from conversions.precision.range_check import TensorRange

    results = precision_results()
    precision = _stage(results, "precision")["details"]
    overflow = TensorRange(
        INJECTED_TENSOR, "node_mul_682", "Mul", ("node_cat_15",), 1.2e5, 9600, 9600, 0, 0, 0, ("overflow",)
    )
    underflow = TensorRange(
        "var_norm", "node_div_7", "Div", ("node_sqrt_8",), 3e-3, 4800, 4800, 2400, 480, 0, ("underflow",)
    )
    block_list = ["node_mul_682", "node_cat_15", "node_div_7", "node_sqrt_8"]
    ranges = precision["fp16_range"]
    ranges["flagged"] = [overflow.to_json(), underflow.to_json()]
    ranges["top"] = [overflow.to_json(), *ranges["top"][:-1]]
    ranges["block_list"] = block_list
    precision["variants"]["fp16"]["block_list"] = block_list
    build = _stage(results, "build")["details"]
    flavor = build["flavor"]
    # as harness.pipeline.build_stage records a later precision the builder refuses
    build["engines"]["int8"] = {
        "built": False,
        "phase": "engine build",
        "messages": INT8_REFUSAL,
        "reason": f"INT8 not supported by {flavor['name']} {flavor['version']}: "
        + "; ".join(INT8_REFUSAL[-3:]),
    }
    return results


def unfixed_scan_results() -> dict[str, Any]:
    """`scan_results` with a finding at a hostile location that no replacement fixes, and a requested
    replacement that saw no call during export."""
    results = scan_results()
    findings = _stage(results, "scan")["details"]["findings"]
    findings.append(
        {
            "op": "torch.linalg.det",
            "reason": "exports as ONNX Det, which TensorRT's ONNX parser does not support",
            "replacement": "no replacement known",
            "location": INJECTED_LOCATION,
            "count": 2,
            "fixed_by_recipe": False,
        }
    )
    _stage(results, "export")["details"]["unused_replacements"] = ["squeeze_static"]
    return results
