"""Paste-back: the rendered 512² face goes back into the full frame under a feathered mask
(DITTO_SPEC §5.13–§5.14).

The reference warps mask and render with OpenCV 4.x ``cv2.warpAffine`` (bilinear, black border),
blends in float32 and truncates to uint8. Bilinear warps differ between OpenCV releases (5.0 samples
at unquantised positions; 4.14's remap rounds its float sums differently), so the 4.10 arithmetic is
reproduced here in NumPy: source positions in fixed point rounded to 1/32 px, tabulated weights,
float32 sums in OpenCV's order. The output is byte-identical to the reference whatever OpenCV is
installed. Only the frame window the crop lands on is warped and blended; elsewhere the mask is 0
and the reference leaves the frame as it was.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

PASTE_SIZE = 512  # side of the rendered face and of the mask
PASTE_RATIO = 0.9  # share of the side that is fully opaque; the rest is a linear feather

# OpenCV 4.x's bilinear warpAffine: source coordinates in 10-bit fixed point, rounded to 1/32 px,
# then tabulated bilinear weights.
_AB_BITS = 10
_INTER_BITS = 5
_INTER_TAB_SIZE = 1 << _INTER_BITS


def paste_mask(size: int = PASTE_SIZE, ratio: float = PASTE_RATIO) -> np.ndarray:
    """(size, size) float32 feather mask: bands of (size − int(size·ratio))//2 pixels along each side
    ramp linearly from 0 at the outer edge to 1, the corner blocks hold 1 − (clipped) distance from
    the inner corner, and the centre is 1.

    Matches the reference mask bit for bit: ramps are float64 linspaces rounded to float32, the
    corner distance is float64 rounded to float32 before the float32 ``1 − d``.
    """
    inner = int(size * ratio)
    band = (size - inner) // 2
    if band < 2 or inner < 1:
        raise ValueError(f"paste_mask: size {size} with ratio {ratio} leaves no feather band")
    ramp = np.linspace(0, 1, band).astype(np.float32)
    mask = np.ones((size, size), dtype=np.float32)
    mask[:band, :] = ramp[:, None]
    mask[-band:, :] = ramp[::-1, None]
    mask[:, :band] = ramp[None, :]
    mask[:, -band:] = ramp[None, ::-1]
    to_inner = np.linspace(1, 0, band)  # 1 at the outer edge, 0 where the opaque square starts
    distance = np.sqrt(to_inner[:, None] ** 2 + to_inner[None, :] ** 2).astype(np.float32)
    corner = np.float32(1) - np.clip(distance, 0, 1)
    mask[:band, :band] = corner
    mask[:band, -band:] = corner[:, ::-1]
    mask[-band:, :band] = corner[::-1, :]
    mask[-band:, -band:] = corner[::-1, ::-1]
    return mask


def render_to_hwc(decoder_output: np.ndarray) -> np.ndarray:
    """Decoder output (1, 3, H, W) in [0, 1] → (H, W, 3) float32 in [0, 255] (clipped, not rounded)."""
    decoder_output = np.asarray(decoder_output)
    if decoder_output.ndim != 4 or decoder_output.shape[:2] != (1, 3):
        raise ValueError(f"decoder output: expected shape (1, 3, H, W), got {decoder_output.shape}")
    hwc = np.transpose(decoder_output[0], (1, 2, 0)).astype(np.float32)
    return np.clip(hwc, 0, 1) * 255


class Window(NamedTuple):
    """A rectangle of the destination frame: columns [x0, x1), rows [y0, y1)."""

    x0: int
    y0: int
    x1: int
    y1: int


def _inverse_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of the 2×3 part of `m`, in float64 with OpenCV's operation order."""
    (a, b, c), (d, e, f) = np.asarray(m, dtype=np.float64)[:2]
    det = a * e - b * d
    inv_det = 1.0 / det if det != 0 else 0.0
    a11, a12, a21, a22 = e * inv_det, -b * inv_det, -d * inv_det, a * inv_det
    return np.array([[a11, a12, -a11 * c - a12 * f], [a21, a22, -a21 * c - a22 * f]])


