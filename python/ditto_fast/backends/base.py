"""The one protocol every network executor implements.

Stages call networks with NumPy arrays by input name and receive a tuple of arrays in the
contract's output order, whatever runs underneath (onnxruntime, torch, TensorRT).

An LMDM network may also offer hoisted sampling of whole clips as its `clip_sampling`
attribute (backends/clip_sampling.py); the protocol below does not require it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ditto_fast.contract import TensorInfo


@runtime_checkable
class Network(Protocol):
    name: str  # the network's contract name, e.g. "warp_network"
    path: Path  # the file it was loaded from
    device: str  # "cpu" or "cuda[:N]"
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def __call__(self, **arrays: np.ndarray) -> tuple[np.ndarray, ...]: ...


class MissingBackendError(ImportError):
    """An optional package a backend needs is not installed."""
