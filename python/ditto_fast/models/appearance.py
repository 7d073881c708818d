"""Appearance feature extractor (LivePortrait "F", spec §4.1): 256² RGB crop -> 3-D feature volume f_s."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ditto_fast.models.blocks import ConvBNAct, DownBlock


class ResBlock3d(nn.Module):
    """Pre-activation residual block: x + conv2(relu(norm2(conv1(relu(norm1(x))))))."""

    # norm1 acts on the residual stream, so only norm2 directly follows a conv.
    conv_bn_pairs = (("conv1", "norm2"),)

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.norm1 = nn.BatchNorm3d(channels)
        self.norm2 = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.conv1(F.relu(self.norm1(x)))
        residual = self.conv2(F.relu(self.norm2(residual)))
        return x + residual


class AppearanceFeatureExtractor(nn.Module):
    """image (B,3,H,W) in [0,1] -> f_s (B, reshape_channel, reshape_depth, H/2^n, W/2^n).

    Widths double from `block_expansion` at each of the `num_down_blocks` stride-2 stages and are
    capped at `max_features`; a 1x1 conv then makes reshape_channel*reshape_depth channels, which
    are split into (channel, depth) as channel index c*reshape_depth + d.
    """

    def __init__(
        self,
        image_channel: int = 3,
        block_expansion: int = 64,
        num_down_blocks: int = 2,
        max_features: int = 512,
        reshape_channel: int = 32,
        reshape_depth: int = 16,
        num_resblocks: int = 6,
    ) -> None:
        super().__init__()
        self.reshape_channel = reshape_channel
        self.reshape_depth = reshape_depth
        self.first = ConvBNAct(2, image_channel, block_expansion)
        widths = [min(max_features, block_expansion * 2**i) for i in range(num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(
            DownBlock(2, widths[i], widths[i + 1], pool=(2, 2)) for i in range(num_down_blocks)
        )
        self.second = nn.Conv2d(widths[-1], reshape_channel * reshape_depth, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(reshape_channel))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.first(image)
        for block in self.down_blocks:
            x = block(x)
        x = self.second(x)
        x = x.unflatten(1, (self.reshape_channel, self.reshape_depth))
        return self.resblocks_3d(x)