def _sample_positions(m: np.ndarray, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source pixel (sx, sy) left/above each destination pixel of `window` and the sub-pixel offsets
    (fx, fy) in 1/32 px, as OpenCV 4.x warpAffine computes them in fixed point."""
    inv = _inverse_affine(m)
    ab_scale = 1 << _AB_BITS
    cols = np.arange(window.x0, window.x1, dtype=np.float64)
    rows = np.arange(window.y0, window.y1, dtype=np.float64)
    # Per-column and per-row parts, each rounded half-to-even as OpenCV's saturate_cast<int>.
    col_x = np.rint(inv[0, 0] * cols * ab_scale).astype(np.int64)
    col_y = np.rint(inv[1, 0] * cols * ab_scale).astype(np.int64)
    half_step = ab_scale // _INTER_TAB_SIZE // 2
    row_x = np.rint((inv[0, 1] * rows + inv[0, 2]) * ab_scale).astype(np.int64) + half_step
    row_y = np.rint((inv[1, 1] * rows + inv[1, 2]) * ab_scale).astype(np.int64) + half_step
    x = (row_x[:, None] + col_x[None, :]) >> (_AB_BITS - _INTER_BITS)
    y = (row_y[:, None] + col_y[None, :]) >> (_AB_BITS - _INTER_BITS)
    return x >> _INTER_BITS, y >> _INTER_BITS, x & (_INTER_TAB_SIZE - 1), y & (_INTER_TAB_SIZE - 1)


def warp_affine(src: np.ndarray, m: np.ndarray, dsize: tuple[int, int],
                window: Window | None = None) -> np.ndarray:
    """``cv2.warpAffine(src, m[:2], dsize, INTER_LINEAR, BORDER_CONSTANT 0)`` exactly as OpenCV 4.x
    (≤ 4.10, the reference's) computes it for a float32 image (H, W) or (H, W, C).

    dsize is (W, H). With a `window`, only that part of the destination is computed (the result
    has the window's shape) and equals the same slice of the full warp.
    """
    src = np.asarray(src)
    if src.dtype != np.float32 or src.ndim not in (2, 3):
        raise ValueError(f"warp_affine: expected a float32 (H, W) or (H, W, C) image, got {src.shape} {src.dtype}")
    if window is None:
        window = Window(0, 0, *dsize)
    sx, sy, fx, fy = _sample_positions(m, window)
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


def crop_footprint(m_c2o: np.ndarray, crop_size: int, dsize: tuple[int, int]) -> Window:
    """The frame window outside which a warp of a crop_size² image through `m_c2o` is exactly 0.

    A destination pixel reads the source pixels around its back-projected position, so it can be
    non-zero only if that position lies within one pixel of the crop; one more pixel of margin
    covers the 1/32-px rounding of the position.
    """
    width, height = dsize
    edge = np.array([-1.0, float(crop_size)])
    corners = np.array([[x, y, 1.0] for x in edge for y in edge])
    mapped = corners @ np.asarray(m_c2o, dtype=np.float64)[:2].T
    x0, y0 = np.floor(mapped.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(mapped.max(axis=0)).astype(int) + 2
    x0, x1 = np.clip([x0, x1], 0, width)
    y0, y1 = np.clip([y0, y1], 0, height)
    return Window(int(x0), int(y0), int(max(x1, x0)), int(max(y1, y0)))


def blend(frame: np.ndarray, face: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """mask·face + (1 − mask)·frame in float32, clamped to [0, 255] and truncated to uint8."""
    alpha = mask[..., None]
    mixed = alpha * face + (1 - alpha) * frame.astype(np.float32)
    return np.clip(mixed, 0, 255).astype(np.uint8)


class PasteBack:
    """Pastes rendered faces back into their frames through the crop's inverse matrix."""

    def __init__(self, mask: np.ndarray | None = None) -> None:
        mask = paste_mask() if mask is None else np.asarray(mask, dtype=np.float32)
        if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
            raise ValueError(f"paste-back mask: expected a square 2-D array, got shape {mask.shape}")
        self.mask = mask

    def __call__(self, frame: np.ndarray, render: np.ndarray, m_c2o: np.ndarray) -> np.ndarray:
        """frame (H, W, 3) uint8, render (S, S, 3) float32 in [0, 255] (S = mask side), m_c2o (3, 3)
        crop→frame matrix → new (H, W, 3) uint8 frame; `frame` itself is left untouched."""
        size = self.mask.shape[0]
        frame, render = np.asarray(frame), np.asarray(render, dtype=np.float32)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"paste-back frame: expected (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
        if render.shape != (size, size, 3):
            raise ValueError(f"paste-back render: expected shape ({size}, {size}, 3), got {render.shape}")
        height, width = frame.shape[:2]
        window = crop_footprint(m_c2o, size, (width, height))
        out = frame.copy()
        if window.x1 == window.x0 or window.y1 == window.y0:
            return out  # the crop lies wholly outside the frame
        # One warp for both: the mask rides along as a fourth channel (channels never mix).
        warped = warp_affine(np.dstack([render, self.mask]), m_c2o, (width, height), window)
        face_w, mask_w = warped[..., :3], np.clip(warped[..., 3], 0, 1)
        rows, cols = slice(window.y0, window.y1), slice(window.x0, window.x1)
        out[rows, cols] = blend(frame[rows, cols], face_w, mask_w)
        return out
