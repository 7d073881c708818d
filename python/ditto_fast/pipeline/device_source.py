"""A registered source on the device, uploaded once per render, and DLPack interop helpers.

Per frame, the render path then moves only the driving keypoints to the device (252 bytes) and
the finished uint8 frame back (DESIGN.md, "data stays where it is computed"). The crop matrices
stay on the host: paste-back (the Triton kernel and the torch version alike) turns their six
numbers into sample positions there, without waiting for the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ditto_fast.stages.avatar import Avatar
from ditto_fast.stages.paste import paste_mask
from ditto_fast.stages.stitch import keypoint_transform


def as_device_tensor(array: Any, device: torch.device | str) -> torch.Tensor:
    """A tensor on `device` from a NumPy array (a view, no copy, when `device` is the CPU), a
    tensor, or any DLPack producer such as a CuPy array (a view when it already lives on `device`)."""
    if isinstance(array, torch.Tensor):
        tensor = array
    elif isinstance(array, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    elif hasattr(array, "__dlpack__"):
        tensor = torch.from_dlpack(array)
    else:
        raise TypeError(f"as_device_tensor: a {type(array).__name__} is neither a NumPy array nor a DLPack producer")
    return tensor.to(torch.device(device))


def upload(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """A small host array on `device` without waiting for the device: on CUDA it is staged in
    pinned memory and copied asynchronously on the current stream (a plain copy from pageable
    memory would synchronise the stream, stalling the host behind all queued work)."""
    device = torch.device(device)
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor.to(device)
    # The pinned block goes back to torch's host allocator only once the copy has run.
    return tensor.pin_memory().to(device, non_blocking=True)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A NumPy array of `tensor`: a view for CPU tensors, a host copy for device ones."""
    return tensor.detach().cpu().numpy()


def to_cupy(tensor: torch.Tensor) -> Any:
    """A CuPy array viewing a CUDA tensor's memory (DLPack, no copy). CuPy is optional."""
    try:
        import cupy
    except ImportError:
        raise ImportError("to_cupy needs CuPy (pip install cupy-cuda12x); torch tensors work without it") from None
    if tensor.device.type != "cuda":
        raise ValueError(f"to_cupy: CuPy arrays live on CUDA devices, the tensor is on {tensor.device}")
    return cupy.from_dlpack(tensor.detach())


@dataclass(frozen=True, eq=False)
class ResidentSource:
    """What rendering needs from an `Avatar`, per source frame i of n, on one device:

    - `f_s[i]` (32, 16, 64, 64) float32 appearance feature volume;
    - `kp_source[i]` (21, 3) float32 source keypoints: the motion stitch's x_s, which is
      `keypoint_transform` of the source frame's motion for image and video sources alike;
    - `frames[i]` (H, W, 3) uint8 paste-back background;
    - `m_c2o[i]` (3, 3) crop→frame matrix, a host array (see the module docstring);
    - `mask` (S, S) float32 paste-back mask.
    """

    f_s: torch.Tensor
    kp_source: torch.Tensor
    frames: torch.Tensor
    m_c2o: np.ndarray
    mask: torch.Tensor
    is_image: bool

    @classmethod
    def from_avatar(cls, avatar: Avatar, device: torch.device | str, mask: np.ndarray | None = None) -> ResidentSource:
        """Upload `avatar` (and the paste-back mask, the reference's by default) to `device`."""
        device = torch.device(device)
        keypoints = np.stack([keypoint_transform(avatar.motion_info(i))[0] for i in range(avatar.num_frames)])
        return cls(
            f_s=as_device_tensor(avatar.f_s[:, 0], device),
            kp_source=as_device_tensor(keypoints.astype(np.float32), device),
            frames=as_device_tensor(avatar.frames, device),
            m_c2o=np.array(avatar.m_c2o, dtype=np.float64, copy=True),
            mask=as_device_tensor(paste_mask() if mask is None else np.asarray(mask, dtype=np.float32), device),
            is_image=avatar.is_image,
        )

    @property
    def device(self) -> torch.device:
        return self.f_s.device

    @property
    def num_frames(self) -> int:
        return int(self.f_s.shape[0])

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the output frames."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])
