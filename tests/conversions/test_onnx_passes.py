"""The pass driver (registry, ORT equality check, I/O) and the simple passes on small generated graphs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from trt_harness.conversions import onnx_files
from trt_harness.conversions.onnx_files import op_counts
from trt_harness.conversions.onnx_passes.driver import run_passes
from trt_harness.conversions.onnx_passes.registry import (
    PassContext,
    PassOutcome,
    register_pass,
    registered_passes,
    unregister_pass,
)
from trt_harness.models.core import serde
from trt_harness.models.core.errors import HarnessError, UsageError

from tests.fixtures import make_onnx_fixtures as fixtures
from tests.fixtures.onnx_runtime import assert_identical_outputs

RNG = np.random.default_rng(1234)


def _random(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _interface(path: Path) -> tuple[list[str], list[str]]:
    graph = onnx.load(path).graph
    return [i.name for i in graph.input], [o.name for o in graph.output]


# -- registry and driver -------------------------------------------------------------------------


def test_all_documented_passes_are_registered() -> None:
    expected = {
        "fold_constants",
        "cleanup",
        "toposort",
        "remove_stray_if",
        "squeeze_to_reshape",
        "drop_identity",
    }
    assert expected <= set(registered_passes())


def test_unknown_pass_name_is_a_usage_error_listing_known_passes(tmp_path: Path) -> None:
    model = fixtures.dead_code(tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    with pytest.raises(UsageError) as error:
        run_passes(model, out, ["cleanup", "fold_everything"])
    message = str(error.value)
    assert "fold_everything" in message
    for known in registered_passes():
        assert known in message
    assert not out.exists()


@pytest.fixture
def doubling_pass() -> Iterator[str]:
    """A deliberately wrong pass: it doubles graph output 'y' while keeping its name."""
    name = "test_double_output_y"

    @register_pass(name)
    def double_output(graph: gs.Graph, context: PassContext) -> PassOutcome:
        output = next(t for t in graph.outputs if t.name == "y")
        producer = output.inputs[0]
        halfway = gs.Variable("y_before_doubling", dtype=output.dtype)
        producer.outputs[0] = halfway
        two = gs.Constant("two", np.array(2.0, dtype=np.float32))
        graph.nodes.append(gs.Node("Mul", name="double", inputs=[halfway, two], outputs=[output]))
        return PassOutcome(True, ("doubled y",))

    yield name
    unregister_pass(name)


def test_pass_that_changes_outputs_is_caught_naming_pass_and_output(
    tmp_path: Path, doubling_pass: str
) -> None:
    model = fixtures.dead_code(tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    feeds = [{"x": np.abs(_random(2, 3)) + 1.0, "spare": _random(2, 3)}]
    with pytest.raises(HarnessError) as error:
        run_passes(model, out, ["cleanup", doubling_pass], check_feeds=feeds)
    message = str(error.value)
    assert f"'{doubling_pass}'" in message
    assert "'y'" in message
    max_diff = float(np.abs(feeds[0]["x"]).max())  # doubling a positive value moves it by itself
    assert f"{max_diff:.6g}" in message
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no partial file left behind


def test_pass_that_changes_outputs_passes_unnoticed_without_feeds(tmp_path: Path, doubling_pass: str) -> None:
    reports = run_passes(fixtures.dead_code(tmp_path / "m.onnx"), tmp_path / "out.onnx", [doubling_pass])
    assert reports[0].max_abs_diff is None
    assert reports[0].op_counts_after["Mul"] == 1


def test_pass_that_renames_an_output_is_rejected(tmp_path: Path) -> None:
    name = "test_rename_output"

    @register_pass(name)
    def rename_output(graph: gs.Graph, context: PassContext) -> PassOutcome:
        graph.outputs[0].name = "renamed"
        return PassOutcome(True, ("renamed the output",))

    try:
        with pytest.raises(HarnessError, match=f"'{name}' changed the graph's inputs/outputs"):
            run_passes(fixtures.dead_code(tmp_path / "m.onnx"), tmp_path / "out.onnx", [name])
    finally:
        unregister_pass(name)


def test_a_pass_that_crashes_is_reported_by_name(tmp_path: Path) -> None:
    name = "test_crashing_pass"

    @register_pass(name)
    def crash(graph: gs.Graph, context: PassContext) -> PassOutcome:
        raise ValueError("no such node")

    try:
        with pytest.raises(HarnessError, match=f"'{name}' failed on .*m.onnx: ValueError: no such node"):
            run_passes(fixtures.dead_code(tmp_path / "m.onnx"), tmp_path / "out.onnx", [name])
    finally:
        unregister_pass(name)


def test_a_graph_the_checker_rejects_is_not_written(tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    with pytest.raises(HarnessError, match="onnx.checker"):
        run_passes(fixtures.unsorted(tmp_path / "m.onnx"), out, ["cleanup"])
    assert not out.exists()


def test_static_dims_must_name_real_inputs_and_agree_with_static_dims(tmp_path: Path) -> None:
    model = fixtures.squeeze_unsqueeze(tmp_path / "m.onnx")
    with pytest.raises(UsageError, match="'nope'.*inputs: x, m"):
        run_passes(model, tmp_path / "out.onnx", ["cleanup"], static_dims={"nope": {0: 1}})
    with pytest.raises(UsageError, match="axis 1 of input 'x' is 3, but the model declares 1"):
        run_passes(model, tmp_path / "out.onnx", ["cleanup"], static_dims={"x": {1: 3}})
    with pytest.raises(UsageError, match="axis 7 of input 'x'"):
        run_passes(model, tmp_path / "out.onnx", ["cleanup"], static_dims={"x": {7: 1}})


def test_check_feeds_must_match_the_model_inputs(tmp_path: Path) -> None:
    model = fixtures.dead_code(tmp_path / "m.onnx")
    with pytest.raises(UsageError, match="feed #0.*'spare'"):
        run_passes(model, tmp_path / "out.onnx", ["cleanup"], check_feeds=[{"x": _random(2, 3)}])


def test_reports_are_json_serializable_and_count_ops_per_pass(tmp_path: Path) -> None:
    model = fixtures.identities(tmp_path / "m.onnx")
    reports = run_passes(
        model, tmp_path / "out.onnx", ["drop_identity", "toposort"], check_feeds=[{"x": _random(2, 3)}]
    )
    assert [r.name for r in reports] == ["drop_identity", "toposort"]
    first, second = reports
    assert first.op_counts_before == op_counts(onnx.load(model))
    assert first.op_counts_after == second.op_counts_before
    assert first.op_counts_after == op_counts(onnx.load(tmp_path / "out.onnx"))
    decoded = json.loads(json.dumps(serde.to_json(reports)))
    assert decoded[0]["changes"] == list(first.changes)
    assert decoded[0]["max_abs_diff"] == 0.0
    assert decoded[1]["duration_s"] >= 0


def test_op_counts_include_nodes_inside_subgraphs(tmp_path: Path) -> None:
    counts = op_counts(onnx.load(fixtures.sibling_ifs(tmp_path / "m.onnx")))
    assert counts["If"] == 4
    assert counts["Squeeze"] == 3  # one in each then-branch of the three squeeze Ifs
    assert counts["Neg"] == 1


def test_external_data_is_loaded_and_a_small_result_is_saved_as_one_file(tmp_path: Path) -> None:
    source = onnx.load(fixtures.identities(tmp_path / "inline.onnx"))
    split = tmp_path / "split.onnx"
    onnx.save_model(source, split, save_as_external_data=True, location="split.onnx.data", size_threshold=0)
    out = tmp_path / "out.onnx"
    run_passes(split, out, ["drop_identity"], check_feeds=[{"x": _random(2, 3)}])
    assert not (tmp_path / "out.onnx.data").exists()
    result = onnx.load(out, load_external_data=False)
    assert all(not onnx.external_data_helper.uses_external_data(t) for t in result.graph.initializer)
    assert_identical_outputs(tmp_path / "inline.onnx", out, [{"x": _random(4, 3)}])


def test_a_result_over_the_single_file_limit_keeps_weights_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_files, "SINGLE_FILE_LIMIT", 100)
    monkeypatch.setattr(onnx_files, "EXTERNAL_MIN_BYTES", 0)
    model = fixtures.identities(tmp_path / "m.onnx")
    feeds = [{"x": _random(2, 3)}]
    out = tmp_path / "out.onnx"
    # ORT too gets this model from a staged file with external data
    run_passes(model, out, ["drop_identity"], check_feeds=feeds)
    (sidecar,) = onnx_files.external_data_files(out)
    assert (tmp_path / sidecar).is_file()
    stored = onnx.load(out, load_external_data=False).graph.initializer
    assert stored and all(onnx.external_data_helper.uses_external_data(t) for t in stored)
    onnx.checker.check_model(str(out))
    assert_identical_outputs(model, out, feeds)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.onnx", "out.onnx", sidecar])


# -- the simple passes ---------------------------------------------------------------------------


def test_fold_constants_folds_static_shape_arithmetic(tmp_path: Path) -> None:
    model = fixtures.foldable(tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    feeds = [{"x": _random(2, 3, 4)}]
    (report,) = run_passes(model, out, ["fold_constants"], check_feeds=feeds)
    assert report.modified
    assert report.op_counts_before["Shape"] == 1
    assert set(report.op_counts_after) == {"Reshape", "Add"}
    assert report.op_counts_after["Add"] == 1  # bias + bias became a constant
    assert report.max_abs_diff == 0.0
    assert _interface(out) == _interface(model)
    assert_identical_outputs(model, out, feeds)


def test_cleanup_removes_dead_nodes_but_keeps_unused_inputs(tmp_path: Path) -> None:
    model = fixtures.dead_code(tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    (report,) = run_passes(
        model, out, ["cleanup"], check_feeds=[{"x": _random(2, 3), "spare": _random(2, 3)}]
    )
    assert report.modified
    assert "Neg" not in report.op_counts_after
    assert any("Neg" in change for change in report.changes)
    assert _interface(out) == (["x", "spare"], ["y"])


def test_passes_that_find_nothing_to_do_say_so(tmp_path: Path) -> None:
    model = fixtures.dead_code(tmp_path / "m.onnx")
    reports = run_passes(model, tmp_path / "out.onnx", ["cleanup", "cleanup", "toposort", "drop_identity"])
    assert reports[0].modified
    assert all(not r.modified and r.changes == () for r in reports[1:])
    assert all(r.op_counts_before == r.op_counts_after for r in reports[1:])


def test_toposort_orders_producers_before_consumers(tmp_path: Path) -> None:
    model = fixtures.unsorted(tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    (report,) = run_passes(model, out, ["toposort"], check_feeds=[{"x": _random(2, 3)}])
    assert report.modified
    produced = {i.name for i in onnx.load(out).graph.input}
    for node in onnx.load(out).graph.node:
        assert set(node.input) <= produced, node.name
        produced.update(node.output)


def test_drop_identity_rewires_outputs_and_keeps_the_identities_that_must_stay(tmp_path: Path) -> None:
    model = fixtures.identities(tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    feeds = [{"x": _random(2, 3)}, {"x": _random(5, 3)}]
    (report,) = run_passes(model, out, ["drop_identity"], check_feeds=feeds)
    assert report.op_counts_before["Identity"] == 5
    assert report.op_counts_after == {"Identity": 2, "Relu": 1}
    graph = onnx.load(out).graph
    relu = next(n for n in graph.node if n.op_type == "Relu")
    assert list(relu.input) == ["x"] and list(relu.output) == ["y"]
    kept = {n.name for n in graph.node if n.op_type == "Identity"}
    assert kept == {"id_passthrough", "id_constant"}
    assert any("id_passthrough" in c and "input 'x'" in c for c in report.changes)
    assert any("id_constant" in c and "constant" in c for c in report.changes)
    assert _interface(out) == _interface(model)
    assert_identical_outputs(model, out, feeds)


def test_squeeze_to_reshape_converts_where_the_shape_allows(tmp_path: Path) -> None:
    model = fixtures.squeeze_unsqueeze(tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    feeds = [{"x": _random(n, 1, 4, 5), "m": _random(n, 1, 2)} for n in (1, 3)]
    reports = run_passes(model, out, ["squeeze_to_reshape", "cleanup"], check_feeds=feeds)
    assert reports[1].op_counts_after == {"Relu": 1, "Reshape": 4, "Squeeze": 1}
    assert any("kept Squeeze 'squeeze_dynamic'" in c and "not known to be 1" in c for c in reports[0].changes)
    assert_identical_outputs(model, out, feeds)


def test_squeeze_to_reshape_uses_static_dims_for_dynamic_squeezed_dims(tmp_path: Path) -> None:
    model = fixtures.squeeze_unsqueeze(tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    feeds = [{"x": _random(n, 1, 4, 5), "m": _random(n, 1, 2)} for n in (1, 3)]
    (report,) = run_passes(model, out, ["squeeze_to_reshape"], static_dims={"m": {1: 1}}, check_feeds=feeds)
    assert "Squeeze" not in report.op_counts_after
    assert report.op_counts_after["Reshape"] == 5
    assert_identical_outputs(model, out, feeds)


@st.composite
def _squeeze_cases(draw: st.DrawFn) -> tuple[str, list[int | str], list[int], list[dict[str, np.ndarray]]]:
    """A Squeeze/Unsqueeze with random dims (some dynamic), axes, and two feeds of different sizes."""
    op = draw(st.sampled_from(["Squeeze", "Unsqueeze"]))
    rank = draw(st.integers(1, 4))
    sizes = draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank))
    dynamic = draw(st.lists(st.booleans(), min_size=rank, max_size=rank))
    if op == "Squeeze":
        ones = [axis for axis, size in enumerate(sizes) if size == 1]
        if not ones:
            sizes[0], ones = 1, [0]
        axes = draw(st.lists(st.sampled_from(ones), min_size=1, max_size=len(ones), unique=True))
        axes = [axis - rank if draw(st.booleans()) else axis for axis in axes]
    else:
        out_rank = rank + draw(st.integers(1, 2))
        axes = draw(
            st.lists(
                st.integers(0, out_rank - 1), min_size=out_rank - rank, max_size=out_rank - rank, unique=True
            )
        )
    shape: list[int | str] = [
        f"d{axis}" if dyn else size for axis, (size, dyn) in enumerate(zip(sizes, dynamic, strict=True))
    ]
    squeezed = {axis % rank for axis in axes} if op == "Squeeze" else set()
    other_sizes = [
        size if not dyn or axis in squeezed else size % 3 + 1
        for axis, (size, dyn) in enumerate(zip(sizes, dynamic, strict=True))
    ]
    feeds = [{"x": _random(*sizes)}, {"x": _random(*other_sizes)}]
    return op, shape, axes, feeds


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_squeeze_cases())
def test_squeeze_to_reshape_never_changes_results(tmp_path: Path, case: tuple) -> None:
    op, shape, axes, feeds = case
    model = fixtures.single_squeeze(tmp_path / "m.onnx", op, shape, axes)
    (report,) = run_passes(model, tmp_path / "out.onnx", ["squeeze_to_reshape"], check_feeds=feeds)
    (change,) = report.changes
    event("converted" if report.modified else "kept")
    if report.modified:
        assert report.op_counts_after == {"Reshape": 1}
        assert "-> Reshape to" in change
    else:
        assert report.op_counts_after == {op: 1}
        assert change.startswith(f"kept {op}")
    assert report.max_abs_diff == 0.0
