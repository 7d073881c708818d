"""Warping network (LivePortrait "W", spec §4.3): warps f_s from the source to the driving keypoints.

Keypoints are (x, y, z) in roughly [-1, 1] with x along width, y along height, z along depth.
Entry 0 of the K+1 motion candidates is the identity ("background"); entry k >= 1 belongs to
keypoint k-1.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ditto_fast.models.blocks import ConvBNAct, DownBlock, UpBlock

KEYPOINT_VARIANCE = 0.01
DENSE_MOTION_DEFAULTS: dict[str, int] = {
    "block_expansion": 32,
    "max_features": 1024,
    "num_blocks": 5,
    "compress": 4,
    "mask_kernel_size": 7,  # smaller only in tiny variants: the 7^3 mask conv dominates their run time
}

_HALVE_HW = (1, 2, 2)  # the hourglass pools and upsamples height and width only; depth stays


def identity_grid(depth: int, height: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(depth, height, width, 3) grid of (x, y, z) with coordinate 2*(i/(n-1)) - 1 along each axis.

    These are align_corners=True positions although every sampler here uses align_corners=False;
    the reference does the same, so the half-voxel mismatch is kept on purpose.
    """

    def axis(n: int) -> torch.Tensor:
        return 2 * (torch.arange(n, dtype=dtype, device=device) / (n - 1)) - 1

    z, y, x = torch.meshgrid(axis(depth), axis(height), axis(width), indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def sample_volume(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Trilinear sampling of (N,C,D,H,W) at grid (N,Do,Ho,Wo,3) with zero padding, align_corners=False."""
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def keypoint_gaussians(grid: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
    """exp(-|grid - kp|^2 / (2*variance)) for keypoints (B,K,3) over grid (D,H,W,3) -> (B,K,D,H,W)."""
    offset = grid - keypoints[:, :, None, None, None, :]
    return torch.exp(-0.5 * offset.square().sum(dim=-1) / KEYPOINT_VARIANCE)


class HourglassEncoder(nn.Module):
    """Stride-(1,2,2) conv blocks; returns the input and every block output (the skips)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        widths = [in_features] + [min(max_features, block_expansion * 2 ** (i + 1)) for i in range(num_blocks)]
        self.down_blocks = nn.ModuleList(
            DownBlock(3, widths[i], widths[i + 1], pool=_HALVE_HW) for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = [x]
        for block in self.down_blocks:
            skips.append(block(skips[-1]))
        return skips


class HourglassDecoder(nn.Module):
    """Upsampling conv blocks, each concatenated with the matching skip, then a final conv-BN-ReLU."""

    conv_bn_pairs = (("conv", "norm"),)

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.up_blocks = nn.ModuleList()
        for level in reversed(range(num_blocks)):
            deepest = level == num_blocks - 1
            # Below the deepest level the input is the previous output concatenated with its skip.
            in_width = (1 if deepest else 2) * min(max_features, block_expansion * 2 ** (level + 1))
            out_width = min(max_features, block_expansion * 2**level)
            self.up_blocks.append(UpBlock(3, in_width, out_width, scale=_HALVE_HW))
        self.out_channels = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_channels, self.out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_channels)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        x = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1])):
            x = torch.cat([block(x), skip], dim=1)
        return F.relu(self.norm(self.conv(x)))


