"""The README's worked example, tests/fixtures/text_encoder_recipe.py, converted as a user would:
`harness convert tests/fixtures/text_encoder_recipe.py` (a file outside the package)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from trt_harness.harness.cli import main
from trt_harness.models.core.errors import ExitCode
from trt_harness.models.recipes import get_recipe

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "tests" / "fixtures" / "text_encoder_recipe.py"


@pytest.fixture(autouse=True)
def _restore_sys_path():
    saved = list(sys.path)
    yield
    sys.path[:] = saved


@pytest.mark.slow
def test_the_worked_example_converts_end_to_end_with_shared_int64_dims_and_a_dict_output(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["convert", str(EXAMPLE), "--out", str(run), "--no-cache", "--backends", "torch", "onnxrt"])
    assert code == ExitCode.PASSED, capsys.readouterr()
    graph = onnx.load(run / "model.final.onnx").graph
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input}
    assert shapes == {"input_ids": ["batch", "seq"], "attention_mask": ["batch", "seq"]}  # one dim each
    assert {v.type.tensor_type.elem_type for v in graph.input} == {onnx.TensorProto.INT64}
    assert [v.name for v in graph.output] == ["last_hidden_state", "pooled", "logits"]
    results = json.loads((run / "results.json").read_text())
    assert results["recipe"]["origin"]["kind"] == "file"
    compare = next(s for s in results["stages"] if s["name"] == "compare")["details"]
    compared = {(c["output"], c["sample_set"]) for c in compare["comparisons"]}
    assert {o for o, _ in compared} == {"last_hidden_state", "pooled", "logits"}
    assert {"samples", "batch1", "batch4"} <= {s for _, s in compared}  # the profile's rows too


def test_the_examples_inputs_stay_in_the_vocabulary_and_its_weights_come_from_weights(tmp_path):
    recipe = get_recipe(str(EXAMPLE), samples=2)
    feeds = recipe.sample_inputs()
    assert len(feeds) == 2 and all(f["input_ids"].dtype == np.int64 for f in feeds)
    assert all((f["input_ids"] >= 0).all() and (f["input_ids"] < 100).all() for f in feeds)
    made = recipe.make_input("input_ids", (4, 16), np.random.default_rng(0))
    assert made.shape == (4, 16) and made.dtype == np.int64 and made.max() < 100
    import torch  # heavy: this test builds the model

    model = recipe.build_model(None)
    state = {k: v + 1.0 for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "w.pt")
    loaded = recipe.build_model(tmp_path / "w.pt")
    assert torch.equal(loaded.state_dict()["head.weight"], state["head.weight"])
    del state["head.weight"]
    torch.save(state, tmp_path / "short.pt")
    code = main(
        ["convert", str(EXAMPLE), "--weights", str(tmp_path / "short.pt"), "--out", str(tmp_path / "o")]
    )
    assert code == ExitCode.USAGE_ERROR and not (tmp_path / "o").exists()


def test_the_readme_guide_points_to_the_example_and_documents_each_recipe_form():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Recipes", 1)[1].split("\n## ", 1)[0]
    assert "tests/fixtures/text_encoder_recipe.py" in section
    for needle in (
        "harness convert path/to/recipe.py",
        "package.module:factory",
        "trt_harness.recipes",
        'dtype="int64"',
        "spatial_axes",
        "class_axes",
        "compare_profile_shapes",
        "output_names",
        "--weights",
    ):
        assert needle in section, needle
    # the snippets shown are the example's own lines, not a copy that drifts from it
    example = EXAMPLE.read_text()
    shown = re.findall(r"```python\n(.*?)```", section, re.S)
    lines = [ln for block in shown for ln in block.splitlines() if 'TensorSpec("input_ids"' in ln]
    assert lines and all(ln.strip() in example for ln in lines)
