"""A registered source where the frame renderer's networks run: uploaded once per job.

Per frame, the render path then moves only the keypoints to the device and the finished uint8
frame back (DESIGN.md, "data stays where it is computed"). On the CPU nothing is uploaded: the
arrays are views of the `Avatar`'s own. The crop matrices stay on the host on every device:
paste-back turns their six numbers into sample positions there, without waiting for the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ditto_fast.avatar import Avatar


@dataclass(frozen=True, eq=False)
class DeviceSource:
    """What rendering needs from an `Avatar`, per source frame i of n, as `array_kind` arrays
    ("numpy", or "torch" tensors on `device`):

    - `f_s[i]` (32, 16, 64, 64) float32 appearance feature volume;
    - `frames[i]` (H, W, 3) uint8 paste-back background;
    - `m_c2o[i]` (3, 3) crop→frame matrix, always a host array (see the module docstring).
    """

    f_s: Any
    frames: Any
    m_c2o: np.ndarray
    array_kind: str
    device: str

    @classmethod
    def from_avatar(cls, avatar: Avatar, array_kind: str = "numpy", device: str = "cpu") -> DeviceSource:
        f_s, frames = avatar.f_s[:, 0], avatar.frames  # views: nothing is copied on the host
        if array_kind == "torch":
            from ditto_fast.runtime.transfers import as_device_tensor

            f_s, frames = as_device_tensor(f_s, device), as_device_tensor(frames, device)
        elif array_kind != "numpy":
            raise ValueError(f"DeviceSource: array_kind must be 'numpy' or 'torch', got {array_kind!r}")
        return cls(f_s, frames, np.array(avatar.m_c2o, dtype=np.float64, copy=True), array_kind, device)

    @property
    def num_frames(self) -> int:
        return int(self.f_s.shape[0])

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the output frames."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    def host_features(self, sources: Sequence[int]) -> np.ndarray:
        """f_s of `sources` as one (B, 32, 16, 64, 64) host batch; a view when B is 1."""
        if len(sources) == 1:
            return self.f_s[sources[0]:sources[0] + 1]
        return self.f_s[np.asarray(sources)]