class Hourglass(nn.Module):
    """3-D U-Net over (C, D, H, W); output has block_expansion + in_features channels."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_channels = self.decoder.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class DenseMotionNetwork(nn.Module):
    """Predicts the dense deformation field and the occlusion map from f_s and the two keypoint sets."""

    conv_bn_pairs = (("compress", "norm"),)

    def __init__(
        self,
        num_kp: int,
        feature_channel: int,
        reshape_depth: int,
        block_expansion: int,
        max_features: int,
        num_blocks: int,
        compress: int,
        mask_kernel_size: int,
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        in_features = (num_kp + 1) * (compress + 1)  # per candidate: heatmap + compressed features
        self.hourglass = Hourglass(block_expansion, in_features, num_blocks, max_features)
        self.mask = nn.Conv3d(
            self.hourglass.out_channels, num_kp + 1, kernel_size=mask_kernel_size, padding=mask_kernel_size // 2
        )
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress)
        self.occlusion = nn.Conv2d(self.hourglass.out_channels * reshape_depth, 1, kernel_size=7, padding=3)

    def forward(
        self, feature_3d: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns deformation (B,D,H,W,3), a sampling grid into f_s, and occlusion (B,1,H,W) in (0,1)."""
        feature = F.relu(self.norm(self.compress(feature_3d)))
        batch, channels, depth, height, width = feature.shape
        candidates = self.num_kp + 1
        grid = identity_grid(depth, height, width, feature.dtype, feature.device)

        # Candidate k >= 1 moves keypoint k-1 of the driving pose back onto the source pose.
        per_keypoint = grid - kp_driving[:, :, None, None, None, :] + kp_source[:, :, None, None, None, :]
        identity = grid.expand(batch, 1, depth, height, width, 3)
        sparse_motions = torch.cat([identity, per_keypoint], dim=1)  # (B, K+1, D, H, W, 3)

        repeated = feature.unsqueeze(1).expand(batch, candidates, channels, depth, height, width)
        deformed = sample_volume(
            repeated.reshape(batch * candidates, channels, depth, height, width),
            sparse_motions.reshape(batch * candidates, depth, height, width, 3),
        ).view(batch, candidates, channels, depth, height, width)

        heatmaps = keypoint_gaussians(grid, kp_driving) - keypoint_gaussians(grid, kp_source)
        background = heatmaps.new_zeros(batch, 1, depth, height, width)
        heatmaps = torch.cat([background, heatmaps], dim=1).unsqueeze(2)

        # Channel 5k is candidate k's heatmap, channels 5k+1..5k+4 its deformed features.
        hourglass_input = torch.cat([heatmaps, deformed], dim=2).flatten(1, 2)
        prediction = self.hourglass(hourglass_input)

        weights = F.softmax(self.mask(prediction), dim=1)
        deformation = (sparse_motions * weights.unsqueeze(-1)).sum(dim=1)
        occlusion = torch.sigmoid(self.occlusion(prediction.flatten(1, 2)))
        return deformation, occlusion


class WarpingNetwork(nn.Module):
    """(f_s (B,C,D,H,W), kp_source (B,K,3), kp_driving (B,K,3)) -> warped 2-D feature (B, block_expansion*2^n, H, W).

    `dense_motion_params` overrides entries of DENSE_MOTION_DEFAULTS (block_expansion, max_features,
    num_blocks, compress, mask_kernel_size) for the dense motion network.
    """

    def __init__(
        self,
        num_kp: int = 21,
        block_expansion: int = 64,
        num_down_blocks: int = 2,
        reshape_channel: int = 32,
        reshape_depth: int = 16,
        dense_motion_params: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        params = {**DENSE_MOTION_DEFAULTS, **(dense_motion_params or {})}
        unknown = set(params) - set(DENSE_MOTION_DEFAULTS)
        if unknown:
            raise ValueError(f"WarpingNetwork: unknown dense_motion_params {sorted(unknown)}")
        self.dense_motion_network = DenseMotionNetwork(num_kp, reshape_channel, reshape_depth, **params)
        out_channels = block_expansion * 2**num_down_blocks
        self.third = ConvBNAct(2, reshape_channel * reshape_depth, out_channels, kernel_size=3, negative_slope=0.01)
        self.fourth = nn.Conv2d(out_channels, out_channels, kernel_size=1)

    def dense_motion(
        self, feature_3d: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Deformation grid (B,D,H,W,3) and occlusion map (B,1,H,W); see DenseMotionNetwork."""
        return self.dense_motion_network(feature_3d, kp_source, kp_driving)

    def forward(self, feature_3d: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        deformation, occlusion = self.dense_motion(feature_3d, kp_source, kp_driving)
        warped = sample_volume(feature_3d, deformation).flatten(1, 2)  # channel index c*D + d
        return self.fourth(self.third(warped)) * occlusion
