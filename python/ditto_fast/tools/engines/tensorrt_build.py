"""The TensorRT side of an engine build: network, ONNX parser, builder config, timing cache.

Written against TensorRT 10's Python API. fp32 plans use strongly typed networks: every
layer runs in the ONNX graph's own types, the same on TensorRT 10 and 11. fp16 plans use
TensorRT 10's weak typing (the FP16 builder flag, with OBEY_PRECISION_CONSTRAINTS so the
layers pinned to fp32 stay there); TensorRT 11 removed weak typing, so there fp16 plans are
refused with a one-line error rather than built differently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ditto_fast.backends.base import MissingBackendError
from ditto_fast.tools.engines.onnx_prep import PreparedOnnx
from ditto_fast.tools.engines.plan import BuildPlan

# Layers that only move or describe data: pinning them to fp32 would add casts, not accuracy.
_DATA_LAYER_TYPES = ("SHAPE", "CONSTANT", "SHUFFLE", "IDENTITY", "GATHER", "SLICE", "CONCATENATION",
                     "CAST", "ASSERTION")


class EngineBuildError(RuntimeError):
    """TensorRT could not parse or build a network."""


@dataclass(frozen=True)
class BuilderSettings:
    opt_level: int = 5
    hardware_compatible: bool = False  # Ampere-and-newer portable engines
    workspace_gib: float | None = None  # None: TensorRT's default (the GPU's memory)


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise MissingBackendError(
            f"building engines needs NVIDIA TensorRT 10's Python package (import tensorrt failed: {exc}); "
            "install it on a machine with an NVIDIA GPU: pip install tensorrt"
        ) from exc
    return tensorrt


def _from_nodes(layer_name: str, node_names: Sequence[str]) -> bool:
    """Whether a layer came from one of the nodes: the parser names a node's main layer after
    the node and any helper layer after it plus a `_N` suffix."""
    return any(layer_name == node or layer_name.startswith(f"{node}_") for node in node_names)


class EngineBuilder:
    """One TensorRT builder and one timing cache, shared by every network of a run."""

    def __init__(self, trt: Any, settings: BuilderSettings, timing_cache: bytes = b"",
                 note: Callable[[str], None] | None = None) -> None:
        self.trt = trt
        self.settings = settings
        self._logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(self._logger, "")  # TensorRT's own plugins, for any ONNX op needing one
        self._builder = trt.Builder(self._logger)
        self._cache_blob = timing_cache
        self._timing_cache = None
        self._note = note or (lambda _line: None)

    @property
    def supports_fp16(self) -> bool:
        """Whether this TensorRT still has weakly typed fp16 builds (TensorRT 11 removed them)."""
        return hasattr(self.trt.BuilderFlag, "FP16")

    def build(self, plan: BuildPlan, onnx: PreparedOnnx) -> Any:
        """Parse and build one network; returns the serialised engine (a buffer)."""
        trt = self.trt
        flags = 0 if plan.precision == "fp16" else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = self._builder.create_network(flags)
        # The parser owns weights the network refers to: it must live until the build is done.
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse_from_file(str(onnx.path)):
            errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
            more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
            raise EngineBuildError(
                f"{onnx.path}: TensorRT cannot parse {plan.network}: {errors[0] if errors else 'no reason given'}{more}"
            )
        self._check_profile_inputs(network, plan, onnx.path)
        if onnx.fp32_layers:
            self._pin_fp32(network, onnx.fp32_layers, plan)
        serialized = self._builder.build_serialized_network(network, self._config(plan))
        if serialized is None:
            raise EngineBuildError(
                f"{onnx.path}: TensorRT could not build the {plan.network} engine (its log above says why)"
            )
        return serialized

    def serialized_timing_cache(self) -> Any:
        """The timing cache as it stands after the builds so far (a buffer), or None before any."""
        return None if self._timing_cache is None else self._timing_cache.serialize()

    def _config(self, plan: BuildPlan) -> Any:
        trt, settings = self.trt, self.settings
        config = self._builder.create_builder_config()
        config.builder_optimization_level = settings.opt_level
        if settings.hardware_compatible:
            config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
        if settings.workspace_gib:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gib * 2**30))
        # TensorRT allows TF32 by default; the reference's engines were built without it
        # (polygraphy's default), so fp32 layers really are fp32.
        config.clear_flag(trt.BuilderFlag.TF32)
        if plan.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        if plan.profiles:
            profile = self._builder.create_optimization_profile()
            for shapes in plan.profiles:
                profile.set_shape(shapes.input, shapes.min, shapes.opt, shapes.max)
            config.add_optimization_profile(profile)
        self._attach_timing_cache(config)
        return config

    def _attach_timing_cache(self, config: Any) -> None:
        if self._timing_cache is None:
            self._timing_cache = config.create_timing_cache(self._cache_blob)
            if self._timing_cache is None:  # an unreadable file: start afresh
                self._note("note: the timing cache file is not a TensorRT timing cache; starting a new one")
                self._timing_cache = config.create_timing_cache(b"")
        if not config.set_timing_cache(self._timing_cache, False):
            self._note("note: the timing cache was made by another TensorRT or GPU; starting a new one")
            self._timing_cache = config.create_timing_cache(b"")
            config.set_timing_cache(self._timing_cache, False)

    def _check_profile_inputs(self, network: Any, plan: BuildPlan, path: Path) -> None:
        inputs = {network.get_input(i).name for i in range(network.num_inputs)}
        for shapes in plan.profiles:
            if shapes.input not in inputs:
                raise EngineBuildError(
                    f"{path}: {plan.network} has no input {shapes.input!r} to give a shape profile "
                    f"(inputs: {sorted(inputs)})"
                )

    def _pin_fp32(self, network: Any, node_names: Sequence[str], plan: BuildPlan) -> None:
        trt = self.trt
        skipped = {getattr(trt.LayerType, name) for name in _DATA_LAYER_TYPES if hasattr(trt.LayerType, name)}
        pinned: set[str] = set()
        for index in range(network.num_layers):
            layer = network.get_layer(index)
            if layer.type in skipped or not _from_nodes(layer.name, node_names):
                continue
            layer.precision = trt.float32
            for output in range(layer.num_outputs):
                layer.set_output_type(output, trt.float32)
            pinned.update(node for node in node_names if _from_nodes(layer.name, [node]))
        missing = [node for node in node_names if node not in pinned]
        if missing:
            raise EngineBuildError(
                f"{plan.network}: no TensorRT layer came from the ONNX nodes {missing} to keep in fp32"
            )
