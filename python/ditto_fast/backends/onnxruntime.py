"""ONNX Runtime backend: the default, on the CPU (and on CUDA when its provider is present).

Session options are set deliberately rather than left to defaults:
- intra-op threads = the thread budget (runtime/threads.py; by default the cores this process
  may use): the networks are large convolutions that scale with cores, and one session runs at
  a time per stage;
- inter-op threads = 1 and sequential execution: these graphs are chains, with little
  branch parallelism to win and thread contention to lose;
- full graph optimisation (constant folding, fusions);
- memory arena and memory patterns on: every input shape is fixed per network (hubert's
  length is fixed per call site), so allocations are planned once and reused.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from ditto_fast.backends.base import HostExecutor, MissingBackendError, fixed_batch
from ditto_fast.backends.onnx_clip_sampling import OnnxClipSampling
from ditto_fast.backends.onnx_gridsample import GridSampleRewriteError, native_model_path
from ditto_fast.contract import TensorInfo, check_model
from ditto_fast.errors import one_line
from ditto_fast.runtime.threads import resolve_threads

try:
    import onnxruntime as ort
except ImportError as exc:  # pragma: no cover - exercised only where onnxruntime is absent
    raise MissingBackendError(
        "the onnxruntime backend needs the onnxruntime package: pip install onnxruntime"
    ) from exc

# onnxruntime's type strings → NumPy dtype names used by the contract.
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """`threads`: the thread budget (runtime/threads.py), the intra-op threads of the session."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = resolve_threads(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = True
    options.enable_mem_pattern = True
    options.log_severity_level = 3  # errors only: warnings about unused initializers are noise
    return options


def providers_for(device: str) -> list[str]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise MissingBackendError(
                "device 'cuda' needs onnxruntime with CUDA: pip install onnxruntime-gpu"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")


def open_session(path: Path, name: str, providers: list[str], threads: int | None = None,
                 runnable: Callable[[Path], Path] = Path) -> ort.InferenceSession:
    """A session on the file `runnable(path)` gives; any failure but a GridSample rewrite's names `path`."""
    try:
        return ort.InferenceSession(str(runnable(path)), sess_options=session_options(threads), providers=providers)
    except GridSampleRewriteError:
        raise
    except Exception as exc:  # onnx and onnxruntime raise several unrelated error types
        raise ValueError(f"{path}: onnxruntime cannot load {name}: {one_line(exc)}") from exc


def _info(node) -> TensorInfo:
    shape = None if node.shape is None else tuple(node.shape)
    return TensorInfo(node.name, shape, _ORT_TYPES.get(node.type, node.type))


class OnnxRuntimeNetwork:
    """One ONNX network in an onnxruntime session, checked against the contract at load.

    LMDM also offers hoisted clip sampling (`clip_sampling`) when its hoisted graphs lie beside
    its file (backends/onnx_clip_sampling.py); otherwise `clip_sampling` is None.
    """

    def __init__(self, name: str, path: str | Path, device: str = "cpu",
                 threads: int | None = None) -> None:
        self.name = name
        self.path = Path(path)
        self.device = device
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: model file of {name} is missing")
        providers = providers_for(device)
        # A GridSample3D plugin form (warp network) runs as its native-GridSample rewrite.
        self._session = open_session(self.path, name, providers, threads, runnable=native_model_path)
        self.inputs = tuple(_info(i) for i in self._session.get_inputs())
        self.outputs = tuple(_info(o) for o in self._session.get_outputs())
        check_model(name, str(self.path), self.inputs, self.outputs)
        self.max_batch = fixed_batch(self.inputs)
        self._output_names = [o.name for o in self.outputs]
        self.clip_sampling = OnnxClipSampling.beside(
            self.path, partial(open_session, name=f"{name} (hoisted)", providers=providers, threads=threads)
        ) if name == "lmdm" else None

    def __call__(self, **arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(self._session.run(self._output_names, arrays))

    def executor(self, array_kind: str | None = None) -> HostExecutor | IoBindingExecutor:
        """On the CPU, the network itself on NumPy arrays (`run` is thread-safe); on CUDA, or with
        `array_kind="torch"`, an IO binding of this job's own on torch tensors, so inputs and
        outputs stay on the device."""
        if (array_kind or ("numpy" if self.device == "cpu" else "torch")) == "numpy":
            return HostExecutor(self)
        return IoBindingExecutor(self._session, self.outputs, self.device)

    def __repr__(self) -> str:
        return f"OnnxRuntimeNetwork({self.name!r}, {str(self.path)!r}, device={self.device!r})"


_TORCH_TO_ORT = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32,
                 "uint8": np.uint8, "bool": np.bool_}


class IoBindingExecutor:
    """One job's IO binding of a session on torch tensors: inputs are bound where they live, and
    outputs are allocated as torch tensors on the same device and bound before the run, so no
    array crosses to the host. Output shapes come from the contract, a symbolic leading dimension
    taking the inputs' batch size."""

    array_kind = "torch"

    def __init__(self, session: ort.InferenceSession, outputs: tuple[TensorInfo, ...], device: str) -> None:
        import torch  # only this executor needs torch: the CPU path runs on NumPy

        self._torch = torch
        self._session = session
        self._binding = session.io_binding()
        self._outputs = outputs
        self.device = device

    def _bind(self, name: str, tensor, bind) -> None:
        kind = tensor.device.type
        bind(name, kind, tensor.device.index or 0, _TORCH_TO_ORT[str(tensor.dtype).removeprefix("torch.")],
             tuple(tensor.shape), tensor.data_ptr())

    def __call__(self, **tensors):
        torch = self._torch
        inputs = {name: tensor.contiguous() for name, tensor in tensors.items()}
        batch = next(iter(inputs.values())).shape[0] if inputs else 1
        device = next(iter(inputs.values())).device if inputs else torch.device(self.device)
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        for name, tensor in inputs.items():
            self._bind(name, tensor, binding.bind_input)
        results = []
        for info in self._outputs:
            shape = tuple(batch if d is None or isinstance(d, str) else d for d in info.shape)
            out = torch.empty(shape, dtype=getattr(torch, info.dtype), device=device)
            self._bind(info.name, out, binding.bind_output)
            results.append(out)
        if device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()  # onnxruntime runs on its own stream
        self._session.run_with_iobinding(binding)
        return tuple(results)
