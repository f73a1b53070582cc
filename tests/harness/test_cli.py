from __future__ import annotations

import subprocess
import sys

from trt_harness.harness.cli import main
from trt_harness.models.core.errors import ExitCode


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=300
    )


def test_unknown_recipe_exits_2_with_one_line_naming_it():
    proc = run_cli("convert", "yolov99")
    assert proc.returncode == ExitCode.USAGE_ERROR
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "unknown recipe 'yolov99'" in lines[0] and "yolov5" in lines[0]


def test_corrupt_weights_file_exits_2_with_one_line_naming_it(tmp_path):
    weights = tmp_path / "yolov5s_state_dict.pt"
    weights.write_bytes(b"\x00not a checkpoint" * 10)
    proc = run_cli(
        "convert", "yolov5", "-p", "image_size=64", "--weights", str(weights), "--out", str(tmp_path / "run")
    )
    assert proc.returncode == ExitCode.USAGE_ERROR
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(weights) in lines[0]
    assert not (tmp_path / "run").exists(), "no stage runs on bad input"


def test_missing_weights_file_and_bad_tolerance_are_usage_errors(tmp_path, capsys):
    assert main(["convert", "yolov5", "--weights", str(tmp_path / "nope.pt")]) == ExitCode.USAGE_ERROR
    assert "no such file" in capsys.readouterr().err
    assert main(["convert", "yolov5", "--atol", "output9=1"]) == ExitCode.USAGE_ERROR
    assert "output9" in capsys.readouterr().err


def test_list_shows_recipes(capsys):
    assert main(["list"]) == ExitCode.PASSED
    assert "yolov5" in capsys.readouterr().out.split()
