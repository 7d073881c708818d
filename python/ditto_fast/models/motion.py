"""Motion extractor (LivePortrait "M", spec §4.2): a ConvNeXt-V2 backbone with seven linear heads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_LAYER_NORM_EPS = 1e-6
_GRN_EPS = 1e-6


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an (N, C, H, W) tensor."""

    def __init__(self, channels: int, eps: float = _LAYER_NORM_EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2 GRN on channels-last input: y = gamma*(x*N) + beta + x, N = G / mean_c(G)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial_norm = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)
        relative = spatial_norm / (spatial_norm.mean(dim=-1, keepdim=True) + _GRN_EPS)
        return self.gamma * (x * relative) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    """x + pwconv2(grn(gelu(pwconv1(norm(dwconv7x7(x)))))), the MLP part channels-last."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=_LAYER_NORM_EPS)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GlobalResponseNorm(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtV2(nn.Module):
    """Backbone + heads; returns (pitch, yaw, roll, t, exp, scale, kp), the contract order."""

    def __init__(
        self,
        in_chans: int = 3,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        num_kp: int = 21,
        num_bins: int = 66,
    ) -> None:
        super().__init__()
        if len(depths) != len(dims):
            raise ValueError(f"ConvNeXtV2: depths {tuple(depths)} and dims {tuple(dims)} differ in length")
        stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0]))
        self.downsample_layers = nn.ModuleList([stem])
        for previous, current in zip(dims[:-1], dims[1:]):
            self.downsample_layers.append(
                nn.Sequential(LayerNorm2d(previous), nn.Conv2d(previous, current, kernel_size=2, stride=2))
            )
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtV2Block(dim) for _ in range(depth))) for depth, dim in zip(depths, dims)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=_LAYER_NORM_EPS)
        # Declared in the checkpoint's key order; forward returns them in the contract order.
        self.fc_kp = nn.Linear(dims[-1], 3 * num_kp)
        self.fc_scale = nn.Linear(dims[-1], 1)
        self.fc_pitch = nn.Linear(dims[-1], num_bins)
        self.fc_yaw = nn.Linear(dims[-1], num_bins)
        self.fc_roll = nn.Linear(dims[-1], num_bins)
        self.fc_t = nn.Linear(dims[-1], 3)
        self.fc_exp = nn.Linear(dims[-1], 3 * num_kp)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = image
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        pooled = self.norm(x.mean(dim=(-2, -1)))
        return (
            self.fc_pitch(pooled),
            self.fc_yaw(pooled),
            self.fc_roll(pooled),
            self.fc_t(pooled),
            self.fc_exp(pooled),
            self.fc_scale(pooled),
            self.fc_kp(pooled),
        )


class MotionExtractor(nn.Module):
    """image (B,3,256,256) in [0,1] -> pitch, yaw, roll (B,num_bins), t (B,3), exp (B,3K), scale (B,1), kp (B,3K).

    Outputs are raw head values (angle-bin logits, no activation).
    """

    def __init__(self, **sizes: Any) -> None:
        """`sizes`: ConvNeXtV2's arguments. The wrapper exists for the checkpoint's key
        prefix `detector.`."""
        super().__init__()
        self.detector = ConvNeXtV2(**sizes)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.detector(image)
