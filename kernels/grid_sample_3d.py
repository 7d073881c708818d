"""5-D trilinear grid sample, as ``torch.nn.functional.grid_sample(input, grid, mode="bilinear",
padding_mode="zeros", align_corners=False)`` on (N, C, D, H, W) input (DITTO_SPEC §4.3, §4.12).

This is the warp network's GridSample3D: LivePortrait samples the (1, 32, 16, 64, 64) feature volume
with a (1, 16, 64, 64, 3) deformation grid. Input fp16 or fp32; positions, weights and sums in
fp32 (the reference pins this op to fp32 even in its fp16 engine); output in the input's dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import launch_device

# One program samples BLOCK_P output points of one batch item for up to BLOCK_C channels: the
# position and the eight weights of a point are computed once and reused for every channel of the
# block. The compiler issues the eight corner gathers of a tile together (that memory-level
# parallelism is what a gather kernel lives on), so the tile size is set by registers: for sm_90
# ptxas gives a 32×64 tile over 4 warps 168-176 registers and no spills (three programs per SM),
# while 32×128 spills. LivePortrait's warp (C = 32, 16·64·64 points) then runs as 1024 programs,
# about eight per H100 SM. Along the points axis neighbouring threads take neighbouring output
# columns, whose corners lie side by side in a smooth deformation: the gathers mostly share cache
# lines (the whole 4-8 MB volume stays in L2) and the stores are coalesced.
BLOCK_P = 64
MAX_BLOCK_C = 32
NUM_WARPS = 4

_DTYPES = (torch.float16, torch.float32)


@triton.jit
def _clamp_coordinate(position, size):
    """`position` in [−2, size + 1], NaN → −2: a point outside reads zeros, as torch's."""
    position = tl.where(position != position, -2.0, position)
    return tl.minimum(tl.maximum(position, -2.0), size + 1.0)


@triton.jit
def _grid_sample_3d_kernel(input_ptr, grid_ptr, out_ptr, C, D, H, W, P,
                           BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    point_block = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)  # int64: the batch offset may pass 2**31 elements
    channel_block = tl.program_id(2)

    points = point_block * BLOCK_P + tl.arange(0, BLOCK_P)
    in_range = points < P
    grid_row = grid_ptr + batch * P * 3 + points * 3
    gx = tl.load(grid_row, mask=in_range, other=0.0).to(tl.float32)
    gy = tl.load(grid_row + 1, mask=in_range, other=0.0).to(tl.float32)
    gz = tl.load(grid_row + 2, mask=in_range, other=0.0).to(tl.float32)

    # align_corners=False: ((g + 1)·size − 1) / 2, the halving as an exact ·0.5 (Triton's fp32
    # division is an approximate one on the GPU). Clamping to [−2, size + 1] changes only points
    # whose corners all lie outside (they sample 0 either way); it keeps inf and NaN out of the
    # float → int conversion, matching torch's zeros there. NaN is replaced explicitly: whether
    # tl.maximum drops or propagates it differs between Triton versions (3.6's interpreter
    # propagates it) and hardware.
    x = _clamp_coordinate(((gx + 1.0) * W - 1.0) * 0.5, W)
    y = _clamp_coordinate(((gy + 1.0) * H - 1.0) * 0.5, H)
    z = _clamp_coordinate(((gz + 1.0) * D - 1.0) * 0.5, D)
    x_floor, y_floor, z_floor = tl.floor(x), tl.floor(y), tl.floor(z)
    x0, y0, z0 = x_floor.to(tl.int32), y_floor.to(tl.int32), z_floor.to(tl.int32)
    # torch's weight form: distance to the opposite corner, (x0 + 1) − x and x − x0.
    wx = ((x_floor + 1.0) - x, x - x_floor)
    wy = ((y_floor + 1.0) - y, y - y_floor)
    wz = ((z_floor + 1.0) - z, z - z_floor)
    inside_x = ((x0 >= 0) & (x0 < W), (x0 >= -1) & (x0 < W - 1))
    inside_y = ((y0 >= 0) & (y0 < H), (y0 >= -1) & (y0 < H - 1))
    inside_z = ((z0 >= 0) & (z0 < D), (z0 >= -1) & (z0 < D - 1))

    channels = channel_block * BLOCK_C + tl.arange(0, BLOCK_C)
    channel_ok = channels < C
    volume = D * H * W
    input_base = input_ptr + batch * C * volume
    channel_offsets = channels[:, None] * volume
    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.float32)
    # Corners in torch's order (z, then y, then x; low before high), each added as value·weight.
    for dz in tl.static_range(2):
        for dy in tl.static_range(2):
            for dx in tl.static_range(2):
                corner_ok = inside_x[dx] & inside_y[dy] & inside_z[dz] & in_range
                corner = ((z0 + dz) * H + (y0 + dy)) * W + (x0 + dx)
                weight = wx[dx] * wy[dy] * wz[dz]
                value = tl.load(input_base + channel_offsets + corner[None, :],
                                mask=channel_ok[:, None] & corner_ok[None, :], other=0.0)
                acc += value.to(tl.float32) * weight[None, :]

    out_offsets = batch * C * P + channels[:, None] * P + points[None, :]
    tl.store(out_ptr + out_offsets, acc.to(out_ptr.dtype.element_ty),
             mask=channel_ok[:, None] & in_range[None, :])


