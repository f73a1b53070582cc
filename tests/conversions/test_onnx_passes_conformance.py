"""One test per finding of issue 12 (surgery conformance), each on the smallest model that shows it.

The models are built here in code; each test fails on the code before the fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from trt_harness.conversions import ort_session
from trt_harness.conversions.onnx_files import op_counts
from trt_harness.conversions.onnx_passes import driver as driver_module
from trt_harness.conversions.onnx_passes.driver import run_passes
from trt_harness.conversions.onnx_passes.output_check import Mismatch, max_difference
from trt_harness.conversions.onnx_passes.registry import PassOutcome, register_pass, unregister_pass
from trt_harness.conversions.ort_session import OrtSettings
from trt_harness.models.core.errors import HarnessError, UsageError
from trt_harness.models.recipes import get_recipe

from tests.fixtures.onnx_runtime import ALL_PASSES

FLOAT, INT64 = TensorProto.FLOAT, TensorProto.INT64
RNG = np.random.default_rng(12)


def _save(graph: onnx.GraphProto, path: Path, opset: int = 18, check: bool = True) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    if check:
        onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, path)
    return path


def _ints(name: str, values: object) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def _ort(path: Path, feed: dict[str, object]) -> list[object]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def _run_each(model: Path, tmp_path: Path, feed: dict[str, object]) -> None:
    """Every pass alone and all of them in order keep the outputs, the interface and the full check."""
    expected = _ort(model, feed)
    for passes in [(p,) for p in ALL_PASSES] + [ALL_PASSES]:
        out = tmp_path / f"{'+'.join(passes)}.onnx"
        run_passes(model, out, passes, check_feeds=[feed])
        onnx.checker.check_model(str(out), full_check=True)
        for before, after in zip(expected, _ort(out, feed), strict=True):
            assert max_difference(before, after, rtol=0.0, atol=0.0) == 0.0, passes


# -- fold_constants: Shape(start, end) ----------------------------------------------------------


def _shape_range_model(path: Path, shape: list[int | str], start: int, gather: int | None = None) -> Path:
    """y = Reshape(x_flat, Shape(x, start=start) [-> Gather(gather)]): the shape value reaches an output."""
    nodes = [helper.make_node("Shape", ["x"], ["dims"], start=start)]
    value = "dims"
    if gather is not None:
        nodes.append(helper.make_node("Gather", ["dims", "index"], ["dim"], axis=0))
        value = "dim"
    nodes.append(helper.make_node("Cast", [value], ["y"], to=INT64))
    graph = helper.make_graph(
        nodes,
        "shape_range",
        [helper.make_tensor_value_info("x", FLOAT, shape)],
        [helper.make_tensor_value_info("y", INT64, [] if gather is not None else ["d"])],
        initializer=[_ints("index", gather)] if gather is not None else [],
    )
    return _save(graph, path)


def test_fold_constants_honours_shape_start_on_a_static_shape(tmp_path: Path) -> None:
    model = _shape_range_model(tmp_path / "m.onnx", [3, 4, 5], start=1)
    out = tmp_path / "out.onnx"
    feed = {"x": RNG.standard_normal((3, 4, 5)).astype(np.float32)}
    (report,) = run_passes(model, out, ["fold_constants"], check_feeds=[feed])
    assert "Shape" not in report.op_counts_after  # folded ...
    np.testing.assert_array_equal(_ort(out, feed)[0], [4, 5])  # ... to the dims from `start` on


def test_fold_constants_does_not_fold_a_gather_of_a_shape_range_from_the_wrong_dim(tmp_path: Path) -> None:
    # graphsurgeon's Gather(Shape) folding reads dim 0 of x (3, static) for element 0 of Shape(x, start=1)
    model = _shape_range_model(tmp_path / "m.onnx", [3, "N", 5], start=1, gather=0)
    out = tmp_path / "out.onnx"
    feed = {"x": RNG.standard_normal((3, 7, 5)).astype(np.float32)}
    (report,) = run_passes(model, out, ["fold_constants"], check_feeds=[feed])
    assert _ort(out, feed)[0] == 7
    # the Shape stays as written: the Shape -> Slice split made for the folding is undone
    assert report.op_counts_after.get("Slice") is None
    (shape,) = [n for n in onnx.load(out).graph.node if n.op_type == "Shape"]
    assert helper.get_attribute_value(shape.attribute[0]) == 1


def test_fold_constants_folds_the_static_part_of_a_shape_range(tmp_path: Path) -> None:
    model = _shape_range_model(tmp_path / "m.onnx", ["N", 4, 5], start=2, gather=0)
    out = tmp_path / "out.onnx"
    feed = {"x": RNG.standard_normal((2, 4, 5)).astype(np.float32)}
    (report,) = run_passes(model, out, ["fold_constants"], check_feeds=[feed])
    assert "Shape" not in report.op_counts_after
    assert _ort(out, feed)[0] == 5


# -- fold_constants: If inlining ------------------------------------------------------------------


def _constant_if_model(path: Path) -> Path:
    """An If on a condition that folds to true, whose then-branch returns an outer tensor and a constant."""
    then_branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["x_again"])],
        "then",
        [],
        [
            helper.make_tensor_value_info("x_again", FLOAT, [2, 3]),
            helper.make_tensor_value_info("two", FLOAT, []),
        ],
        initializer=[numpy_helper.from_array(np.array(2.0, np.float32), "two")],  # a branch constant
    )
    else_branch = helper.make_graph(
        [
            helper.make_node("Neg", ["x"], ["negated"]),
            helper.make_node(
                "Constant", [], ["three"], value=numpy_helper.from_array(np.array(3.0, np.float32))
            ),
        ],
        "else",
        [],
        [
            helper.make_tensor_value_info("negated", FLOAT, [2, 3]),
            helper.make_tensor_value_info("three", FLOAT, []),
        ],
    )
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["dim0"], axis=0),
        helper.make_node("Equal", ["dim0", "two_i"], ["is_two"]),
        helper.make_node(
            "If", ["is_two"], ["picked", "scale"], then_branch=then_branch, else_branch=else_branch
        ),
        helper.make_node("Mul", ["picked", "scale"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "constant_if",
        [helper.make_tensor_value_info("x", FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", FLOAT, [2, 3])],
        initializer=[_ints("zero", 0), _ints("two_i", 2)],
    )
    return _save(graph, path)


def test_fold_constants_inlines_a_constant_if_keeping_outer_and_constant_branch_outputs(
    tmp_path: Path,
) -> None:
    model = _constant_if_model(tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    feed = {"x": RNG.standard_normal((2, 3)).astype(np.float32)}
    (report,) = run_passes(model, out, ["fold_constants"], check_feeds=[feed])
    assert "If" not in report.op_counts_after
    assert any("inlined If" in change for change in report.changes)
    onnx.checker.check_model(str(out), full_check=True)  # graphsurgeon's flattening left 'picked' unproduced
    np.testing.assert_array_equal(_ort(out, feed)[0], feed["x"] * 2)


# -- sequences and optionals ----------------------------------------------------------------------


def _sequence_model(path: Path) -> Path:
    """A sequence of constants (top level and inside an If branch) read back with SequenceAt."""
    branch_nodes = [
        helper.make_node("SequenceConstruct", ["c1", "c2"], ["inner_seq"]),
        helper.make_node("SequenceAt", ["inner_seq", "one"], ["inner_at"]),
        helper.make_node("Add", ["inner_at", "x"], ["branch_out"]),
    ]
    branch = helper.make_graph(
        branch_nodes, "branch", [], [helper.make_tensor_value_info("branch_out", FLOAT, [2])]
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["other_out"])],
        "other",
        [],
        [helper.make_tensor_value_info("other_out", FLOAT, [2])],
    )
    nodes = [
        helper.make_node("SequenceConstruct", ["c1", "c2"], ["seq"]),
        helper.make_node("SequenceAt", ["seq", "zero"], ["first"]),
        helper.make_node("Add", ["first", "x"], ["y"]),
        helper.make_node("If", ["flag"], ["z"], then_branch=branch, else_branch=other),
        helper.make_node("SequenceInsert", ["seq", "x"], ["seq_out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "sequences",
        [
            helper.make_tensor_value_info("x", FLOAT, [2]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("y", FLOAT, [2]),
            helper.make_tensor_value_info("z", FLOAT, [2]),
            helper.make_tensor_sequence_value_info("seq_out", FLOAT, [2]),
        ],
        initializer=[
            numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "c1"),
            numpy_helper.from_array(np.array([3.0, 4.0], np.float32), "c2"),
            _ints("zero", 0),
            _ints("one", 1),
        ],
    )
    return _save(graph, path)


def test_every_pass_leaves_sequence_constants_alone_and_the_check_compares_sequences(tmp_path: Path) -> None:
    # fold_constants crashed: "'list' object has no attribute 'nbytes'"; the output check: `.shape` on a list
    model = _sequence_model(tmp_path / "m.onnx")
    _run_each(model, tmp_path, {"x": np.array([0.5, -1.0], np.float32), "flag": np.array(True)})


def _optional_model(path: Path) -> Path:
    """An optional graph input passed through (ORT runs Identity on optionals), beside foldable shape math."""
    optional = helper.make_optional_type_proto(helper.make_tensor_type_proto(FLOAT, [2]))
    nodes = [
        helper.make_node("Identity", ["maybe"], ["maybe_out"]),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "optionals",
        [helper.make_value_info("maybe", optional), helper.make_tensor_value_info("x", FLOAT, [2, 3])],
        [helper.make_value_info("maybe_out", optional), helper.make_tensor_value_info("y", FLOAT, [2, 3])],
    )
    return _save(graph, path)


@pytest.mark.parametrize("present", [True, False])
def test_every_pass_keeps_optional_values(tmp_path: Path, present: bool) -> None:
    # graphsurgeon's exporter has no optional branch: every pass, even a no-op, failed with UnboundLocalError
    model = _optional_model(tmp_path / "m.onnx")
    feed = {"maybe": np.array([1.0, 2.0], np.float32) if present else None, "x": np.ones((2, 3), np.float32)}
    _run_each(model, tmp_path, feed)
    out = onnx.load(tmp_path / "fold_constants.onnx")
    assert out.graph.input[0].type.HasField("optional_type")
    assert out.graph.output[0].type.HasField("optional_type")


def test_a_graphsurgeon_round_trip_failure_is_not_blamed_on_the_first_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_import(model: onnx.ModelProto) -> object:
        raise UnboundLocalError("cannot access local variable 'onnx_tensor'")

    monkeypatch.setattr(driver_module.GraphRoundTrip, "import_model", staticmethod(broken_import))
    with pytest.raises(HarnessError) as error:
        run_passes(_optional_model(tmp_path / "m.onnx"), tmp_path / "out.onnx", ["cleanup"])
    assert "before any pass ran" in str(error.value)
    assert "'cleanup'" not in str(error.value)


# -- the output check ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "verdict"),
    [
        (np.array(["a", "b"], dtype=object), np.array(["a", "b"], dtype=object), 0.0),
        (np.array(["a", "b"], dtype=object), np.array(["a", "c"], dtype=object), "1 of 2 elements changed"),
        (np.array([True, False]), np.array([True, False]), 0.0),
        (np.array([True, False]), np.array([True, True]), "1 of 2 elements changed"),
        (np.array([1, 2], np.int64), np.array([1, 3], np.int64), "1 of 2 elements changed"),
        ([np.ones(2, np.float32)], [np.ones(2, np.float32)], 0.0),
        ([np.ones(2, np.float32)], [np.ones(2, np.float32), np.ones(1, np.float32)], "sequence length"),
        ([np.ones(2, np.float32)], [np.full(2, 2.0, np.float32)], "max |after - before| = 1"),
        (None, None, 0.0),
        (None, np.ones(1, np.float32), "changed from empty optional to float32[1]"),
        (np.array([np.nan, 1.0]), np.array([np.nan, 1.0]), 0.0),
        (np.ones(2, np.float32), np.ones(2, np.float64), "changed from float32[2] to float64[2]"),
    ],
)
def test_the_output_check_compares_every_kind_of_ort_value(
    before: object, after: object, verdict: object
) -> None:
    result = max_difference(before, after, rtol=0.0, atol=0.0)
    if isinstance(verdict, float):
        assert result == verdict
    else:
        assert isinstance(result, Mismatch) and str(verdict) in str(result)


def test_string_and_bool_outputs_are_no_false_alarm(tmp_path: Path) -> None:
    # the old check cast every output with astype(float64), which fails on strings
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["words"], ["words_out"]),
            helper.make_node("Not", ["flags"], ["flags_out"]),
        ],
        "strings",
        [
            helper.make_tensor_value_info("words", TensorProto.STRING, [2]),
            helper.make_tensor_value_info("flags", TensorProto.BOOL, [2]),
        ],
        [
            helper.make_tensor_value_info("words_out", TensorProto.STRING, [2]),
            helper.make_tensor_value_info("flags_out", TensorProto.BOOL, [2]),
        ],
    )
    model = _save(graph, tmp_path / "m.onnx")
    _run_each(
        model, tmp_path, {"words": np.array(["a", "bc"], dtype=object), "flags": np.array([True, False])}
    )


# -- onnx.checker full_check -------------------------------------------------------------------------


def test_a_result_that_fails_the_full_check_is_not_written(tmp_path: Path) -> None:
    # a declared shape the graph contradicts passes the basic check (and ORT), not the full one
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["hidden"]), helper.make_node("Neg", ["hidden"], ["y"])],
        "stale",
        [helper.make_tensor_value_info("x", FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", FLOAT, [2, 3])],
        value_info=[helper.make_tensor_value_info("hidden", FLOAT, [7])],
    )
    model = _save(graph, tmp_path / "m.onnx", check=False)
    onnx.checker.check_model(str(model))  # the basic check passes
    out = tmp_path / "out.onnx"
    # the source already fails the full check: held to the basic one (the exporter's fault, not a pass's)
    run_passes(model, out, ["toposort"])
    assert out.is_file()
    clean = tmp_path / "clean.onnx"
    _save(helper.make_graph(graph.node, "clean", graph.input, graph.output), clean)
    with pytest.raises(HarnessError, match="fails onnx.checker"):
        run_passes(clean, tmp_path / "broken.onnx", ["test_stale_shape"])
    assert not (tmp_path / "broken.onnx").exists()


@pytest.fixture(autouse=True)
def _stale_shape_pass() -> object:
    @register_pass("test_stale_shape")
    def stale_shape(graph: object, context: object) -> PassOutcome:
        hidden = graph.tensors()["hidden"]  # type: ignore[attr-defined]
        hidden.shape, hidden.dtype = [7], np.float32
        return PassOutcome(True, ("declared a wrong shape",))

    yield
    unregister_pass("test_stale_shape")


# -- squeeze_to_reshape and stale value_info --------------------------------------------------------------


def test_squeeze_to_reshape_does_not_trust_a_stale_intermediate_shape(tmp_path: Path) -> None:
    # value_info says 'hidden' is [1, 1, 4], but the graph input makes it [N, 1, 4]
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["hidden"]), helper.make_node("Squeeze", ["hidden", "axes"], ["y"])],
        "stale_squeeze",
        [helper.make_tensor_value_info("x", FLOAT, ["N", 1, 4])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 4])],
        initializer=[_ints("axes", [1])],
        value_info=[helper.make_tensor_value_info("hidden", FLOAT, [1, 1, 4])],
    )
    model = _save(graph, tmp_path / "m.onnx", check=False)
    out = tmp_path / "out.onnx"
    feeds = [{"x": RNG.standard_normal((n, 1, 4)).astype(np.float32)} for n in (1, 2)]
    (report,) = run_passes(model, out, ["squeeze_to_reshape"], check_feeds=feeds)
    assert report.op_counts_after == {"Relu": 1, "Reshape": 1}
    (reshape,) = [n for n in onnx.load(out).graph.node if n.op_type == "Reshape"]
    assert "[0, 4]" in " ".join(report.changes)  # the batch is copied, not baked in as 1
    assert reshape.input[1]
    np.testing.assert_array_equal(_ort(out, feeds[1])[0], feeds[1]["x"][:, 0, :].clip(min=0))


# -- the ORT session of the run ------------------------------------------------------------------------


def test_the_final_model_must_load_in_the_run_session_and_the_failure_names_version_and_remedy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _shape_range_model(tmp_path / "m.onnx", [3, 4, 5], start=1)
    real_session = ort.InferenceSession

    def optimizer_that_fails(source: object, options: ort.SessionOptions, **kwargs: object) -> object:
        if options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL:
            raise RuntimeError(
                "Attempting to get index by a name which does not exist: Reshape_152_new_reshape"
            )
        return real_session(source, options, **kwargs)

    monkeypatch.setattr(ort_session.ort, "InferenceSession", optimizer_that_fails)
    feeds = [{"x": np.ones((3, 4, 5), np.float32)}]
    with pytest.raises(HarnessError) as error:
        run_passes(
            model,
            tmp_path / "out.onnx",
            ["fold_constants"],
            check_feeds=feeds,
            run_settings=OrtSettings("all"),
        )
    message = str(error.value)
    assert f"onnxruntime {ort.__version__}" in message
    assert "ORT_ENABLE_ALL" in message
    assert "-p ort_optimization=extended" in message and "upgrade onnxruntime" in message
    assert not (tmp_path / "out.onnx").exists()
    # the remedy works: at a lower level the same check passes
    run_passes(
        model,
        tmp_path / "out.onnx",
        ["fold_constants"],
        check_feeds=feeds,
        run_settings=OrtSettings("extended"),
    )
    assert op_counts(onnx.load(tmp_path / "out.onnx")) == {"Cast": 1}


def test_ort_optimization_is_a_recipe_option_recorded_in_its_params() -> None:
    recipe = get_recipe("mnist", ort_optimization="basic")
    assert recipe.ort_optimization == "basic"
    assert recipe.params["ort_optimization"] == "basic"  # recorded in the run's results with the recipe
    assert get_recipe("mnist").ort_optimization == "all"
    with pytest.raises(UsageError, match="ort_optimization"):
        get_recipe("mnist", ort_optimization="fastest")
