"""TensorRT engine from an ONNX model, through Polygraphy's loaders, for either TensorRT flavor.

Full TensorRT builds for the GPU in the machine. TensorRT for RTX builds ahead of time for a fixed list
of compute capabilities, which works on a machine without any GPU.
"""

from __future__ import annotations

import contextlib
import io
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from trt_harness.conversions.cuda_driver import cuda_devices
from trt_harness.conversions.tensorrt_flavor import select_flavor
from trt_harness.models.core.artifacts import write_bytes_atomic
from trt_harness.models.core.errors import HarnessError
from trt_harness.models.recipe import BuildOptions, ShapeRange
from trt_harness.models.results.stages import BuildPhase, BuildWarning, EngineRecord, TensorRTFlavor


class TensorRTBuildFailed(HarnessError):
    """TensorRT refused the model: parse or build error. Carries TensorRT's own messages."""

    def __init__(
        self,
        phase: str,
        messages: list[str],
        flavor: TensorRTFlavor,
        warnings: tuple[BuildWarning, ...] = (),
    ) -> None:
        self.phase = phase
        self.messages = messages
        self.warnings = warnings  # what the parser/builder warned about before it gave up
        shown = "; ".join(messages[-6:]) or "no message from TensorRT"
        super().__init__(f"{flavor.display_name} {flavor.version} {phase} failed: {shown}")


_LOG_LINE = re.compile(r"^\[(?P<sev>[EWIVF!])\]\s*(?P<msg>.*)$")


def _messages_from(log: str, severities: str) -> list[str]:
    lines = []
    for raw in log.splitlines():
        match = _LOG_LINE.match(raw.strip())
        if match and match["sev"] in severities:
            lines.append(match["msg"].strip())
    return lines


def _errors_from(log: str) -> list[str]:
    return _messages_from(log, "EF!")


class BuildLog:
    """What the parser and builder logged while `capture()` is active: the printed log (Polygraphy's
    lines, for errors) and every TensorRT warning, phase by phase.

    TensorRT's warnings are taken from the TensorRT logger itself (Polygraphy's `get_trt_logger`),
    not from the printed log: Polygraphy prints a TensorRT warning once per process, so a second
    build in the same process (another precision, another run) would lose it there.
    """

    def __init__(self, trt: Any) -> None:
        self.warning_level = int(trt.Logger.WARNING)
        self.printed = io.StringIO()
        self.phase: BuildPhase = "parse"
        self._warnings: list[BuildWarning] = []

    def getvalue(self) -> str:
        return self.printed.getvalue()

    @contextlib.contextmanager
    def capture(self) -> Iterator[BuildLog]:
        from polygraphy.backend.trt.util import get_trt_logger
        from polygraphy.logger import G_LOGGER

        trt_logger_type = type(get_trt_logger())
        forward = trt_logger_type.log
        log = self

        def log_and_keep(logger: Any, severity: Any, message: str) -> None:
            if int(severity) == log.warning_level:  # errors are read from the printed log, as before
                log._warnings.append(BuildWarning(log.phase, "TensorRT", message.strip()))
            forward(logger, severity, message)

        colors = G_LOGGER.colors
        # without the optional `colored` package Polygraphy warns about colours: not a build warning
        G_LOGGER.colors = False
        trt_logger_type.log = log_and_keep
        try:
            with contextlib.redirect_stdout(self.printed), contextlib.redirect_stderr(self.printed):
                yield self
        finally:
            trt_logger_type.log = forward
            G_LOGGER.colors = colors

    @property
    def warnings(self) -> tuple[BuildWarning, ...]:
        """TensorRT's warnings, then Polygraphy's own ("[W]" lines that are not TensorRT's), each once."""
        from_trt = {w.message for w in self._warnings}
        polygraphy = [
            BuildWarning("build", "Polygraphy", message)
            for message in _messages_from(self.getvalue(), "W")
            if message not in from_trt
        ]
        return tuple(dict.fromkeys([*self._warnings, *polygraphy]))


def build_target_tag(flavor: TensorRTFlavor, options: BuildOptions) -> tuple[str, tuple[str, ...]]:
    """The target an engine is built for, as a file-name tag and a human list."""
    if flavor.is_rtx:
        caps = tuple(f"sm{major}{minor}" for major, minor in options.compute_capabilities)
        return "-".join(caps), caps
    # the driver, not torch: a target device verifying a bundle (a Jetson with JetPack's TensorRT) has none
    devices = cuda_devices()
    if not devices:
        raise HarnessError(
            "full TensorRT is installed but no CUDA GPU is visible, and it cannot build without one; "
            "install TensorRT for RTX (`pip install .[rtx]`) to build ahead of time on this machine"
        )
    device = devices[0]  # the device CUDA (and TensorRT's builder) uses by default
    gpu = re.sub(r"[^A-Za-z0-9]+", "", device.name)
    return f"{device.sm_tag}-{gpu}", (f"{device.sm_tag} ({device.name})",)


