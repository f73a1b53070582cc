"""Faults while building a recipe: one line naming the recipe, the parameters given and the line at
fault, exit 2, nothing written — never "a bug in the harness" (exit 5).

Style of tests/harness/test_faults.py: each test asserts the exit code, the one-line message and that
the run folder was not created.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from trt_harness.harness.cli import main
from trt_harness.models.core.errors import ExitCode

# a stand-in for a model zoo library (timm.create_model) that raises deep inside itself
ZOO = """
ARCHS = {"tiny": 4}


def create_model(arch):
    if arch not in ARCHS:
        raise ValueError(f"unknown model {arch!r}; known: {sorted(ARCHS)}")
    return ARCHS[arch]
"""

RECIPE = """
import fake_zoo
from trt_harness.models.recipe import Recipe, TensorSpec
from trt_harness.models.recipes import register_recipe

WIDTHS = {"small": 8, "large": 32}


@register_recipe
def sized(size="28", arch="small", zoo="tiny"):
    side = int(size)  # LINE size
    width = WIDTHS[arch]  # LINE arch
    fake_zoo.create_model(zoo)  # LINE zoo
    return Recipe(name="sized", description="", build_model=lambda w: None, sample_inputs=lambda: [],
                  inputs=(TensorSpec("x", (1, side, width)),), output_names=("y",))
"""


def _line_of(text: str, mark: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.endswith(f"# LINE {mark}"))


@pytest.fixture
def recipe_file(tmp_path: Path):
    saved = list(sys.path)
    (tmp_path / "fake_zoo.py").write_text(ZOO)  # beside the recipe: its folder is first on sys.path
    path = tmp_path / "sized_recipe.py"
    path.write_text(RECIPE)
    yield path
    sys.path[:] = saved
    sys.modules.pop("fake_zoo", None)


def _convert(tmp_path: Path, ref: str, *args: str) -> int:
    return main(["convert", ref, *args, "--out", str(tmp_path / "out"), "--no-cache"])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    ("param", "mark", "raised"),
    [
        (
            "size=abc",
            "size",
            "ValueError: invalid literal for int() with base 10: 'abc' (the value of parameter 'size')",
        ),
        ("arch=no_such_model", "arch", "KeyError: 'no_such_model' (the value of parameter 'arch')"),
    ],
)
def test_an_exception_inside_the_factory_names_the_recipe_the_parameter_and_the_line(
    tmp_path, capsys, recipe_file, param, mark, raised
):
    assert _convert(tmp_path, str(recipe_file), "-p", param) == ExitCode.USAGE_ERROR
    line = _one_error_line(capsys)
    assert f"recipe 'sized' (-p {param}) raised {raised}" in line
    assert f"at {recipe_file.resolve()}:{_line_of(RECIPE, mark)}" in line
    assert "does not take parameters" not in line and "bug in the harness" not in line
    assert not (tmp_path / "out").exists(), "rejected before any stage ran"


def test_an_exception_raised_in_a_library_names_the_recipes_line_and_where_it_was_raised(
    tmp_path, capsys, recipe_file
):
    assert _convert(tmp_path, str(recipe_file), "-p", "zoo=resnet", "-p", "size=30") == ExitCode.USAGE_ERROR
    line = _one_error_line(capsys)
    assert "recipe 'sized' (-p zoo=resnet -p size=30) raised ValueError: unknown model 'resnet'" in line
    assert "(the value of parameter 'zoo')" in line
    assert f"at {recipe_file.resolve()}:{_line_of(RECIPE, 'zoo')}" in line
    assert f"(raised in {tmp_path / 'fake_zoo.py'}:" in line
    assert not (tmp_path / "out").exists()


def test_the_same_parameters_that_work_build_the_recipe(tmp_path, capsys, recipe_file):
    assert main(["list", f"{recipe_file}"]) == ExitCode.PASSED  # the file itself loads
    from trt_harness.models.recipes import get_recipe

    assert get_recipe(str(recipe_file), size="30", arch="large").inputs[0].shape == (1, 30, 32)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("X = 1\ndef broken(:\n", ":2: invalid syntax; fix the recipe file"),
        (
            "import no_such_library_anywhere\n",
            "ModuleNotFoundError: No module named 'no_such_library_anywhere'",
        ),
        ("X = 1\nY = {}['missing']\n", "KeyError: 'missing' at {path}:2"),
    ],
)
def test_a_recipe_file_that_does_not_load_names_the_file_and_line(tmp_path, capsys, source, expected):
    path = tmp_path / "bad_recipe.py"
    path.write_text(source)
    assert _convert(tmp_path, str(path)) == ExitCode.USAGE_ERROR
    line = _one_error_line(capsys)
    assert expected.format(path=path.resolve()) in line and str(path.name) in line
    assert not (tmp_path / "out").exists()


def test_a_factory_that_returns_no_recipe_or_a_harness_error_is_a_usage_error(tmp_path, capsys):
    path = tmp_path / "odd.py"
    path.write_text(
        textwrap.dedent(
            """
            from trt_harness.models.recipe import Recipe, ShapeRange, TensorSpec


            def nothing():
                return None


            def bad_range(batch: int = 0):
                return Recipe(name="bad_range", description="", build_model=None, sample_inputs=list,
                              inputs=(TensorSpec("x", ("batch", 3)),), output_names=("y",),
                              shape_ranges={"x": ShapeRange((batch, 3), (batch, 3), (batch, 3))})
            """
        )
    )
    assert _convert(tmp_path, f"{path}:nothing") == ExitCode.USAGE_ERROR
    assert "its factory nothing returned NoneType, not a Recipe" in _one_error_line(capsys)
    assert _convert(tmp_path, f"{path}:bad_range") == ExitCode.USAGE_ERROR
    line = _one_error_line(capsys)
    assert (
        line.startswith("harness: error: recipe 'bad_range' (no parameters): ")
        and f"{path.resolve()}:" in line
    )
    assert not (tmp_path / "out").exists()
