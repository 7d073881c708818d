"""Building the TensorRT engines of a checkpoint's ONNX folder: checks, order, files.

Options, the ONNX folder and its networks, TensorRT, the output folder and every ONNX rewrite
are checked before the first engine is built, so a bad path or graph fails in seconds rather
than after an hour of builds. Engines are written to a
temporary file and renamed, so a crash never leaves a truncated engine under a real name.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ditto_fast.backends.tensorrt_plugin import register_grid_sample_plugin
from ditto_fast.contract import MODELS
from ditto_fast.files import write_atomic
from ditto_fast.tools.engines.onnx_prep import (
    GRID_SAMPLE_CHOICES,
    find_onnx,
    grid_sample_form,
    onnx_candidates,
    onnx_folder,
    prepare_onnx,
)
from ditto_fast.tools.engines.plan import BuildPlan, plan_for
from ditto_fast.tools.engines.tensorrt_build import BuilderSettings, EngineBuilder, EngineBuildError, import_tensorrt


@dataclass(frozen=True)
class BuildOptions:
    fp32_only: bool = False
    hardware_compatible: bool = False
    opt_level: int = 5  # the reference's converter's level; TensorRT's default, 3, builds faster
    workspace_gib: float | None = None
    timing_cache: Path | None = None  # loaded if present, saved after every engine
    only: tuple[str, ...] = ()  # contract network names; empty: all of them
    batch: int | None = None  # batch profile 1..batch for the warp network and the decoder
    grid_sample: str = "auto"  # the warp network's grid-sample form: auto, plugin or native

    def validate(self) -> None:
        if not 0 <= self.opt_level <= 5:
            raise ValueError(f"the optimisation level must be 0..5, got {self.opt_level}")
        if self.workspace_gib is not None and self.workspace_gib <= 0:
            raise ValueError(f"the workspace must be a positive number of GiB, got {self.workspace_gib}")
        if self.batch is not None and self.batch < 1:
            raise ValueError(f"the batch must be at least 1, got {self.batch}")
        unknown = sorted(set(self.only) - set(MODELS))
        if unknown:
            raise ValueError(f"no network {unknown}; networks are {sorted(MODELS)}")
        if self.grid_sample not in GRID_SAMPLE_CHOICES:
            raise ValueError(f"the grid-sample form must be one of {GRID_SAMPLE_CHOICES}, got {self.grid_sample!r}")


@dataclass(frozen=True)
class BuiltEngine:
    plan: BuildPlan
    path: Path
    seconds: float
    size: int

    def summary(self) -> str:
        return f"{self.path.name} ({self.plan.describe()}), {self.size / 2**20:.1f} MiB in {self.seconds:.1f} s"


def _output_folder(path: str | Path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OSError(f"{path}: cannot write engines there ({exc.strerror or exc})") from exc
    return path


def _check_networks(onnx_dir: Path, networks: tuple[str, ...]) -> None:
    missing = [name for name in networks if find_onnx(onnx_dir, name, "plugin") is None]
    if missing:
        expected = "; ".join(
            f"{name} ({' or '.join(p.name for p in onnx_candidates(onnx_dir, name, 'plugin'))})" for name in missing
        )
        raise FileNotFoundError(f"{onnx_dir}: no ONNX file for {expected}; build the others with --only")


def _engine_builder(trt: Any, options: BuildOptions, plans: list[BuildPlan],
                    emit: Callable[[str], None]) -> EngineBuilder:
    cache_file = options.timing_cache
    settings = BuilderSettings(options.opt_level, options.hardware_compatible, options.workspace_gib)
    cache = cache_file.read_bytes() if cache_file and cache_file.is_file() else b""
    builder = EngineBuilder(trt, settings, cache, note=emit)
    if not builder.supports_fp16 and any(plan.precision == "fp16" for plan in plans):
        raise EngineBuildError(
            f"TensorRT {trt.__version__} has no fp16 builder flag (TensorRT 11 removed weakly typed builds); "
            "build with --fp32-only, or with TensorRT 10"
        )
    return builder


def build_engines(
    onnx_dir: str | Path,
    out_dir: str | Path,
    options: BuildOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[BuiltEngine]:
    """Build one engine per network (all contract networks, or `options.only`) into `out_dir`,
    named as the checkpoint configs name them; `progress` receives a line per step."""
    emit = progress or (lambda _line: None)
    options = options or BuildOptions()
    options.validate()
    onnx_dir = onnx_folder(onnx_dir)
    networks = tuple(dict.fromkeys(options.only)) or tuple(MODELS)
    _check_networks(onnx_dir, networks)
    plans = [plan_for(name, fp32_only=options.fp32_only, batch=options.batch) for name in networks]
    trt = import_tensorrt()
    builder = _engine_builder(trt, options, plans, emit)
    out = _output_folder(out_dir)  # created only once a build can follow
    form = grid_sample_form(trt.__version__, options.grid_sample)
    cache_file = options.timing_cache
    if "warp_network" in networks and form == "plugin":
        register_grid_sample_plugin()  # before parsing: the parser looks the plugin up by name
    built = []
    with tempfile.TemporaryDirectory(dir=out, prefix=".onnx-") as scratch:  # rewritten ONNX files
        # Every rewrite (and its checks) before the first build, which can take many minutes.
        prepared = [prepare_onnx(plan, find_onnx(onnx_dir, plan.network, form), form, Path(scratch))
                    for plan in plans]
        for index, (plan, onnx_file) in enumerate(zip(plans, prepared), 1):
            prefix = f"[{index}/{len(plans)}] {plan.network}"
            emit(f"{prefix}: building ({plan.describe()}) ...")
            started = time.perf_counter()
            engine = builder.build(plan, onnx_file)
            path = out / plan.engine_name
            write_atomic(path, engine)
            if cache_file is not None:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(cache_file, builder.serialized_timing_cache())
            built.append(BuiltEngine(plan, path, time.perf_counter() - started, path.stat().st_size))
            emit(f"{prefix}: {built[-1].summary()}")
    return built
