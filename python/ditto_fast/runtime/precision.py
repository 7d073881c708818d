"""Precision policy per network, and modules prepared to run under it on a device.

The reference's TensorRT engines run fp16 for every network except the motion extractor,
HuBERT and LMDM, which it keeps in fp32 (DITTO_SPEC §7; the motion extractor's pose bins and
the diffusion are precision-sensitive), and it pins the warp network's GridSample layers to
fp32. Here fp16 is torch's autocast, on CUDA only: on the CPU fp16 kernels are slow and the
reference's fp32 numbers are the ones to match, so everything runs in fp32 there.

GridSample stays fp32 under fp16 autocast without help: the warp network samples with grids
built from the fp32 keypoints and softmax outputs (autocast runs softmax in fp32), and
autocast promotes grid_sample to its widest input type.

Convolution networks use channels-last on CUDA, where cuDNN's fp16 tensor-core kernels want
NHWC (NDHWC for the 3-D convolutions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

FP16_IN_REFERENCE = frozenset({"appearance_extractor", "warp_network", "decoder", "stitch_network"})
FP32_IN_REFERENCE = frozenset({"motion_extractor", "lmdm", "hubert"})
CONVOLUTION_NETWORKS = frozenset({"appearance_extractor", "motion_extractor", "warp_network", "decoder"})


@dataclass(frozen=True)
class Precision:
    """How one network runs: `compute_dtype` is the autocast dtype (float32: no autocast)."""

    compute_dtype: torch.dtype = torch.float32
    channels_last: bool = False

    @property
    def autocast(self) -> bool:
        return self.compute_dtype != torch.float32


def precision_for(name: str, device: torch.device | str) -> Precision:
    """The policy for network `name` on `device` (see the module docstring)."""
    if name not in FP16_IN_REFERENCE | FP32_IN_REFERENCE:
        known = sorted(FP16_IN_REFERENCE | FP32_IN_REFERENCE)
        raise ValueError(f"precision policy: unknown network {name!r}; expected one of {known}")
    if torch.device(device).type != "cuda":
        return Precision()
    dtype = torch.float16 if name in FP16_IN_REFERENCE else torch.float32
    return Precision(dtype, channels_last=name in CONVOLUTION_NETWORKS)


def to_memory_format(tensor: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """`tensor` in channels-last order (4-D: NHWC, 5-D: NDHWC) when asked; other ranks unchanged."""
    if not channels_last or tensor.dim() not in (4, 5):
        return tensor
    layout = torch.channels_last if tensor.dim() == 4 else torch.channels_last_3d
    return tensor.contiguous(memory_format=layout)


def prepare_module(module: nn.Module, device: torch.device | str, precision: Precision) -> nn.Module:
    """Move `module` to `device` for inference under `precision`, in place (as `nn.Module.to`).

    Weights stay fp32: autocast casts them per call, which keeps fp32 ops (GridSample,
    softmax, norms) fed with fp32 parameters. Channels-last is applied per tensor rank, since
    `nn.Module.to(memory_format=...)` accepts one rank only.
    """
    module = module.to(torch.device(device)).eval().requires_grad_(False)
    for tensor in (*module.parameters(), *module.buffers()):
        tensor.data = to_memory_format(tensor.data, precision.channels_last)
    return module


def run_under(precision: Precision, module: nn.Module, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """`module(*tensors)` for inference under `precision` (a module prepared by `prepare_module`),
    with tensors on its device. Outputs are fp32 (fp16 results are cast back), in the module's
    output order, in whatever memory format the module produced (a channels-last decoder output is
    already HWC-ordered)."""
    tensors = tuple(to_memory_format(t, precision.channels_last) for t in tensors)
    device_type = tensors[0].device.type if tensors else "cpu"
    # cache_enabled=False: autocast's weight-cast cache cannot live across CUDA-graph capture.
    with torch.inference_mode(), torch.autocast(device_type, dtype=precision.compute_dtype,
                                                enabled=precision.autocast, cache_enabled=False):
        result = module(*tensors)
    result = result if isinstance(result, tuple) else (result,)
    return tuple(r.float() if r.is_floating_point() else r for r in result)
