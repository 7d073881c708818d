"""TensorRT backend: a deserialised engine with named tensors, run on a given CUDA stream.

Uses TensorRT's name-based tensor API (TensorRT >= 10: `set_tensor_address` +
`execute_async_v3`). Device buffers are torch CUDA tensors, so engine outputs can be handed
to the rest of a device-resident pipeline without a copy (`run_on_device`); the NumPy
`__call__` of the Network protocol copies in and out around it.

Engines built by the reference's converter (TensorRT 8.6) do not load on TensorRT 10; rebuild
them from the ONNX files with `ditto-fast build-engines`, whose warp engine runs GridSample3D
through a Python plugin this backend registers before loading it. The reference's engines
expose LMDM's `time_cond` as int32 where the ONNX graph says int64; this backend accepts either
and casts at the boundary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ditto_fast.backends.base import MissingBackendError
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
    from ditto_fast.trt_build.plugin import register_grid_sample_plugin

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
    """One engine and its execution context, bound by tensor name."""

    def __init__(self, name: str, path: str | Path, device: str = "cuda",
                 stream: torch.cuda.Stream | None = None) -> None:
        self.name = name
        self.path = Path(path)
        self.device = device
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: engine of {name} is missing")
        self._device = torch.device(device)
        self.stream = stream or torch.cuda.Stream(device=self._device)
        plugin_problem = _register_plugins(name)
        runtime = trt.Runtime(_LOGGER)
        self._engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise ValueError(
                f"{self.path}: TensorRT {trt.__version__} cannot deserialise this engine (built "
                "by another TensorRT version or for another GPU?); rebuild it from the ONNX "
                f"file with TensorRT {trt.__version__} on this GPU (ditto-fast build-engines){plugin_problem}"
            )
        self._context = self._engine.create_execution_context()
        self._engine_dtypes: dict[str, str] = {}
        inputs, outputs = [], []
        for index in range(self._engine.num_io_tensors):
            tensor = self._engine.get_tensor_name(index)
            dtype = _TRT_TO_NUMPY.get(self._engine.get_tensor_dtype(tensor), "unsupported")
            self._engine_dtypes[tensor] = dtype
            shape = tuple(d if d >= 0 else None for d in self._engine.get_tensor_shape(tensor))
            if self._engine.get_tensor_mode(tensor) == trt.TensorIOMode.INPUT:
                inputs.append(TensorInfo(tensor, shape, _contract_dtype(name, tensor, dtype)))
            else:
                outputs.append(TensorInfo(tensor, shape, dtype))
        # TensorRT lists outputs in network order; the contract's order is what callers get.
        order = {t.name: i for i, t in enumerate(MODELS[name].outputs)}
        outputs.sort(key=lambda t: order.get(t.name, len(order)))
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)
        check_model(name, str(self.path), self.inputs, self.outputs)

    def run_on_device(self, **tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run on device tensors; returns device tensors, valid once `self.stream` has run.

        Inputs must live on this network's device; they are cast to the engine's dtypes.
        """
        keep_alive = []
        for info in self.inputs:
            tensor = tensors[info.name]
            wanted = _NUMPY_TO_TORCH[self._engine_dtypes[info.name]]
            tensor = tensor.to(self._device, wanted).contiguous()
            keep_alive.append(tensor)
            self._context.set_input_shape(info.name, tuple(tensor.shape))
            self._context.set_tensor_address(info.name, tensor.data_ptr())
        outputs = []
        for info in self.outputs:
            shape = tuple(self._context.get_tensor_shape(info.name))
            out = torch.empty(shape, dtype=_NUMPY_TO_TORCH[info.dtype], device=self._device)
            self._context.set_tensor_address(info.name, out.data_ptr())
            outputs.append(out)
        # The caller's tensors may come from another stream: order this stream after it.
        self.stream.wait_stream(torch.cuda.current_stream(self._device))
        if not self._context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"{self.path}: TensorRT failed to enqueue {self.name}")
        for tensor in (*keep_alive, *outputs):
            tensor.record_stream(self.stream)  # not freed before the stream has used them
        return tuple(outputs)

    def __call__(self, **arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.cuda.stream(self.stream):
            device_inputs = {
                name: torch.from_numpy(np.ascontiguousarray(a)).to(self._device, non_blocking=True)
                for name, a in arrays.items()
            }
            outputs = self.run_on_device(**device_inputs)
            host = [o.to("cpu", non_blocking=True) for o in outputs]
        self.stream.synchronize()
        return tuple(h.numpy() for h in host)

    def __repr__(self) -> str:
        return f"TensorRTNetwork({self.name!r}, {str(self.path)!r}, device={self.device!r})"
