"""Paste-back: the rendered 512² face goes back into the full frame under a feathered mask
(DITTO_SPEC §5.13–§5.14). One operation, `PasteBack`, for every device; it picks the
implementation from the arrays it is given:

- NumPy arrays (the CPU): the C++ kernel, writing straight into `out` (e.g. a ring slot);
- CUDA torch tensors: the Triton kernel (`ditto_fast.kernels.paste_back`) when Triton imports
  (its absence is logged once, then the torch version runs);
- other torch tensors: the torch version (ops/paste_torch.py).

All three give the same bytes: the reference's.

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

import logging
from typing import Any

import numpy as np

from ditto_fast._core import paste_back

log = logging.getLogger(__name__)

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
    """Pastes rendered faces back into their frames through the crop's inverse matrix, on the
    device the arrays live on (see the module docstring). One instance serves one job: it keeps
    the mask on each device it met and, for torch, the last crop's sampling geometry."""

    def __init__(self, mask: np.ndarray | None = None, threads: int = 0) -> None:
        """`threads`: how many threads share a frame's rows on the CPU (0: one per core)."""
        mask = paste_mask() if mask is None else np.ascontiguousarray(mask, dtype=np.float32)
        if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
            raise ValueError(f"paste-back mask: expected a square 2-D array, got shape {mask.shape}")
        self.mask = mask
        self.threads = threads
        self._device: dict[Any, tuple[Any, Any]] = {}  # torch device -> (mask tensor, implementation)

    def __call__(self, frame: Any, render: Any, m_c2o: np.ndarray, out: Any = None) -> Any:
        """frame (H, W, 3) uint8; render the decoder's output (1, 3, S, S) in [0, 1] (S = mask
        side) or, for NumPy, (S, S, 3) float32 in [0, 255] as `render_to_hwc` gives; m_c2o (3, 3)
        crop→frame matrix (a host array). Returns the (H, W, 3) uint8 result, written into `out`
        when given (e.g. a ring slot) or a new array; `frame` is left untouched unless it is `out`."""
        if isinstance(frame, np.ndarray):
            # The kernel checks dtypes and shapes itself; only the memory layout is adapted here.
            return paste_back(np.ascontiguousarray(frame), np.ascontiguousarray(render, dtype=np.float32),
                              self.mask, np.asarray(m_c2o), out=out, threads=self.threads)
        mask, implementation = self._on_device(frame.device)
        return implementation(frame, render, mask, m_c2o, out=out)

    def _on_device(self, device: Any) -> tuple[Any, Any]:
        if device not in self._device:
            import torch

            from ditto_fast.ops.paste_torch import TorchPasteBack

            implementation: Any = TorchPasteBack()
            if device.type == "cuda":
                try:
                    from ditto_fast.ops.paste_triton import triton_paste_back
                except ImportError as exc:
                    log.warning("paste-back on %s runs in torch, not the Triton kernel: %s", device, exc)
                else:
                    implementation = triton_paste_back
            self._device[device] = (torch.from_numpy(self.mask).to(device), implementation)
        return self._device[device]
