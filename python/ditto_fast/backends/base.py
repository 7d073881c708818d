"""The protocol every network executor implements, in two parts (llama.cpp's split between a
model's weights and a context that runs it):

- a `Network` is a loaded file, shared by every job and thread of a `Renderer`. Calling it with
  NumPy arrays by input name returns a tuple of NumPy arrays in the contract's output order,
  whatever runs underneath (onnxruntime, torch, TensorRT): the stages use it on host data.
- an `Executor` (`network.executor()`) is one job's execution state for that network (a
  TensorRT execution context and stream, an onnxruntime IO binding, a torch module prepared
  under the precision policy). It takes and returns *device arrays*: NumPy arrays for a
  CPU network, torch tensors on the network's device otherwise (`array_kind` says which), so
  the frame renderer keeps its data where it is computed. An executor is used by one thread
  at a time; a job that runs on several threads makes one per thread.

An LMDM network may also offer hoisted sampling of whole clips as its `clip_sampling`
attribute (backends/clip_sampling.py); the protocol does not require it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from ditto_fast.contract import TensorInfo

ArrayKind = Literal["numpy", "torch"]


@runtime_checkable
class Executor(Protocol):
    device: str  # "cpu" or "cuda[:N]"
    array_kind: ArrayKind  # what __call__ takes and returns

    def __call__(self, **arrays: Any) -> tuple[Any, ...]: ...


@runtime_checkable
class Network(Protocol):
    name: str  # the network's contract name, e.g. "warp_network"
    path: Path  # the file it was loaded from
    device: str  # "cpu" or "cuda[:N]"
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    max_batch: int | None  # the largest batch its file takes (None: any)

    def __call__(self, **arrays: np.ndarray) -> tuple[np.ndarray, ...]: ...

    def executor(self) -> Executor: ...


class HostExecutor:
    """The executor of a network that runs on host arrays: its own `__call__`, which is safe to
    share (onnxruntime's `InferenceSession.run` may be called from several threads at once)."""

    array_kind: ArrayKind = "numpy"

    def __init__(self, network: Network) -> None:
        self.network = network
        self.device = getattr(network, "device", "cpu")

    def __call__(self, **arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.network(**arrays)


def fixed_batch(inputs: tuple[TensorInfo, ...]) -> int | None:
    """The batch a file fixes: its first input's leading dimension when that is a number."""
    leading = inputs[0].shape[0] if inputs and inputs[0].shape else None
    return leading if isinstance(leading, int) and leading > 0 else None


def executor_of(network: Network) -> Executor:
    """A new executor of `network`; a network that implements only the NumPy call (a stand-in, a
    caller's own) runs as a host network."""
    make = getattr(network, "executor", None)
    return make() if make is not None else HostExecutor(network)


class MissingBackendError(ImportError):
    """An optional package a backend needs is not installed."""
