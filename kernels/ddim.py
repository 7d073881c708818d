"""The LMDM sampler's DDIM step (DITTO_SPEC §5.10; stages/motion.py DDIMSampler.sample) on the device.

Update i: x = x0·√ᾱ_next[i] + c[i]·ε + σ[i]·noise[i], elementwise in float32 and evaluated as the
reference's NumPy expression is, ((x0·a + c·ε) + σ·noise), with fused multiply-adds disabled: every
operation rounds as NumPy's does, so the result is bit-identical to DDIMSampler's (checked in
Triton's interpreter; on the GPU the same IEEE operations in the same order). The last step
returns x0 itself.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import triton
import triton.language as tl

from .launch import launch_device


class DdimTables(Protocol):
    """The sampler's per-step tables (ditto_fast.diffusion_schedule.DdimTables has this shape)."""

    time_pairs: np.ndarray  # (S, 2) int64
    alpha_next_sqrt: np.ndarray  # (S-1,) float32
    sigma: np.ndarray
    c: np.ndarray


# A (1, 80, 265) clip is 21,200 floats: 21 programs of 1024, 8 per thread over 4 warps (two 16-byte
# loads per tensor a thread). The step is a few microseconds of launch latency either way; the
# spec's plan puts all 49 updates of a clip in one CUDA graph, and every launch here is capturable
# (no host synchronisation, coefficients passed as scalars).
BLOCK = 1024
NUM_WARPS = 4


@triton.jit
def _ddim_update_kernel(x_start_ptr, pred_noise_ptr, noise_ptr, out_ptr, alpha_next_sqrt, c, sigma, numel,
                        BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offsets < numel
    x_start = tl.load(x_start_ptr + offsets, mask=ok)
    pred_noise = tl.load(pred_noise_ptr + offsets, mask=ok)
    noise = tl.load(noise_ptr + offsets, mask=ok)
    tl.store(out_ptr + offsets, x_start * alpha_next_sqrt + c * pred_noise + sigma * noise, mask=ok)


def ddim_update(x_start: torch.Tensor, pred_noise: torch.Tensor, noise: torch.Tensor,
                alpha_next_sqrt: float, c: float, sigma: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """x_start·alpha_next_sqrt + c·pred_noise + sigma·noise for float32 tensors of one shape; the
    coefficients are rounded to float32 (as the reference's tables are). `out` may be any of the
    inputs (elementwise, so in place is safe) or a separate float32 tensor of the shape."""
    tensors = {"x_start": x_start, "pred_noise": pred_noise, "noise": noise}
    for name, tensor in tensors.items():
        if tensor.dtype != torch.float32:
            raise TypeError(f"ddim_update: {name} must be float32, got {tensor.dtype}")
        if tensor.shape != x_start.shape:
            raise ValueError(f"ddim_update: {name} has shape {tuple(tensor.shape)}, x_start {tuple(x_start.shape)}")
        if not tensor.is_contiguous():
            raise ValueError(f"ddim_update: {name} must be contiguous")
    if out is None:
        out = torch.empty_like(x_start)
    elif out.dtype != torch.float32 or out.shape != x_start.shape or not out.is_contiguous():
        raise ValueError(f"ddim_update: out must be a contiguous float32 tensor of shape {tuple(x_start.shape)}, "
                         f"got {tuple(out.shape)} {out.dtype}")
    launch_device("ddim_update", _ddim_update_kernel, tensors | {"out": out})
    numel = x_start.numel()
    if numel == 0:
        return out
    _ddim_update_kernel[(triton.cdiv(numel, BLOCK),)](
        x_start, pred_noise, noise, out, alpha_next_sqrt, c, sigma, numel,
        BLOCK=BLOCK, num_warps=NUM_WARPS, enable_fp_fusion=False)  # NumPy rounds each product: no FMAs
    return out


def ddim_step(x_start: torch.Tensor, pred_noise: torch.Tensor, tables: DdimTables, step: int,
              step_noise: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Step `step` of the sampler given the network's outputs: the update with the tables' entry
    `step` and `step_noise[step]` ((num_steps − 1, ...) on the device, the sampler's fixed noise),
    or x_start itself on the last step (its t_next is −1), copied into `out` when given."""
    num_steps = len(tables.time_pairs)
    if not 0 <= step < num_steps:
        raise ValueError(f"ddim_step: step must be in [0, {num_steps}), got {step}")
    if tables.time_pairs[step, 1] < 0:
        return x_start if out is None else out.copy_(x_start)
    if step_noise.dim() == 0 or step_noise.shape[0] != num_steps - 1:
        raise ValueError(f"ddim_step: step_noise must hold {num_steps - 1} tensors along its first axis, "
                         f"got shape {tuple(step_noise.shape)}")
    return ddim_update(x_start, pred_noise, step_noise[step], float(tables.alpha_next_sqrt[step]),
                       float(tables.c[step]), float(tables.sigma[step]), out=out)
