"""`harness convert --history DIR` and the index's trends, on real tiny runs of the diff test recipe
(tests/harness/diff_recipe.py, noise planted in one output): a record appended per run, the trend's
points equal to the recorded values, an environment change marked, a damaged line a usage error naming
the file and line (exit 2) with the file untouched, torn and concurrent appends."""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest
from trt_harness.harness.cli import main
from trt_harness.harness.history import history_file, record_of
from trt_harness.models.core.errors import ExitCode, UsageError
from trt_harness.models.recipes import RECIPES
from trt_harness.models.results.document import load_results
from trt_harness.models.results.history import append_record, read_history, record_to_line
from trt_harness.models.results.stages import CompareDetails

from tests.harness.diff_recipe import NAME, PLANTED, diff_noise
from tests.reports.page import parse

BACKENDS = ("torch", "onnxrt")


@pytest.fixture(scope="module")
def registered() -> Iterator[None]:
    RECIPES.register(NAME, diff_noise)
    yield
    RECIPES.unregister(NAME)


def convert(out: Path, history: Path) -> int:
    argv = ["convert", NAME, "-p", "noise=0.5", "--out", str(out), "--no-cache", "--backends", *BACKENDS]
    return main([*argv, "--history", str(history)])


@dataclasses.dataclass(frozen=True)
class Recorded:
    artifacts: Path
    history: Path  # the --history DIR
    runs: tuple[Path, ...]


@pytest.fixture(scope="module")
def recorded(registered: None, tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    root = tmp_path_factory.mktemp("history")
    runs = (root / "artifacts" / "first", root / "artifacts" / "second")
    for run in runs:
        assert convert(run, root / "history") == ExitCode.PASSED
    return Recorded(root / "artifacts", root / "history", runs)


def test_each_run_appends_one_record_with_its_statistics(recorded: Recorded) -> None:
    records = read_history(history_file(recorded.history))
    assert len(records) == 2
    assert history_file(recorded.history).read_bytes().count(b"\n") == 2
    assert records[0].key == records[1].key  # same recipe, parameters and weights
    assert records[0].environment_fingerprint == records[1].environment_fingerprint
    assert records[0].run_id != records[1].run_id
    for record, run in zip(records, recorded.runs, strict=True):
        results = load_results(run)
        assert record.run_id == results.run_id and record.params == {"noise": 0.5}
        assert record.weights_sha256 is None and record.exit_code == 0
        compare = results.details(CompareDetails)
        assert compare is not None
        assert [(p.output, p.max_abs_err, p.quantile_abs_err) for p in record.points] == [
            (c.output, c.max_abs_err, c.quantile_abs_err) for c in compare.comparisons
        ]


def _with_new_onnxruntime(recorded: Recorded, directory: Path) -> list:
    """The two real records, then a third: the second run as if onnxruntime had been upgraded."""
    directory.mkdir()
    records = list(read_history(history_file(recorded.history)))
    results = load_results(recorded.runs[1])
    env = results.environment
    upgraded = dataclasses.replace(env, packages={**env.packages, "onnxruntime": "99.0.0"})
    third = record_of(
        dataclasses.replace(
            results, environment=upgraded, run_id="upgraded", created_unix=results.created_unix + 60
        )
    )
    for record in (*records, third):
        append_record(history_file(directory), record)
    return [*records, third]


def _trend_rows(index: Path) -> dict[str, object]:
    page = parse(index.read_text())
    table = page.by_id("trends")
    assert table is not None, "the index has no trend table"
    return {row.find_all("td")[1].text.strip(): row for row in table.find_all("tr", "trend")}


def test_index_trend_points_equal_the_recorded_values(recorded: Recorded, tmp_path: Path) -> None:
    records = _with_new_onnxruntime(recorded, tmp_path / "hist")
    assert main(["index", str(recorded.artifacts), "--history", str(tmp_path / "hist")]) == 0
    rows = _trend_rows(recorded.artifacts / "index.html")
    assert set(rows) == {PLANTED, "clean"}
    for output, row in rows.items():
        points = row.find_all("circle", "point")  # type: ignore[attr-defined]
        recorded_values = [next(p.max_abs_err for p in r.points if p.output == output) for r in records]
        assert [float(c.attrs["data-value"]) for c in points] == recorded_values
        assert [c.attrs["data-run"] for c in points] == [r.run_id for r in records]
    planted = [next(p.max_abs_err for p in r.points if p.output == PLANTED) for r in records]
    assert all(4.5e-5 < v < 5.5e-5 for v in planted), planted  # 0.5 x atol 1e-4, planted in the model


def test_environment_change_is_marked_where_it_happened(recorded: Recorded, tmp_path: Path) -> None:
    _with_new_onnxruntime(recorded, tmp_path / "hist")
    assert main(["index", str(recorded.artifacts), "--history", str(tmp_path / "hist")]) == 0
    for row in _trend_rows(recorded.artifacts / "index.html").values():
        marks = row.find_all("line", "env-change")  # type: ignore[attr-defined]
        assert [m.attrs["data-run"] for m in marks] == ["upgraded"]  # not between the first two runs
        assert "onnxruntime" in marks[0].text and "→ 99.0.0" in marks[0].text
        listed = row.find_all("div", "env-change")  # type: ignore[attr-defined]
        assert len(listed) == 1 and listed[0].text.startswith("run 3 ")


def test_index_without_history_has_no_trend_table(recorded: Recorded) -> None:
    assert main(["index", str(recorded.artifacts)]) == 0
    assert parse((recorded.artifacts / "index.html").read_text()).by_id("trends") is None


@pytest.mark.parametrize(
    ("bad_line", "says"),
    [
        (b"{not json", "not a JSON history record"),
        (b'{"schema": "polygraphy/run-results", "lines": []}', "not written by `harness convert --history`"),
        (b'{"schema": "trt-harness/history", "schema_version": 7}', "history schema version 7"),
        (b'{"schema": "trt-harness/history", "schema_version": 1, "recipe": 3}', "damaged or edited"),
    ],
)
def test_a_bad_line_is_a_usage_error_naming_file_and_line(
    recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str], bad_line: bytes, says: str
) -> None:
    good = read_history(history_file(recorded.history))[0]
    path = history_file(tmp_path / "hist")
    path.parent.mkdir()
    content = record_to_line(good) + bad_line + b"\n" + record_to_line(good)
    path.write_bytes(content)
    capsys.readouterr()
    assert convert(tmp_path / "run", tmp_path / "hist") == ExitCode.USAGE_ERROR
    err = capsys.readouterr().err
    assert f"{path}:2:" in err and says in err, err
    assert not (tmp_path / "run").exists()  # refused before any stage ran
    assert (
        main(["index", str(recorded.artifacts), "--history", str(tmp_path / "hist")]) == ExitCode.USAGE_ERROR
    )
    assert f"{path}:2:" in capsys.readouterr().err
    with pytest.raises(UsageError, match=f"{path}:2:"):
        read_history(path)
    assert path.read_bytes() == content  # never rewritten


