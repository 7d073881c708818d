"""TensorRT backend: a deserialised engine (shared) and per-job execution contexts.

Uses TensorRT's name-based tensor API (TensorRT >= 10: `set_tensor_address` +
`execute_async_v3`). An engine may serve many contexts at once, a context only one call at a
time: `TensorRTNetwork` holds the engine, and each `executor()` owns an execution context and a
CUDA stream, so jobs sharing one Renderer never share a context. Device buffers are torch CUDA
tensors, so outputs are handed to the rest of a device-resident pipeline without a copy; an
executor's outputs are ready for work queued on the caller's stream (the caller's stream waits
on the executor's). The NumPy `__call__` of the Network protocol runs through an executor of
the calling thread's own.

Engines built by the reference's converter (TensorRT 8.6) do not load on TensorRT 10; rebuild
them from the ONNX files with `ditto-fast build-engines`, whose warp engine runs GridSample3D
through a Python plugin this backend registers before loading it. The reference's engines
expose LMDM's `time_cond` as int32 where the ONNX graph says int64; this backend accepts either
and casts at the boundary.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ditto_fast.backends.base import MissingBackendError, fixed_batch
from ditto_fast.contract import MODELS, TensorInfo, check_model

try:
    import tensorrt as trt
except ImportError as exc:
    raise MissingBackendError(
        "the tensorrt backend needs NVIDIA TensorRT's Python package (pip install tensorrt) "
        "and an NVIDIA GPU"
    ) from exc
try:
    import torch
except ImportError as exc:
    raise MissingBackendError(
        "the tensorrt backend keeps its buffers in torch CUDA tensors: pip install torch"
    ) from exc

_TRT_TO_NUMPY = {
    trt.float32: "float32",
    trt.float16: "float16",
    trt.int32: "int32",
    trt.int64: "int64",
    trt.int8: "int8",
    trt.bool: "bool",
}
_NUMPY_TO_TORCH = {
    "float32": torch.float32, "float16": torch.float16, "int32": torch.int32,
    "int64": torch.int64, "int8": torch.int8, "bool": torch.bool,
}

_LOGGER = trt.Logger(trt.Logger.WARNING)
# Registers TensorRT's own plugins once; engines serialised with their plugin library
# (plugins_to_serialize) bring theirs along.
trt.init_libnvinfer_plugins(_LOGGER, "")


def _register_plugins(network: str) -> str:
    """Register the Python plugin a warp engine built by `ditto-fast build-engines` runs its
    GridSample3D with (TensorRT looks it up while deserialising); returns why it could not be
    registered, or '' (engines with TensorRT's own 5-D GridSample do not need it)."""
    if network != "warp_network":
        return ""
    from ditto_fast.backends.tensorrt_plugin import register_grid_sample_plugin

    try:
        register_grid_sample_plugin()
    except ImportError as exc:
        return f"; its GridSample3D plugin could not be registered: {exc}"
    return ""


def _contract_dtype(network: str, name: str, engine_dtype: str) -> str:
    """The dtype to check against the contract: an int32 engine tensor where the contract
    says int64 is the TensorRT 8.6 convention, cast at the boundary, not a mismatch."""
    spec = next((t for t in MODELS[network].inputs if t.name == name), None)
    if spec is not None and spec.dtype == "int64" and engine_dtype == "int32":
        return "int64"
    return engine_dtype


class TensorRTNetwork:
    """One deserialised engine, bound by tensor name; shared by every job of a Renderer."""

    def __init__(self, name: str, path: str | Path, device: str = "cuda") -> None:
        self.name = name
        self.path = Path(path)
        self.device = device
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: engine of {name} is missing")
        self.torch_device = torch.device(device)
        plugin_problem = _register_plugins(name)
        runtime = trt.Runtime(_LOGGER)
        self.engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise ValueError(
                f"{self.path}: TensorRT {trt.__version__} cannot deserialise this engine (built "
                "by another TensorRT version or for another GPU?); rebuild it from the ONNX "
                f"file with TensorRT {trt.__version__} on this GPU (ditto-fast build-engines){plugin_problem}"
            )
        self.engine_dtypes: dict[str, str] = {}
        inputs, outputs = [], []
        for index in range(self.engine.num_io_tensors):
            tensor = self.engine.get_tensor_name(index)
            dtype = _TRT_TO_NUMPY.get(self.engine.get_tensor_dtype(tensor), "unsupported")
            self.engine_dtypes[tensor] = dtype
            shape = tuple(d if d >= 0 else None for d in self.engine.get_tensor_shape(tensor))
            if self.engine.get_tensor_mode(tensor) == trt.TensorIOMode.INPUT:
                inputs.append(TensorInfo(tensor, shape, _contract_dtype(name, tensor, dtype)))
            else:
                outputs.append(TensorInfo(tensor, shape, dtype))
        # TensorRT lists outputs in network order; the contract's order is what callers get.
        order = {t.name: i for i, t in enumerate(MODELS[name].outputs)}
        outputs.sort(key=lambda t: order.get(t.name, len(order)))
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)
        check_model(name, str(self.path), self.inputs, self.outputs)
        # A dynamic batch is bounded by the engine's optimisation profile, checked when it runs.
        self.max_batch = fixed_batch(self.inputs)
        self._per_thread = threading.local()  # the NumPy __call__'s executor, one per calling thread

    def executor(self) -> TensorRTExecutor:
        """A new execution context with a CUDA stream of its own (one job's state)."""
        return TensorRTExecutor(self)

    def __call__(self, **arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        executor = getattr(self._per_thread, "executor", None)
        if executor is None:
            executor = self._per_thread.executor = self.executor()
        device_inputs = {name: torch.from_numpy(np.ascontiguousarray(a)).to(self.torch_device)
                         for name, a in arrays.items()}
        outputs = executor(**device_inputs)
        return tuple(o.cpu().numpy() for o in outputs)  # .cpu() waits for the current stream

    def __repr__(self) -> str:
        return f"TensorRTNetwork({self.name!r}, {str(self.path)!r}, device={self.device!r})"


class TensorRTExecutor:
    """An execution context of a `TensorRTNetwork` and the CUDA stream it runs on."""

    array_kind = "torch"

    def __init__(self, network: TensorRTNetwork) -> None:
        self.network = network
        self.device = network.device
        self.stream = torch.cuda.Stream(device=network.torch_device)
        self.context = network.engine.create_execution_context()
        if self.context is None:
            raise RuntimeError(f"{network.path}: TensorRT could not create an execution context (out of memory?)")

    def __call__(self, **tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run on device tensors by input name (cast to the engine's dtypes); returns device tensors
        that work queued on the caller's current stream may use at once."""
        network, context = self.network, self.context
        caller = torch.cuda.current_stream(network.torch_device)
        keep_alive = []
        for info in network.inputs:
            wanted = _NUMPY_TO_TORCH[network.engine_dtypes[info.name]]
            tensor = tensors[info.name].to(network.torch_device, wanted).contiguous()
            keep_alive.append(tensor)
            context.set_input_shape(info.name, tuple(tensor.shape))
            context.set_tensor_address(info.name, tensor.data_ptr())
        outputs = []
        for info in network.outputs:
            shape = tuple(context.get_tensor_shape(info.name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"{network.path}: output {info.name!r} has a data-dependent shape {shape}, "
                                   "which this backend does not support")
            out = torch.empty(shape, dtype=_NUMPY_TO_TORCH[info.dtype], device=network.torch_device)
            context.set_tensor_address(info.name, out.data_ptr())
            outputs.append(out)
        # The inputs come from the caller's stream: order this one after it, and the caller after us.
        self.stream.wait_stream(caller)
        if not context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"{network.path}: TensorRT failed to enqueue {network.name}")
        for tensor in (*keep_alive, *outputs):
            tensor.record_stream(self.stream)  # not freed before the stream has used them
        caller.wait_stream(self.stream)
        return tuple(outputs)
