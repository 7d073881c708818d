"""Paste-back: the rendered 512² face goes back into the full frame under a feathered mask
(DITTO_SPEC §5.13–§5.14).

The reference warps mask and render with OpenCV 4.x ``cv2.warpAffine`` (bilinear, black border),
blends in float32 and truncates to uint8. Bilinear warps differ between OpenCV releases (5.0 samples
at unquantised positions; 4.14's remap rounds its float sums differently), so the native kernel
``ditto_fast._core.paste_back`` (src/paste_back.cpp) reproduces the 4.10 arithmetic itself: source
positions in fixed point rounded to 1/32 px, tabulated weights, float32 sums in OpenCV's order, in
one multi-threaded pass over the frame window the crop lands on (elsewhere the mask is 0 and the
reference leaves the frame as it was). The output is byte-identical to the reference whatever
OpenCV is installed.
"""

from __future__ import annotations

import numpy as np

from ditto_fast._core import paste_back

PASTE_SIZE = 512  # side of the rendered face and of the mask
PASTE_RATIO = 0.9  # share of the side that is fully opaque; the rest is a linear feather


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


class PasteBack:
    """Pastes rendered faces back into their frames through the crop's inverse matrix."""

    def __init__(self, mask: np.ndarray | None = None, threads: int = 0) -> None:
        """`threads`: how many threads share a frame's rows (0: one per core)."""
        mask = paste_mask() if mask is None else np.ascontiguousarray(mask, dtype=np.float32)
        if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
            raise ValueError(f"paste-back mask: expected a square 2-D array, got shape {mask.shape}")
        self.mask = mask
        self.threads = threads

    def __call__(self, frame: np.ndarray, render: np.ndarray, m_c2o: np.ndarray,
                 out: np.ndarray | None = None) -> np.ndarray:
        """frame (H, W, 3) uint8; render (S, S, 3) float32 in [0, 255] (S = mask side), or the
        decoder's output (1, 3, S, S) in [0, 1], which the kernel converts exactly as
        `render_to_hwc` would, without the intermediate arrays; m_c2o (3, 3) crop→frame matrix.
        Returns the (H, W, 3) uint8 result, written into `out` when given (e.g. a ring slot) or
        a new array; `frame` itself is left untouched unless it is `out`."""
        # The kernel checks dtypes and shapes itself; only the memory layout is adapted here.
        return paste_back(np.ascontiguousarray(frame), np.ascontiguousarray(render, dtype=np.float32),
                          self.mask, np.asarray(m_c2o), out=out, threads=self.threads)
