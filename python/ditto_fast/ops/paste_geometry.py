"""Where paste-back samples the crop: the frame window a crop lands on, and OpenCV 4.x's
fixed-point source positions over it (DITTO_SPEC §5.14). NumPy only, computed on the host: a
handful of float64 operations per row and column, which device code then only adds and shifts.

OpenCV's bilinear ``warpAffine`` (≤ 4.10, the reference's) maps frame pixel (x, y) through the
inverse matrix in 10-bit fixed point, split into a per-column part M⁻¹·(x, 0) and a per-row part
M⁻¹·(0, y, 1), each rounded half to even; their sum, shifted right by 5, is the source position
in 1/32 px cells. Reproducing that (instead of float positions) is what makes the result equal to
the reference's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

AB_BITS = 10  # fractional bits of OpenCV's fixed-point positions
INTER_BITS = 5  # positions are rounded to 1/2**INTER_BITS px cells
CELLS = 1 << INTER_BITS
HALF_CELL = (1 << AB_BITS) // CELLS // 2  # rounds a position to its nearest cell


@dataclass(frozen=True)
class FrameWindow:
    """Frame columns [x0, x1) and rows [y0, y1)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def empty(self) -> bool:
        return self.x1 <= self.x0 or self.y1 <= self.y0


def affine_2x3(m_c2o: np.ndarray) -> np.ndarray:
    """The crop→frame matrix as (2, 3) float64, checked: (2, 3) or (3, 3), finite."""
    m = np.asarray(m_c2o, dtype=np.float64)
    if m.shape not in ((2, 3), (3, 3)):
        raise ValueError(f"paste-back: m_c2o must be a (2, 3) or (3, 3) matrix, got shape {m.shape}")
    if not np.isfinite(m[:2]).all():
        raise ValueError(f"paste-back: m_c2o must be finite, got {m[:2].tolist()}")
    return m[:2]


def invert_affine(m_c2o: np.ndarray) -> np.ndarray:
    """Frame→crop matrix (2, 3) float64, in the operation order of OpenCV's invertAffineTransform."""
    (a, b, c), (d, e, f) = affine_2x3(m_c2o)
    det = a * e - b * d
    inv_det = 1.0 / det if det != 0 else 0.0
    a11, a12, a21, a22 = e * inv_det, -b * inv_det, -d * inv_det, a * inv_det
    return np.array([[a11, a12, -a11 * c - a12 * f], [a21, a22, -a21 * c - a22 * f]])


def crop_footprint(m_c2o: np.ndarray, crop_shape: tuple[int, int], frame_shape: tuple[int, int]) -> FrameWindow:
    """The window of a frame (height, width) outside which pasting a crop (height, width) through
    `m_c2o` leaves the frame unchanged (the warped mask is exactly 0 there), clipped to the frame.

    A frame pixel reads the 2×2 source block at its back-projected position, so it can change only
    if that position lies within one pixel of the crop: the crop grown by one pixel is mapped, with
    one more pixel of margin for the rounding of positions to 1/32 px.
    """
    m = affine_2x3(m_c2o)
    crop_height, crop_width = crop_shape
    corners = np.array([[x, y, 1.0] for x in (-1.0, crop_width) for y in (-1.0, crop_height)])
    mapped = corners @ m.T
    (lo_x, lo_y), (hi_x, hi_y) = mapped.min(axis=0), mapped.max(axis=0)
    frame_height, frame_width = frame_shape

    def clamp(value: float, limit: int) -> int:
        return int(min(max(value, 0), limit))  # clamped as a float first: far crops must not overflow

    x0, y0 = clamp(math.floor(lo_x) - 1, frame_width), clamp(math.floor(lo_y) - 1, frame_height)
    x1 = max(x0, clamp(math.ceil(hi_x) + 2, frame_width))
    y1 = max(y0, clamp(math.ceil(hi_y) + 2, frame_height))
    return FrameWindow(x0, y0, x1, y1)


def fixed_point_parts(m_c2o: np.ndarray, window: FrameWindow) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's integer position parts over `window`, int64, in 1/2**AB_BITS px:
    columns (2, width) = (x, y) parts of M⁻¹·(x, 0); rows (2, height) = (x, y) parts of M⁻¹·(0, y, 1)
    plus HALF_CELL. Source cell of pixel (x, y): (rows[:, y] + columns[:, x]) >> (AB_BITS − INTER_BITS)."""
    inv = invert_affine(m_c2o)
    scale = float(1 << AB_BITS)
    xs = np.arange(window.x0, window.x1, dtype=np.float64)
    ys = np.arange(window.y0, window.y1, dtype=np.float64)
    # np.rint rounds half to even, as OpenCV's saturate_cast<int> does.
    columns = np.rint(np.stack([inv[0, 0] * xs * scale, inv[1, 0] * xs * scale])).astype(np.int64)
    rows = np.rint(np.stack([(inv[0, 1] * ys + inv[0, 2]) * scale, (inv[1, 1] * ys + inv[1, 2]) * scale]))
    return columns, rows.astype(np.int64) + HALF_CELL
