"""Checks every kernel wrapper makes before a launch: one device for all tensors, and one Triton can run on."""

from __future__ import annotations

import torch
from triton.runtime.interpreter import InterpretedFunction


def launch_device(op: str, kernel: object, tensors: dict[str, torch.Tensor]) -> torch.device:
    """The device the named `tensors` share, checked to be one that `kernel` can run on.

    CUDA tensors run compiled; CPU tensors only when Triton was imported with ``TRITON_INTERPRET=1``
    (the kernel was then built as an interpreted function), which is how the kernels are tested
    without a GPU. Errors name the operation `op` and the offending tensor.
    """
    devices = {name: tensor.device for name, tensor in tensors.items()}
    first_name, device = next(iter(devices.items()))
    for name, other in devices.items():
        if other != device:
            raise ValueError(f"{op}: {name} is on {other} but {first_name} is on {device}; "
                             "all tensors must share one device")
    if device.type == "cuda":
        return device
    if device.type == "cpu":
        if not isinstance(kernel, InterpretedFunction):
            raise RuntimeError(f"{op}: CPU tensors need TRITON_INTERPRET=1 set before triton is imported "
                               "(the interpreter); otherwise pass CUDA tensors")
        return device
    raise ValueError(f"{op}: tensors on {device} are not supported; use CUDA (or CPU under TRITON_INTERPRET=1)")
