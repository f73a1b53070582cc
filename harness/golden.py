"""`harness golden`: a run's inputs and outputs in Polygraphy's own JSON, one file per sample.

The run folder keeps tensors as `.npz` (fast to write and read, see `harness.sample_files`); Polygraphy
reads its JSON. This writes, per sample set, `inputs/` (one feed dict per file) and one folder per
runner (one `RunResults` iteration per file), the layout `Comparator.run(save_outputs_path=<dir>)`
writes and `--load-inputs` / `--load-outputs` stream, so the comparison can be reproduced with
Polygraphy alone:

    polygraphy run artifacts/yolov5/model.final.onnx --onnxrt \\
        --load-inputs artifacts/yolov5/golden/samples/inputs \\
        --load-outputs artifacts/yolov5/golden/samples/torch --atol 1e-3 --rtol 3e-3
"""

from __future__ import annotations

import shutil
from pathlib import Path

from polygraphy.comparator.struct import IterationResult, RunResults
from polygraphy.json import save_json
from trt_harness.harness.sample_files import INDEX_WIDTH, SampleFolder
from trt_harness.models.core.artifacts import atomic_path
from trt_harness.models.core.errors import UsageError
from trt_harness.models.results.document import load_results
from trt_harness.models.results.stages import RunDetails, SamplesDetails


def write_golden(run_dir: Path, out: Path | None = None) -> list[Path]:
    """Write the Polygraphy JSON of every sample set's inputs and runner outputs; returns the folders."""
    results = load_results(run_dir)
    samples, run = results.details(SamplesDetails), results.details(RunDetails)
    if samples is None:
        raise UsageError(f"{run_dir}: the run saved no samples; run `harness convert` first")
    out = Path(out) if out is not None else Path(run_dir) / "golden"
    samples_stage = results.stage("samples")
    assert samples_stage is not None
    written = []
    for name, sample_set in samples.sets.items():
        folder = out / name / "inputs"
        shutil.rmtree(folder, ignore_errors=True)
        for index, feed in enumerate(
            SampleFolder(run_dir, samples_stage.artifacts["samples"], sample_set.folder)
        ):
            with atomic_path(folder / f"{index:0{INDEX_WIDTH}d}.json") as tmp:
                save_json(feed, str(tmp))
        written.append(folder)
    run_stage = results.stage("run")
    for runner_name, runner in run.runners.items() if run else ():
        if runner.outputs is None or run_stage is None:
            continue
        artifact = run_stage.artifacts[runner.outputs]
        for set_name in runner.sample_sets:
            folder = out / set_name / runner_name
            shutil.rmtree(folder, ignore_errors=True)
            outputs = SampleFolder(run_dir, artifact, f"outputs/{runner_name}/{set_name}")
            for index, tensors in enumerate(outputs):
                iteration = RunResults()
                iteration.append((runner_name, [IterationResult(tensors, runner_name=runner_name)]))
                with atomic_path(folder / f"{index:0{INDEX_WIDTH}d}.json") as tmp:
                    iteration.save(str(tmp))
            written.append(folder)
    return written
