"""Paste-back on CUDA through the Triton kernel: the crop geometry on the host (paste_geometry.py),
the blend on the device (`ditto_fast.kernels.paste_back`). Importing this module needs Triton."""

from __future__ import annotations

import numpy as np
import torch

from ditto_fast.kernels.paste_back import paste_back_window
from ditto_fast.ops.paste_geometry import AB_BITS, INTER_BITS, FrameWindow, crop_footprint, fixed_point_parts
from ditto_fast.runtime.transfers import upload


def triton_paste_back(frame: torch.Tensor, render: torch.Tensor, mask: torch.Tensor, m_c2o: np.ndarray,
                      out: torch.Tensor | None = None) -> torch.Tensor:
    """As `TorchPasteBack.__call__`: `out` None (a new tensor), `frame` (in place: only the crop's
    footprint is touched) or a separate (H, W, 3) uint8 tensor that receives every pixel."""
    frame_shape = (int(frame.shape[0]), int(frame.shape[1]))
    in_place = out is frame
    if in_place and not frame.is_contiguous():
        raise ValueError("paste-back: a frame pasted in place must be C-contiguous")
    frame = frame.contiguous()
    out = torch.empty_like(frame) if out is None else out
    # Out of place every pixel is written (outside the footprint the kernel's blend reproduces the
    # frame exactly: the mask samples 0), which costs one pass instead of a copy and then a pass.
    window = (crop_footprint(m_c2o, tuple(render.shape[2:]), frame_shape) if in_place
              else FrameWindow(0, 0, frame_shape[1], frame_shape[0]))
    if window.empty:
        return out
    # Uploaded without waiting for the device (pinned, asynchronous): the host runs ahead of the GPU.
    cols, rows = (upload(part, frame.device) for part in fixed_point_parts(m_c2o, window))
    return paste_back_window(frame, render, mask, out, (window.x0, window.y0, window.x1, window.y1), cols, rows,
                             shift=AB_BITS - INTER_BITS, inter_bits=INTER_BITS)
