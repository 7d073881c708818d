"""Moving arrays onto a device: host arrays and DLPack producers to torch tensors, without making
the host wait for the device where that can be avoided."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_device_tensor(array: Any, device: torch.device | str) -> torch.Tensor:
    """A tensor on `device` from a NumPy array (a view, no copy, when `device` is the CPU), a
    tensor, or any DLPack producer such as a CuPy array (a view when it already lives on `device`)."""
    if isinstance(array, torch.Tensor):
        tensor = array
    elif isinstance(array, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    elif hasattr(array, "__dlpack__"):
        tensor = torch.from_dlpack(array)
    else:
        raise TypeError(f"as_device_tensor: a {type(array).__name__} is neither a NumPy array nor a DLPack producer")
    return tensor.to(torch.device(device))


def upload(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """A small host array on `device` without waiting for the device: on CUDA it is staged in
    pinned memory and copied asynchronously on the current stream (a plain copy from pageable
    memory would synchronise the stream, stalling the host behind all queued work)."""
    device = torch.device(device)
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor.to(device)
    # The pinned block goes back to torch's host allocator only once the copy has run.
    return tensor.pin_memory().to(device, non_blocking=True)