def engine_path_for(
    out_dir: Path, stem: str, flavor: TensorRTFlavor, options: BuildOptions, precision: str
) -> Path:
    target, _ = build_target_tag(flavor, options)
    return out_dir / f"{stem}.{flavor.slug}.{target}.{precision}.engine"


def config_loader(
    flavor: TensorRTFlavor,
    options: BuildOptions,
    shape_ranges: Mapping[str, ShapeRange],
    precision: str,
    calibration_feeds: Sequence[Mapping[str, Any]],
    out_dir: Path,
    onnx_path: Path,
) -> Any:
    """Polygraphy's builder-config loader for one precision of `onnx_path` (see `engine_from_onnx`)."""
    from polygraphy.backend.trt import Profile

    trt = flavor.module()
    profile = Profile()
    for name, shapes in shape_ranges.items():
        profile.add(name, min=shapes.min, opt=shapes.opt, max=shapes.max)
    config_kwargs: dict[str, Any] = {
        "profiles": [profile] if shape_ranges else None,
        "memory_pool_limits": {trt.MemoryPoolType.WORKSPACE: options.workspace_bytes},
    }
    if flavor.is_rtx:
        from polygraphy.backend.tensorrt_rtx import CreateConfigRTX
        from polygraphy.backend.trt import PostprocessConfig

        config = CreateConfigRTX(compute_capabilities=list(options.compute_capabilities), **config_kwargs)
        if precision != "tf32":
            # TensorRT for RTX enables TF32 by default; an "fp32" engine must really compute in FP32
            config = PostprocessConfig(
                config, lambda builder, network, cfg: cfg.clear_flag(trt.BuilderFlag.TF32)
            )
        return config
    from polygraphy.backend.trt import Calibrator, CreateConfig

    calibrator = None
    if precision == "int8" and not flavor.strongly_typed:
        cache = out_dir / f"{onnx_path.stem}.{flavor.slug}.calibration.cache"
        calibrator = Calibrator(list(calibration_feeds), cache=str(cache))
    flags = {"tf32": precision == "tf32"}
    if not flavor.strongly_typed:
        flags.update(fp16=precision == "fp16", int8=precision == "int8", calibrator=calibrator)
    return CreateConfig(**flags, **config_kwargs)


def engine_from_onnx(
    onnx_path: Path,
    out_dir: Path,
    options: BuildOptions,
    shape_ranges: Mapping[str, ShapeRange],
    precision: str = "fp32",
    calibration_feeds: Sequence[Mapping[str, Any]] = (),
) -> EngineRecord:
    """Parse `onnx_path`, build an engine with one optimization profile, write it into `out_dir` atomically.

    Strongly typed flavors (TensorRT for RTX) take precision from the model itself: pass the FP16 or
    Q/DQ variant. Full TensorRT takes it as builder flags on the FP32 model: FP16, TF32, or INT8 with
    a calibrator fed `calibration_feeds` and a calibration cache beside the engine.
    """
    flavor = select_flavor()
    if flavor is None:
        raise HarnessError(
            "no TensorRT is installed: install TensorRT for RTX (`pip install .[rtx]`, builds on any machine) "
            "or full TensorRT on a CUDA machine (`pip install .[gpu]`)"
        )
    from polygraphy.backend.trt import EngineBytesFromNetwork, NetworkFromOnnxPath

    trt = flavor.module()
    config = config_loader(flavor, options, shape_ranges, precision, calibration_feeds, out_dir, onnx_path)
    _, targets = build_target_tag(flavor, options)

    start = time.perf_counter()
    with BuildLog(trt).capture() as log:
        try:
            # TensorRT 11 takes precision from the model; TensorRT for RTX is strongly typed already
            typed = {"strongly_typed": True} if flavor.strongly_typed and not flavor.is_rtx else {}
            builder, network, parser = NetworkFromOnnxPath(str(onnx_path), **typed)()
        except Exception as e:
            errors = _errors_from(log.getvalue()) or [str(e)]
            raise TensorRTBuildFailed("ONNX parse", errors, flavor, log.warnings) from e
        network_layers = network.num_layers
        network_io = {
            "inputs": [network.get_input(i).name for i in range(network.num_inputs)],
            "outputs": [network.get_output(i).name for i in range(network.num_outputs)],
        }
        log.phase = "build"
        try:
            plan = EngineBytesFromNetwork((builder, network, parser), config=config)()
        except Exception as e:
            errors = _errors_from(log.getvalue()) or [str(e)]
            raise TensorRTBuildFailed("engine build", errors, flavor, log.warnings) from e
    build_seconds = time.perf_counter() - start
    data = bytes(plan)
    engine_path = engine_path_for(out_dir, onnx_path.stem, flavor, options, precision)
    write_bytes_atomic(engine_path, data)
    return EngineRecord(
        precision=precision,
        built=True,
        engine=engine_path.name,
        targets=targets,
        network_layers=network_layers,
        plan_size_bytes=len(data),
        build_seconds=build_seconds,
        workspace_bytes=options.workspace_bytes,
        network_io={k: tuple(v) for k, v in network_io.items()},
        profile=dict(shape_ranges),
        warnings=log.warnings,
    )
