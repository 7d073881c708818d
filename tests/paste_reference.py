"""NumPy reference of the paste-back (DITTO_SPEC §5.14) that the native kernel is tested against.

OpenCV 4.x's (≤ 4.10, the reference's) bilinear ``cv2.warpAffine`` of a float32 image, rebuilt step
by step: the inverse matrix in float64 with OpenCV's operation order, source positions in 10-bit
fixed point rounded to 1/32 px, tabulated weights, float32 sums in OpenCV's order. Then the blend
in float32, clamped and truncated to uint8. Slow (whole-frame arrays), but every step is visible and
checked against the reference's golden warps in test_stage_paste.py.
"""

from __future__ import annotations

import numpy as np

_AB_BITS = 10
_INTER_BITS = 5
_INTER_TAB_SIZE = 1 << _INTER_BITS


def _inverse_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of the 2×3 part of `m`, in float64 with OpenCV's operation order."""
    (a, b, c), (d, e, f) = np.asarray(m, dtype=np.float64)[:2]
    det = a * e - b * d
    inv_det = 1.0 / det if det != 0 else 0.0
    a11, a12, a21, a22 = e * inv_det, -b * inv_det, -d * inv_det, a * inv_det
    return np.array([[a11, a12, -a11 * c - a12 * f], [a21, a22, -a21 * c - a22 * f]])


def _sample_positions(m: np.ndarray, dsize: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Source pixel (sx, sy) left/above each destination pixel and the sub-pixel offsets (fx, fy)
    in 1/32 px, as OpenCV 4.x warpAffine computes them in fixed point."""
    inv = _inverse_affine(m)
    ab_scale = 1 << _AB_BITS
    cols = np.arange(dsize[0], dtype=np.float64)
    rows = np.arange(dsize[1], dtype=np.float64)
    # Per-column and per-row parts, each rounded half-to-even as OpenCV's saturate_cast<int>.
    col_x = np.rint(inv[0, 0] * cols * ab_scale).astype(np.int64)
    col_y = np.rint(inv[1, 0] * cols * ab_scale).astype(np.int64)
    half_step = ab_scale // _INTER_TAB_SIZE // 2
    row_x = np.rint((inv[0, 1] * rows + inv[0, 2]) * ab_scale).astype(np.int64) + half_step
    row_y = np.rint((inv[1, 1] * rows + inv[1, 2]) * ab_scale).astype(np.int64) + half_step
    x = (row_x[:, None] + col_x[None, :]) >> (_AB_BITS - _INTER_BITS)
    y = (row_y[:, None] + col_y[None, :]) >> (_AB_BITS - _INTER_BITS)
    return x >> _INTER_BITS, y >> _INTER_BITS, x & (_INTER_TAB_SIZE - 1), y & (_INTER_TAB_SIZE - 1)


def warp_affine(src: np.ndarray, m: np.ndarray, dsize: tuple[int, int]) -> np.ndarray:
    """``cv2.warpAffine(src, m[:2], dsize, INTER_LINEAR, BORDER_CONSTANT 0)`` exactly as OpenCV 4.x
    (≤ 4.10) computes it for a float32 image (H, W) or (H, W, C); dsize is (W, H)."""
    src = np.asarray(src)
    if src.dtype != np.float32 or src.ndim not in (2, 3):
        raise ValueError(f"warp_affine: expected a float32 (H, W) or (H, W, C) image, got {src.shape} {src.dtype}")
    sx, sy, fx, fy = _sample_positions(m, dsize)
    # Zero rows/columns around the source stand in for the constant border: one before and two
    # after, so the 2×2 taps of any pixel that touches the image stay in bounds, and a pixel that
    # does not touch it reads an all-zero 2×2 block in the far corner.
    height, width = src.shape[:2]
    channels = src.shape[2] if src.ndim == 3 else 1
    padded = np.zeros((height + 3, width + 3, channels), dtype=np.float32)
    padded[1:height + 1, 1:width + 1] = src.reshape(height, width, channels)
    flat = padded.reshape(-1, channels)
    stride = width + 3
    touches = (sx >= -1) & (sx < width) & (sy >= -1) & (sy < height)
    top_left = np.where(touches, (sy + 1) * stride + (sx + 1), (height + 1) * stride + width + 1).astype(np.intp)
    # OpenCV's tabulated float weights: products of (1 − f/32, f/32), all exact in float32.
    wx1 = (fx.astype(np.float32) / np.float32(_INTER_TAB_SIZE))[..., None]
    wy1 = (fy.astype(np.float32) / np.float32(_INTER_TAB_SIZE))[..., None]
    wx0, wy0 = np.float32(1) - wx1, np.float32(1) - wy1
    # Summed left to right in float32, without fused multiply-adds, as OpenCV 4.x's remap does.
    out = np.take(flat, top_left, axis=0) * (wy0 * wx0)
    out += np.take(flat, top_left + 1, axis=0) * (wy0 * wx1)
    out += np.take(flat, top_left + stride, axis=0) * (wy1 * wx0)
    out += np.take(flat, top_left + stride + 1, axis=0) * (wy1 * wx1)
    return out if src.ndim == 3 else out[..., 0]


def blend(frame: np.ndarray, face: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """mask·face + (1 − mask)·frame in float32, clamped to [0, 255] and truncated to uint8."""
    alpha = mask[..., None]
    mixed = alpha * face + (1 - alpha) * frame.astype(np.float32)
    return np.clip(mixed, 0, 255).astype(np.uint8)


def full_frame_paste(frame: np.ndarray, render: np.ndarray, mask: np.ndarray, m_c2o: np.ndarray) -> np.ndarray:
    """The reference's formulation: both warps over the whole frame, the mask clipped, then the blend."""
    dsize = (frame.shape[1], frame.shape[0])
    return blend(frame, warp_affine(render, m_c2o, dsize), np.clip(warp_affine(mask, m_c2o, dsize), 0, 1))
