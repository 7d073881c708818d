"""Paste-back on device tensors: the decoder's output into its frame under the feathered mask
(DITTO_SPEC §5.14), and the choice between the Triton kernel and this torch version.

`torch_paste_back` is the reference's float math step by step: OpenCV 4.x's fixed-point source
positions (paste_geometry.py), its tabulated bilinear weights, float32 sums in its order, then the
float32 blend, clamped and truncated to uint8. Each step is a separate torch operation, so no
multiply-add is fused and every value rounds as the reference's does. It runs wherever torch does;
the Triton kernel (`ditto_fast.kernels.paste_back`) fuses the same arithmetic into one pass on CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ditto_fast.ops.paste_geometry import AB_BITS, CELLS, INTER_BITS, FrameWindow, crop_footprint, fixed_point_parts
from ditto_fast.runtime.transfers import upload


@dataclass(frozen=True)
class SampleGeometry:
    """Where each pixel of a frame window reads the crop: the flat index of its 2×2 block's top-left
    tap in the zero-padded crop (see `padded_crop`) and the four bilinear weights, (h, w, 1) each."""

    window: FrameWindow
    top_left: torch.Tensor
    weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    row_stride: int  # taps below the top-left one are this many entries further


def sample_geometry(m_c2o: np.ndarray, crop_shape: tuple[int, int], frame_shape: tuple[int, int],
                    device: torch.device | str) -> SampleGeometry:
    """The sampling of a crop (height, width) pasted through `m_c2o` into a frame (height, width)."""
    window = crop_footprint(m_c2o, crop_shape, frame_shape)
    columns, rows = (upload(part, device) for part in fixed_point_parts(m_c2o, window))
    shift = AB_BITS - INTER_BITS
    x = (rows[0, :, None] + columns[0, None, :]) >> shift  # arithmetic shift: rounds toward −∞
    y = (rows[1, :, None] + columns[1, None, :]) >> shift
    source_x, source_y = x >> INTER_BITS, y >> INTER_BITS
    crop_height, crop_width = crop_shape
    row_stride = crop_width + 3
    # A pixel whose block does not touch the crop reads the all-zero block in the padded corner.
    touches = (source_x >= -1) & (source_x < crop_width) & (source_y >= -1) & (source_y < crop_height)
    top_left = torch.where(touches, (source_y + 1) * row_stride + source_x + 1,
                           (crop_height + 1) * row_stride + crop_width + 1)
    # OpenCV's tabulated weights: products of (1 − f/32, f/32), all exact in float32.
    wx1 = ((x & (CELLS - 1)).to(torch.float32) / CELLS).unsqueeze(-1)
    wy1 = ((y & (CELLS - 1)).to(torch.float32) / CELLS).unsqueeze(-1)
    wx0, wy0 = 1 - wx1, 1 - wy1
    return SampleGeometry(window, top_left, (wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1), row_stride)


def padded_crop(render: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(S + 3, S' + 3, 4) float32: the render as the reference converts it (HWC, clipped to [0, 1],
    ×255) with the mask as a fourth channel, framed by zeros (one row/column before, two after)
    that stand in for warpAffine's constant border."""
    crop_height, crop_width = mask.shape
    padded = torch.zeros((crop_height + 3, crop_width + 3, 4), dtype=torch.float32, device=render.device)
    padded[1:crop_height + 1, 1:crop_width + 1, :3] = render[0].permute(1, 2, 0).float().clamp(0, 1) * 255
    padded[1:crop_height + 1, 1:crop_width + 1, 3] = mask
    return padded


def warp_crop(padded: torch.Tensor, geometry: SampleGeometry) -> torch.Tensor:
    """Bilinear samples (h, w, C) of a padded crop over the geometry's window."""
    flat = padded.reshape(-1, padded.shape[-1])
    index = geometry.top_left
    taps = (index, index + 1, index + geometry.row_stride, index + geometry.row_stride + 1)
    # Summed left to right in float32, each product rounded first, as OpenCV's remap does.
    total = flat[taps[0]] * geometry.weights[0]
    for tap, weight in zip(taps[1:], geometry.weights[1:]):
        total = total + flat[tap] * weight
    return total


def _check(frame: torch.Tensor, render: torch.Tensor, mask: torch.Tensor, out: torch.Tensor | None) -> None:
    if frame.dtype != torch.uint8 or frame.dim() != 3 or frame.shape[2] != 3:
        raise ValueError(f"paste-back: frame must be (H, W, 3) uint8, got {tuple(frame.shape)} {frame.dtype}")
    if render.dim() != 4 or render.shape[:2] != (1, 3) or not render.is_floating_point():
        raise ValueError(f"paste-back: render must be a float (1, 3, S, S') decoder output, got "
                         f"{tuple(render.shape)} {render.dtype}")
    if mask.dtype != torch.float32 or mask.shape != render.shape[2:]:
        raise ValueError(f"paste-back: mask must be float32 of the render's size {tuple(render.shape[2:])}, "
                         f"got {tuple(mask.shape)} {mask.dtype}")
    if out is not None and (out.dtype != torch.uint8 or out.shape != frame.shape):
        raise ValueError(f"paste-back: out must be uint8 of the frame's shape {tuple(frame.shape)}, "
                         f"got {tuple(out.shape)} {out.dtype}")


class TorchPasteBack:
    """`torch_paste_back` that keeps the sampling geometry of the last matrix it saw: an image
    source pastes every frame through the same matrix, so its positions are computed once."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._geometry: SampleGeometry | None = None

    def geometry(self, m_c2o: np.ndarray, crop_shape: tuple[int, int], frame_shape: tuple[int, int],
                 device: torch.device) -> SampleGeometry:
        key = (np.asarray(m_c2o, dtype=np.float64).tobytes(), crop_shape, frame_shape, device)
        if key != self._key:
            self._geometry = sample_geometry(m_c2o, crop_shape, frame_shape, device)
            self._key = key
        return self._geometry

    def __call__(self, frame: torch.Tensor, render: torch.Tensor, mask: torch.Tensor, m_c2o: np.ndarray,
                 out: torch.Tensor | None = None) -> torch.Tensor:
        """Blend `render` (1, 3, S, S') in [0, 1] into `frame` (H, W, 3) uint8 under `mask` (S, S')
        through the crop→frame matrix `m_c2o` → the (H, W, 3) uint8 result, in `out` when given
        (`frame` itself pastes in place), else in a new tensor."""
        _check(frame, render, mask, out)
        if out is None:
            out = frame.clone()
        elif out is not frame:
            out.copy_(frame)
        geometry = self.geometry(m_c2o, tuple(mask.shape), tuple(frame.shape[:2]), frame.device)
        window = geometry.window
        if window.empty:
            return out
        sample = warp_crop(padded_crop(render, mask), geometry)
        alpha = sample[..., 3:].clamp(0, 1)
        background = out[window.y0:window.y1, window.x0:window.x1]
        mixed = alpha * sample[..., :3] + (1 - alpha) * background.float()
        # Clamped, then truncated toward zero as the reference's astype(uint8).
        background.copy_(mixed.clamp(0, 255).to(torch.uint8))
        return out


def torch_paste_back(frame: torch.Tensor, render: torch.Tensor, mask: torch.Tensor, m_c2o: np.ndarray,
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """One paste-back without a geometry cache (see TorchPasteBack.__call__)."""
    return TorchPasteBack()(frame, render, mask, m_c2o, out=out)
