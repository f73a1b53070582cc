"""Recipes from anywhere: a file outside the package, a module on sys.path, an installed entry point.

The `models` collision: YOLOv5's checkout has its own top-level `models` package (`models/yolo.py`,
`models/common.py`); a recipe that puts such a checkout on sys.path must get the checkout's `models`,
never the harness's (which installs as `trt_harness.models`).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import textwrap
from pathlib import Path

import pytest
from trt_harness.harness.cli import main
from trt_harness.models.core.errors import ExitCode, UsageError
from trt_harness.models.recipes import ENTRY_POINT_GROUP, get_recipe, resolve_recipe

BACKENDS = ["--backends", "torch", "onnxrt"]


@pytest.fixture(autouse=True)
def _own_models_package():
    """Each test gets a fresh `models` (a fake checkout's) and sys.path; both are restored after."""
    saved_path = list(sys.path)
    saved = {k: v for k, v in sys.modules.items() if k == "models" or k.startswith("models.")}
    for k in saved:
        del sys.modules[k]
    yield
    for k in [k for k in sys.modules if k == "models" or k.startswith("models.")]:
        del sys.modules[k]
    sys.modules.update(saved)
    sys.path[:] = saved_path


def fake_checkout(root: Path, channels: int = 4) -> Path:
    """A user's repository laid out as YOLOv5's is: top-level `models/` with `yolo.py` and `common.py`."""
    (root / "models").mkdir(parents=True)
    (root / "models" / "__init__.py").write_text("")
    (root / "models" / "common.py").write_text(
        textwrap.dedent(
            """
            import torch


            class Conv(torch.nn.Module):
                def __init__(self, c_in, c_out):
                    super().__init__()
                    self.conv = torch.nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
                    self.act = torch.nn.SiLU()

                def forward(self, x):
                    return self.act(self.conv(x))
            """
        )
    )
    (root / "models" / "yolo.py").write_text(
        textwrap.dedent(
            f"""
            import torch

            from models.common import Conv

            CHECKOUT_MARK = "the user's own models.yolo"


            class Model(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.stem = Conv(1, {channels})
                    self.head = torch.nn.Conv2d({channels}, 6, 1)

                def forward(self, x):
                    return self.head(self.stem(x)).flatten(2).transpose(1, 2)
            """
        )
    )
    return root


RECIPE_FILE = """
import sys
from pathlib import Path

import numpy as np

CHECKOUT = Path({checkout!r})
sys.path.insert(0, str(CHECKOUT))  # what a user's recipe for their own repository does

from trt_harness.models.recipe import Recipe, ShapeRange, TensorSpec, Tolerance
from trt_harness.models.recipes import register_recipe

SEED = {seed}


def build(weights):
    import torch
    from models.yolo import Model  # the checkout's, never the harness's

    torch.manual_seed(SEED)
    return Model().eval()


def samples():
    rng = np.random.default_rng(0)
    return [{{"images": rng.random((2, 1, 28, 28), np.float32)}} for _ in range(2)]


@register_recipe
def fake_yolo(batch: int = 2) -> Recipe:
    return Recipe(
        name="fake_yolo",
        description="a model from a user's checkout with its own top-level models package",
        build_model=build,
        sample_inputs=samples,
        inputs=(TensorSpec("images", ("batch", 1, 28, 28)),),
        output_names=("output0",),
        shape_ranges={{"images": ShapeRange((1, 1, 28, 28), (batch, 1, 28, 28), (4, 1, 28, 28))}},
        default_tolerance=Tolerance(atol=1e-4, rtol=1e-4),
    )
"""


def write_recipe(path: Path, checkout: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(RECIPE_FILE.format(checkout=str(checkout), seed=seed))
    return path


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


@pytest.mark.slow
def test_a_recipe_file_importing_its_checkouts_own_models_package_converts_end_to_end(tmp_path, capsys):
    checkout = fake_checkout(tmp_path / "yolov5-checkout")
    recipe = write_recipe(tmp_path / "elsewhere" / "my_recipe.py", checkout)
    run = tmp_path / "run"
    code = main(["convert", str(recipe), "--out", str(run), "--no-cache", *BACKENDS])
    assert code == ExitCode.PASSED, capsys.readouterr()
    assert sys.modules["models.yolo"].CHECKOUT_MARK == "the user's own models.yolo"
    assert Path(sys.modules["models"].__file__).resolve().is_relative_to(checkout.resolve())
    results = _results(run)
    origin = results["recipe"]["origin"]
    assert origin["kind"] == "file" and origin["location"] == str(recipe.resolve())
    assert origin["sha256"] == hashlib.sha256(recipe.read_bytes()).hexdigest()
    assert [s["status"] for s in results["stages"] if s["name"] == "export"] == ["ok"]
    compared = [c for c in results["stages"] if c["name"] == "compare"][0]
    assert compared["status"] == "ok"


@pytest.mark.slow
def test_an_edited_recipe_file_or_its_checkout_invalidates_the_cache(tmp_path, monkeypatch, capsys):
    checkout = fake_checkout(tmp_path / "checkout")
    recipe = write_recipe(tmp_path / "r" / "recipe.py", checkout)
    cache = tmp_path / "cache"

    def statuses(run: str) -> dict[str, str]:
        out = tmp_path / run
        assert main(["convert", str(recipe), "--out", str(out), *BACKENDS]) == ExitCode.PASSED
        return {s["name"]: s["status"] for s in _results(out)["stages"]}

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(cache))
    assert statuses("a")["export"] == "ok"
    assert statuses("b")["export"] == "cached"
    write_recipe(recipe, checkout, seed=1)  # the recipe's own code changed: another model
    assert statuses("c")["export"] == "ok"
    assert (
        _results(tmp_path / "c")["recipe"]["origin"]["sha256"]
        != _results(tmp_path / "a")["recipe"]["origin"]["sha256"]
    )
    # the checkout's model code is part of the key too (followed from the recipe's imports)
    yolo = checkout / "models" / "yolo.py"
    yolo.write_text(yolo.read_text().replace("Conv(1, 4)", "Conv(1, 5)").replace("Conv2d(4,", "Conv2d(5,"))
    for k in [k for k in sys.modules if k == "models" or k.startswith("models.")]:
        del sys.modules[k]
    assert statuses("d")["export"] == "ok"


def test_list_names_where_each_recipe_comes_from(tmp_path, capsys):
    checkout = fake_checkout(tmp_path / "checkout")
    recipe = write_recipe(tmp_path / "r" / "recipe.py", checkout)
    assert main(["list", str(recipe)]) == ExitCode.PASSED
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[:2] == ["mnist", "built-in"] for line in lines)
    (mine,) = [line for line in lines if line.startswith("fake_yolo")]
    assert mine.split()[1] == "file" and str(recipe.resolve()) in mine
    assert hashlib.sha256(recipe.read_bytes()).hexdigest()[:12] in mine


