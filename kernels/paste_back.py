"""Fused paste-back (DITTO_SPEC §5.14, §6 "Paste-back"): decoder output → ×255 → inverse-affine
bilinear sample → mask blend → uint8, in one pass over the frame.

Per frame pixel, as the reference's two ``cv2.warpAffine`` calls and its blend:
    face  = Σ w·clip(render, 0, 1)·255 and mask_w = clip(Σ w·mask, 0, 1) over the 2×2 source taps
            (zero outside the source) at M⁻¹·(x, y), M = m_c2o,
    out   = uint8(clip(mask_w·face + (1 − mask_w)·frame, 0, 255))  (truncated).
The sample positions follow OpenCV 4.x's fixed-point rule (1/32 px cells, tabulated weights): the
caller computes the per-row and per-column integer parts in float64 (ditto_fast.ops.paste_geometry,
shared with the torch version) and the kernel only adds and shifts them. This module imports
nothing from the package: it is a leaf that takes its geometry as tensors. The float sums
run in OpenCV's order with fused multiply-adds disabled (for sm_90 the kernel compiles to
mul.rn/add.rn, no fma, and a truncating cvt.rzi), so every operation is the reference's IEEE
float32 operation. In Triton's interpreter the output is byte-identical to tests/paste_reference.py
and to the reference's golden put-back; on the GPU it should be too, and a ±1 would mean that a
compiler had reassociated a sum (the tests allow ±1 there on at most 0.1 % of the values).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import launch_device

# One program blends an 8×64 tile of frame pixels with 4 warps: 4 pixels a thread, each with 16
# gathers (2×2 taps of three render planes and the mask). Rows of 64 keep a warp's frame loads and
# uint8 stores within a few 192-byte spans; 8 rows give the 2-D locality that the scaled render
# reads want (neighbouring frame rows read neighbouring source rows, the 3 MB render sits in L2).
# ptxas gives it 94 registers on sm_90 (five programs resident per SM, no spills). A 1432² frame
# is 23×179 programs (about 31 per H100 SM); a 700² crop window alone 11×88.
BLOCK_Y = 8
BLOCK_X = 64
NUM_WARPS = 4

_RENDER_DTYPES = (torch.float16, torch.float32)


@triton.jit
def _paste_back_kernel(frame_ptr, out_ptr, render_ptr, mask_ptr, cols_ptr, rows_ptr,
                       frame_width, left, top, rect_width, rect_height, source_height, source_width,
                       AB_TO_CELLS: tl.constexpr, INTER_BITS: tl.constexpr,
                       BLOCK_Y: tl.constexpr, BLOCK_X: tl.constexpr):
    i = tl.program_id(0) * BLOCK_X + tl.arange(0, BLOCK_X)
    j = tl.program_id(1) * BLOCK_Y + tl.arange(0, BLOCK_Y)
    col_ok = i < rect_width
    row_ok = j < rect_height
    # Positions in 1/32 px: (per-row part + per-column part) >> (AB_BITS − INTER_BITS), an
    # arithmetic shift (rounds toward −∞ for positions left of or above the source).
    col_x = tl.load(cols_ptr + i, mask=col_ok, other=0)
    col_y = tl.load(cols_ptr + rect_width + i, mask=col_ok, other=0)
    row_x = tl.load(rows_ptr + j, mask=row_ok, other=0)
    row_y = tl.load(rows_ptr + rect_height + j, mask=row_ok, other=0)
    px = (row_x[:, None] + col_x[None, :]) >> AB_TO_CELLS
    py = (row_y[:, None] + col_y[None, :]) >> AB_TO_CELLS
    sx = (px >> INTER_BITS).to(tl.int32)
    sy = (py >> INTER_BITS).to(tl.int32)
    # Weights as OpenCV tabulates them: products of (1 − f/32, f/32), all exact in float32.
    wx1 = (px & ((1 << INTER_BITS) - 1)).to(tl.float32) * (1.0 / (1 << INTER_BITS))
    wy1 = (py & ((1 << INTER_BITS) - 1)).to(tl.float32) * (1.0 / (1 << INTER_BITS))
    wx0 = 1.0 - wx1
    wy0 = 1.0 - wy1
    weights = (wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1)

    pixel_ok = row_ok[:, None] & col_ok[None, :]
    taps = ()
    tap_ok = ()
    for k in tl.static_range(4):
        x = sx + (k % 2)
        y = sy + (k // 2)
        taps += (y * source_width + x,)
        tap_ok += (pixel_ok & (x >= 0) & (x < source_width) & (y >= 0) & (y < source_height),)

    # Taps outside the source read 0 (the constant border) and are summed like the others, left to
    # right, as OpenCV's remap sums them.
    mask_sum = tl.zeros((BLOCK_Y, BLOCK_X), dtype=tl.float32)
    for k in tl.static_range(4):
        mask_sum += tl.load(mask_ptr + taps[k], mask=tap_ok[k], other=0.0) * weights[k]
    alpha = tl.minimum(tl.maximum(mask_sum, 0.0), 1.0)
    keep = 1.0 - alpha

    pixel = ((top + j)[:, None] * frame_width + (left + i)[None, :]) * 3
    plane = source_height * source_width
    for c in tl.static_range(3):
        face = tl.zeros((BLOCK_Y, BLOCK_X), dtype=tl.float32)
        for k in tl.static_range(4):
            value = tl.load(render_ptr + c * plane + taps[k], mask=tap_ok[k], other=0.0).to(tl.float32)
            face += (tl.minimum(tl.maximum(value, 0.0), 1.0) * 255.0) * weights[k]
        background = tl.load(frame_ptr + pixel + c, mask=pixel_ok, other=0).to(tl.float32)
        mixed = alpha * face + keep * background
        # Clamp, then truncate toward zero as the reference's astype(uint8) does.
        tl.store(out_ptr + pixel + c, tl.minimum(tl.maximum(mixed, 0.0), 255.0).to(tl.uint8), mask=pixel_ok)


def _overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    a_start, b_start = a.data_ptr(), b.data_ptr()
    return a_start < b_start + b.numel() * b.element_size() and b_start < a_start + a.numel() * a.element_size()


def _check_inputs(frame: torch.Tensor, render: torch.Tensor, mask: torch.Tensor, out: torch.Tensor | None) -> None:
    if frame.dtype != torch.uint8 or frame.dim() != 3 or frame.shape[2] != 3:
        raise ValueError(f"paste-back: frame must be (H, W, 3) uint8, got {tuple(frame.shape)} {frame.dtype}")
    if frame.numel() >= 2**31:
        raise ValueError(f"paste-back: frame holds {frame.numel()} bytes; the kernel indexes in int32 (limit 2**31)")
    if render.dim() != 4 or render.shape[:2] != (1, 3):
        raise ValueError(f"paste-back: render must be (1, 3, S, S'), got shape {tuple(render.shape)}")
    if render.dtype not in _RENDER_DTYPES:
        raise TypeError(f"paste-back: render must be float16 or float32, got {render.dtype}")
    if mask.dtype != torch.float32 or mask.shape != render.shape[2:]:
        raise ValueError(f"paste-back: mask must be float32 of the render's size {tuple(render.shape[2:])}, "
                         f"got {tuple(mask.shape)} {mask.dtype}")
    if out is frame:
        return
    if out.dtype != torch.uint8 or out.shape != frame.shape:
        raise ValueError(f"paste-back: out must be uint8 of the frame's shape {tuple(frame.shape)}, "
                         f"got {tuple(out.shape)} {out.dtype}")
    if not out.is_contiguous():
        raise ValueError("paste-back: out must be C-contiguous")
    if _overlaps(out, frame):
        raise ValueError("paste-back: out must be the frame itself or memory apart from it")


def paste_back_window(frame: torch.Tensor, render: torch.Tensor, mask: torch.Tensor, out: torch.Tensor,
                      window: tuple[int, int, int, int], cols: torch.Tensor, rows: torch.Tensor, *,
                      shift: int, inter_bits: int) -> torch.Tensor:
    """Blend the decoder output `render` (1, 3, S, S') in [0, 1] (fp16 or fp32) into `frame` (H, W, 3)
    uint8 under `mask` (S, S') float32 over the frame rectangle `window` = (x0, y0, x1, y1), writing
    `out` there: `frame` itself (in place) or a separate (H, W, 3) uint8 tensor (e.g. a ring slot's
    device twin). `cols` (2, x1 − x0) and `rows` (2, y1 − y0) int64 are OpenCV's fixed-point position
    parts over the window; a pixel's source cell is (rows + cols) >> `shift`, its source pixel that
    >> `inter_bits`. Returns `out`."""
    _check_inputs(frame, render, mask, out)
    launch_device("paste-back", _paste_back_kernel, {"frame": frame, "render": render, "mask": mask, "out": out,
                                                    "cols": cols, "rows": rows})
    if not frame.is_contiguous():
        raise ValueError("paste-back: the frame must be C-contiguous")
    x0, y0, x1, y1 = window
    width, height = x1 - x0, y1 - y0
    if width <= 0 or height <= 0:
        return out
    if tuple(cols.shape) != (2, width) or tuple(rows.shape) != (2, height):
        raise ValueError(f"paste-back: a {width}x{height} window needs cols (2, {width}) and rows (2, {height}), "
                         f"got {tuple(cols.shape)} and {tuple(rows.shape)}")
    launch_grid = (triton.cdiv(width, BLOCK_X), triton.cdiv(height, BLOCK_Y))
    _paste_back_kernel[launch_grid](
        frame, out, render.contiguous(), mask.contiguous(), cols, rows,
        frame.shape[1], x0, y0, width, height, render.shape[2], render.shape[3],
        AB_TO_CELLS=shift, INTER_BITS=inter_bits, BLOCK_Y=BLOCK_Y, BLOCK_X=BLOCK_X,
        num_warps=NUM_WARPS, enable_fp_fusion=False)  # the reference's float32 sums have no FMAs
    return out