def test_a_killed_append_leaves_earlier_records_intact(recorded: Recorded, tmp_path: Path) -> None:
    good = read_history(history_file(recorded.history))[0]
    path = tmp_path / "history.jsonl"
    torn = record_to_line(good)[:57]  # a process killed mid-write: no newline at the end
    path.write_bytes(record_to_line(good) + torn)
    assert [r.run_id for r in read_history(path)] == [good.run_id]  # the torn tail is no record
    append_record(path, dataclasses.replace(good, run_id="next"))
    assert [r.run_id for r in read_history(path)] == [good.run_id, "next"]
    assert path.read_bytes() == record_to_line(good) + record_to_line(
        dataclasses.replace(good, run_id="next")
    )


def _append_many(path: str, line_source: str, worker: int, count: int) -> None:
    good = read_history(Path(line_source))[0]
    for i in range(count):
        append_record(Path(path), dataclasses.replace(good, run_id=f"{worker}-{i}"))


def test_concurrent_appends_each_land_whole(recorded: Recorded, tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_append_many, args=(str(path), str(history_file(recorded.history)), w, 25))
        for w in range(4)
    ]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    ids = [r.run_id for r in read_history(path)]
    assert sorted(ids) == sorted(f"{w}-{i}" for w in range(4) for i in range(25))
    for w in range(4):  # each writer's records in its own order
        mine = [i for i in ids if i.startswith(f"{w}-")]
        assert mine == [f"{w}-{i}" for i in range(25)]