SEVERAL = """
from trt_harness.models.recipes import register_recipe
from trt_harness.models.recipe import Recipe, TensorSpec


def _recipe(name, size):
    return Recipe(name=name, description="", build_model=lambda w: None, sample_inputs=lambda: [],
                  inputs=(TensorSpec("x", (1, size)),), output_names=("y",))


@register_recipe
def small(size: int = 2):
    return _recipe("small", size)


@register_recipe("large_one")
def large(size: int = 8):
    return _recipe("large", size)


def unregistered(size: int = 3):
    return _recipe("unregistered", size)
"""


def test_one_file_registers_several_recipes_and_a_reference_picks_one(tmp_path):
    path = tmp_path / "several.py"
    path.write_text(SEVERAL)
    with pytest.raises(UsageError, match=r"registers 2 recipes \(large_one, small\); choose one"):
        resolve_recipe(str(path))
    assert get_recipe(f"{path}:small").inputs[0].shape == (1, 2)
    assert get_recipe(f"{path}:large_one", size=4).inputs[0].shape == (1, 4)
    assert get_recipe(f"{path}:unregistered").name == "unregistered"  # a factory named after the colon
    with pytest.raises(UsageError, match="no recipe or factory 'nosuch'; it registers large_one, small"):
        resolve_recipe(f"{path}:nosuch")


def test_a_module_on_sys_path_is_a_recipe_reference(tmp_path, monkeypatch):
    package = tmp_path / "user_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "zoo.py").write_text(SEVERAL)
    monkeypatch.syspath_prepend(str(tmp_path))
    resolved = resolve_recipe("user_pkg.zoo:unregistered")
    assert (resolved.origin.kind, resolved.origin.location) == ("module", "user_pkg.zoo:unregistered")
    assert get_recipe("user_pkg.zoo:small", size=5).inputs[0].shape == (1, 5)
    assert resolve_recipe("trt_harness.models.recipes.mnist").origin.kind == "built-in"
    with pytest.raises(UsageError, match="no module 'user_pkg.nosuch' on sys.path"):
        resolve_recipe("user_pkg.nosuch:x")


