"""NumPy trilinear grid sample, the reference for the GridSample rewrites and the Triton kernel."""

from __future__ import annotations

import numpy as np


def grid_sample_3d(volume: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """NumPy trilinear grid sample: zero padding, align_corners=False (float64)."""
    n, c, d, h, w = volume.shape
    out = np.zeros((n, c, *grid.shape[1:4]))
    # unnormalise: ((g + 1) * size - 1) / 2 per axis; grid's last axis is (x→W, y→H, z→D)
    x, y, z = (((grid[..., i] + 1) * size - 1) / 2 for i, size in enumerate((w, h, d)))
    x0, y0, z0 = np.floor(x).astype(int), np.floor(y).astype(int), np.floor(z).astype(int)
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                xi, yi, zi = x0 + dx, y0 + dy, z0 + dz
                weight = ((1 - abs(x - xi)) * (1 - abs(y - yi)) * (1 - abs(z - zi)))
                inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h) & (zi >= 0) & (zi < d)
                for b in range(n):
                    values = volume[b][:, zi[b].clip(0, d - 1), yi[b].clip(0, h - 1), xi[b].clip(0, w - 1)]
                    out[b] += values * (weight[b] * inside[b])
    return out
