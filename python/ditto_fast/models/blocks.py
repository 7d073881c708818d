"""Conv + BatchNorm + activation blocks shared by the appearance extractor and the warp network.

Every block keeps its convolution in `conv` and its BatchNorm in `norm`, the attribute names the
official checkpoints use, and lists that pair in `conv_bn_pairs` so `folding.fold_batch_norms`
can merge the norm into the conv at load time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_BATCH_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


class ConvBNAct(nn.Module):
    """conv (same padding) -> BatchNorm -> ReLU, or LeakyReLU when `negative_slope` > 0."""

    conv_bn_pairs = (("conv", "norm"),)

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        negative_slope: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in _CONV:
            raise ValueError(f"ConvBNAct: spatial_dims must be 2 or 3, got {spatial_dims}")
        self.conv = _CONV[spatial_dims](in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm = _BATCH_NORM[spatial_dims](out_channels)
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        if self.negative_slope > 0.0:
            return F.leaky_relu(x, self.negative_slope)
        return F.relu(x)


class DownBlock(ConvBNAct):
    """ConvBNAct followed by average pooling with kernel = stride = `pool`."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        pool: tuple[int, ...],
        kernel_size: int = 3,
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, kernel_size)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = F.avg_pool2d if x.dim() == 4 else F.avg_pool3d
        return pool(super().forward(x), self.pool)


class UpBlock(ConvBNAct):
    """Nearest-neighbour upsampling by `scale` followed by ConvBNAct."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        scale: tuple[int, ...],
        kernel_size: int = 3,
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, kernel_size)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return super().forward(x)