def test_a_reference_to_a_missing_file_or_an_unknown_name_is_a_usage_error(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "nope.py"), "--out", str(tmp_path / "o")]) == ExitCode.USAGE_ERROR
    assert main(["convert", "no_such_recipe", "--out", str(tmp_path / "o")]) == ExitCode.USAGE_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "nope.py: no such file" in err[0]
    assert "unknown recipe 'no_such_recipe'" in err[1] and "path/to/recipe.py" in err[1]
    assert not (tmp_path / "o").exists()


# -- an installed distribution's entry point --------------------------------------------------------


def install_fake_distribution(site: Path, checkout: Path) -> None:
    """What `pip install` of a package registering a recipe leaves: the package and its dist-info."""
    package = site / "acme_recipes"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "detector.py").write_text(
        RECIPE_FILE.format(checkout=str(checkout), seed=0).replace("@register_recipe\n", "")
    )
    info = site / "acme_recipes-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-recipes\nVersion: 1.2.3\n")
    (package / "zoo.py").write_text(SEVERAL)  # a module value: every recipe it registers
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nacme_detector = acme_recipes.detector:fake_yolo\nacme_zoo = acme_recipes.zoo\n"
    )


@pytest.mark.slow
def test_an_installed_entry_point_is_listed_and_converts(tmp_path, monkeypatch, capsys):
    checkout = fake_checkout(tmp_path / "checkout")
    install_fake_distribution(tmp_path / "site", checkout)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert main(["list"]) == ExitCode.PASSED
    listed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert listed["acme_detector"].split()[1:3] == ["entry", "point"]
    assert "acme-recipes 1.2.3 (acme_recipes.detector:fake_yolo)" in listed["acme_detector"]
    for name in ("small", "large_one"):  # registered by the module an entry point names
        assert "entry point  acme-recipes 1.2.3 (acme_recipes.zoo)" in listed[name]
    assert get_recipe("large_one", size=3).inputs[0].shape == (1, 3)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))

    def export_status(run: Path) -> str:
        assert main(["convert", "acme_detector", "--out", str(run), *BACKENDS]) == ExitCode.PASSED
        return next(s["status"] for s in _results(run)["stages"] if s["name"] == "export")

    run = tmp_path / "run"
    assert export_status(run) == "ok"
    origin = _results(run)["recipe"]["origin"]
    assert origin["kind"] == "entry point" and origin["module"] == "acme_recipes.detector"
    assert origin["distribution"] == "acme-recipes 1.2.3"
    assert export_status(tmp_path / "again") == "cached"
    # a new version of the installed distribution: its code is not followed into, its version is keyed
    info = tmp_path / "site" / "acme_recipes-1.2.3.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-recipes\nVersion: 1.2.4\n")
    info.rename(tmp_path / "site" / "acme_recipes-1.2.4.dist-info")
    assert export_status(tmp_path / "upgraded") == "ok"
    assert _results(tmp_path / "upgraded")["recipe"]["origin"]["distribution"] == "acme-recipes 1.2.4"
    assert (
        origin["sha256"]
        == hashlib.sha256((tmp_path / "site/acme_recipes/detector.py").read_bytes()).hexdigest()
    )


# -- every command that takes a recipe takes a reference ---------------------------------------------


def test_scan_and_matrix_take_a_recipe_file(tmp_path, capsys):
    checkout = fake_checkout(tmp_path / "checkout")
    recipe = write_recipe(tmp_path / "my recipes" / "yolo_recipe.py", checkout)
    assert main(["scan", str(recipe)]) == ExitCode.PASSED
    assert "fake_yolo: no op that the dynamo exporter or TensorRT rejects" in capsys.readouterr().out
    assert main(["matrix", "--recipe", f"{recipe}:fake_yolo", "--recipe", "mnist"]) == ExitCode.PASSED
    cells = json.loads(capsys.readouterr().out)["include"]
    mine = cells[0]
    assert (
        "/" not in mine["id"]
        and " " not in mine["id"]
        and re.fullmatch(r"yolo_recipe_fake_yolo-[0-9a-f]{6}-fp32-rtx", mine["id"])
    )
    assert mine["command"].startswith(f"harness convert '{recipe}:fake_yolo' --precision fp32")
    assert main(["matrix", "--recipe", str(tmp_path / "missing.py")]) == ExitCode.USAGE_ERROR
    assert "missing.py: no such file" in capsys.readouterr().err
