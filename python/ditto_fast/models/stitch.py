"""Stitching network (spec §4.5): an MLP correction of the driving keypoints."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class StitchingNetwork(nn.Module):
    """(kp_source (B,K,3), kp_driving (B,K,3)) -> corrected kp_driving (B,K,3).

    The MLP maps both keypoint sets (flattened, concatenated) to 3K+2 values: the first 3K,
    reshaped (K,3), are added to kp_driving; the last 2 shift x and y of every keypoint.
    """

    def __init__(self, num_kp: int = 21, hidden_sizes: Sequence[int] = (128, 128, 64)) -> None:
        super().__init__()
        self.num_kp = num_kp
        widths = [2 * 3 * num_kp, *hidden_sizes, 3 * num_kp + 2]
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        self.mlp = nn.Sequential(*layers[:-1])  # no activation on the output layer

    def forward(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        delta = self.mlp(torch.cat([kp_source.flatten(1), kp_driving.flatten(1)], dim=1))
        per_keypoint = delta[:, : 3 * self.num_kp].unflatten(1, (self.num_kp, 3))
        shared_xy = delta[:, 3 * self.num_kp :]
        shared_xyz = F.pad(shared_xy, (0, 1)).unsqueeze(1)  # z gets no shared shift
        return kp_driving + per_keypoint + shared_xyz