def grid_sample_3d(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Trilinear sample of `input` (N, C, D, H, W) at `grid` (N, Do, Ho, Wo, 3) → (N, C, Do, Ho, Wo).

    The grid's last axis is (x → W, y → H, z → D) in [−1, 1] with align_corners=False; points
    outside read zeros. `input` is fp16 or fp32 and sets the output dtype; `grid` is fp16 or fp32.
    Non-contiguous tensors are made contiguous first.
    """
    if input.dim() != 5:
        raise ValueError(f"grid_sample_3d: input must be (N, C, D, H, W), got shape {tuple(input.shape)}")
    if grid.dim() != 5 or grid.shape[-1] != 3:
        raise ValueError(f"grid_sample_3d: grid must be (N, Do, Ho, Wo, 3), got shape {tuple(grid.shape)}")
    if grid.shape[0] != input.shape[0]:
        raise ValueError(f"grid_sample_3d: grid batch {grid.shape[0]} differs from input batch {input.shape[0]}")
    if input.dtype not in _DTYPES:
        raise TypeError(f"grid_sample_3d: input must be float16 or float32, got {input.dtype}")
    if grid.dtype not in _DTYPES:
        raise TypeError(f"grid_sample_3d: grid must be float16 or float32, got {grid.dtype}")
    launch_device("grid_sample_3d", _grid_sample_3d_kernel, {"input": input, "grid": grid})
    if input[0].numel() >= 2**31:
        raise ValueError(f"grid_sample_3d: one batch item of input holds {input[0].numel()} elements; "
                         "the kernel indexes within an item in int32 (limit 2**31)")

    n, c, d, h, w = input.shape
    out = torch.empty((n, c, *grid.shape[1:4]), dtype=input.dtype, device=input.device)
    points = grid.shape[1] * grid.shape[2] * grid.shape[3]
    if out.numel() == 0:
        return out
    block_c = min(MAX_BLOCK_C, triton.next_power_of_2(c))
    launch_grid = (triton.cdiv(points, BLOCK_P), n, triton.cdiv(c, block_c))
    _grid_sample_3d_kernel[launch_grid](input.contiguous(), grid.contiguous(), out, c, d, h, w, points,
                                        BLOCK_C=block_c, BLOCK_P=BLOCK_P, num_warps=NUM_WARPS,
                                        enable_fp_fusion=True)  # stated: Triton 3.10 flips the default
    return out
