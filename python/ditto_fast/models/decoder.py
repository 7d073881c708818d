"""SPADE decoder (LivePortrait "G", spec §4.4): warped 2-D feature -> RGB image in (0, 1).

The input feature is also the SPADE label map of every block, resized (nearest) to each
block's resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

_LEAKY_SLOPE = 0.2


class SPADE(nn.Module):
    """IN(x) * (1 + gamma(label)) + beta(label), InstanceNorm without affine parameters."""

    def __init__(self, norm_nc: int, label_nc: int, hidden: int) -> None:
        super().__init__()
        self.instance_norm = nn.InstanceNorm2d(norm_nc, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        label = F.interpolate(label, size=x.shape[-2:], mode="nearest")
        hidden = self.mlp_shared(label)
        return self.instance_norm(x) * (1 + self.mlp_gamma(hidden)) + self.mlp_beta(hidden)


class SPADEResnetBlock(nn.Module):
    """shortcut(x) + conv_1(lrelu(SPADE_1(conv_0(lrelu(SPADE_0(x)))))); convs spectral-normed.

    The shortcut is x itself when fin == fout, else conv_s(SPADE_s(x)) (1x1, no bias).
    """

    def __init__(self, fin: int, fout: int, label_nc: int, spade_hidden: int) -> None:
        super().__init__()
        fmid = min(fin, fout)
        self.learned_shortcut = fin != fout
        self.conv_0 = spectral_norm(nn.Conv2d(fin, fmid, kernel_size=3, padding=1))
        self.conv_1 = spectral_norm(nn.Conv2d(fmid, fout, kernel_size=3, padding=1))
        if self.learned_shortcut:
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, kernel_size=1, bias=False))
        self.norm_0 = SPADE(fin, label_nc, spade_hidden)
        self.norm_1 = SPADE(fmid, label_nc, spade_hidden)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc, spade_hidden)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, label)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, label), _LEAKY_SLOPE))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, label), _LEAKY_SLOPE))
        return shortcut + dx


class SPADEDecoder(nn.Module):
    """feature (B, label_channels, H, W) -> image (B, 3, H*2^len(up_channels)*upscale, ...) after sigmoid.

    fc (3x3) -> num_middle_blocks blocks at hidden_channels -> for each entry of up_channels:
    nearest x2 upsample and a block to that width -> LeakyReLU -> 3x3 conv to 3*upscale^2 ->
    PixelShuffle(upscale) -> sigmoid.
    """

    def __init__(
        self,
        label_channels: int = 256,
        hidden_channels: int = 512,
        up_channels: Sequence[int] = (256, 64),
        num_middle_blocks: int = 6,
        spade_hidden: int = 128,
        upscale: int = 2,
    ) -> None:
        super().__init__()
        self.fc = nn.Conv2d(label_channels, hidden_channels, kernel_size=3, padding=1)
        self.middle_names = [f"G_middle_{i}" for i in range(num_middle_blocks)]
        for name in self.middle_names:
            self.add_module(name, SPADEResnetBlock(hidden_channels, hidden_channels, label_channels, spade_hidden))
        self.up_names = [f"up_{i}" for i in range(len(up_channels))]
        widths = [hidden_channels, *up_channels]
        for name, fin, fout in zip(self.up_names, widths[:-1], widths[1:]):
            self.add_module(name, SPADEResnetBlock(fin, fout, label_channels, spade_hidden))
        self.conv_img = nn.Sequential(
            nn.Conv2d(widths[-1], 3 * upscale**2, kernel_size=3, padding=1), nn.PixelShuffle(upscale)
        )

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        x = self.fc(feature)
        for name in self.middle_names:
            x = getattr(self, name)(x, feature)
        for name in self.up_names:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = getattr(self, name)(x, feature)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, _LEAKY_SLOPE)))
