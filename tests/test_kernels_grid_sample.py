"""Triton 5-D grid sample (kernels/grid_sample_3d.py) against the NumPy trilinear reference and torch's
grid_sample; on the GPU when there is one, else in Triton's interpreter on the CPU."""

from __future__ import annotations

import os

import numpy as np
import pytest
from grid_sample_reference import grid_sample_3d as reference_grid_sample

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # read when the kernel is decorated, i.e. at its module's import
pytest.importorskip("triton")

from ditto_fast.kernels.grid_sample_3d import grid_sample_3d  # noqa: E402
from ditto_fast.kernels.launch import launch_device  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = (torch.float32, torch.float16)
# fp32: sums of eight products, reordered or fused on the GPU. fp16: the output's rounding, one ulp.
TOLERANCE = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.float16: {"rtol": 1e-3, "atol": 1e-3}}


def _case(seed: int, volume_shape: tuple[int, ...], grid_shape: tuple[int, ...], dtype: torch.dtype,
          spread: float = 1.3) -> tuple[torch.Tensor, torch.Tensor]:
    """Volume of `dtype` and an fp32 grid uniform in ±spread (beyond ±1: samples in the zero padding)."""
    rng = np.random.default_rng(seed)
    volume = torch.from_numpy(rng.standard_normal(volume_shape).astype(np.float32)).to(DEVICE, dtype)
    grid = torch.from_numpy(rng.uniform(-spread, spread, (*grid_shape, 3)).astype(np.float32)).to(DEVICE)
    return volume, grid


def _torch_reference(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """torch's grid_sample in fp32, rounded to the volume's dtype as the kernel's output is."""
    out = torch.nn.functional.grid_sample(volume.float(), grid.float(), mode="bilinear", padding_mode="zeros",
                                          align_corners=False)
    return out.to(volume.dtype)


def _check(volume: torch.Tensor, grid: torch.Tensor) -> None:
    out = grid_sample_3d(volume, grid)
    assert out.dtype == volume.dtype and out.device == volume.device
    assert out.shape == (*volume.shape[:2], *grid.shape[1:4])
    tolerance = TOLERANCE[volume.dtype]
    expected = reference_grid_sample(volume.double().cpu().numpy(), grid.double().cpu().numpy())
    np.testing.assert_allclose(out.float().cpu().numpy(), expected, **tolerance)
    torch.testing.assert_close(out, _torch_reference(volume, grid), **tolerance)


SHAPES = {
    # (volume (N, C, D, H, W), grid (N, Do, Ho, Wo)): odd sizes; points not a multiple of the block.
    "odd_sizes_batch_2": ((2, 5, 3, 7, 9), (2, 4, 5, 6)),
    "channels_over_one_block": ((1, 37, 2, 3, 4), (1, 3, 3, 3)),
    "singleton_axes": ((3, 1, 1, 1, 5), (3, 1, 2, 70)),
    "liveportrait_volume": ((1, 32, 16, 64, 64), (1, 2, 8, 8)),  # the warp's input; few points (interpreter)
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", SHAPES)
def test_matches_references(name: str, dtype: torch.dtype) -> None:
    volume_shape, grid_shape = SHAPES[name]
    _check(*_case(len(name), volume_shape, grid_shape, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fp16_grid(dtype: torch.dtype) -> None:
    volume, grid = _case(3, (2, 3, 4, 5, 6), (2, 3, 4, 5), dtype)
    _check(volume, grid.half())


def test_points_wholly_outside_read_zeros_and_edges_read_half() -> None:
    volume = torch.rand((1, 2, 3, 4, 5), device=DEVICE) + 1  # no zeros inside
    g = torch.tensor([[1.5, 0, 0], [0, -3, 0], [0, 0, 9], [-1, 0, 0], [1, 0, 0]], device=DEVICE)
    out = grid_sample_3d(volume, g.reshape(1, 1, 1, 5, 3))[0, :, 0, 0]
    assert (out[:, :3] == 0).all()
    # At x = ∓1 the sample sits half a voxel outside the outermost centres, so half of it is padding;
    # y = 0 lies between rows 1 and 2 of 4, z = 0 on slice 1 of 3.
    torch.testing.assert_close(out[:, 3], volume[0, :, 1, 1:3, 0].mean(1) / 2)
    torch.testing.assert_close(out[:, 4], volume[0, :, 1, 1:3, -1].mean(1) / 2)


def test_non_finite_grid_points_read_zeros_like_torch() -> None:
    volume, grid = _case(5, (1, 2, 3, 4, 5), (1, 1, 2, 4), torch.float32)
    grid[0, 0, 0, 0, 0] = float("nan")
    grid[0, 0, 1, 1, 1] = float("inf")
    grid[0, 0, 1, 2, 2] = -float("inf")
    grid[0, 0, 0, 3] = 1e30
    out = grid_sample_3d(volume, grid)
    torch.testing.assert_close(out, _torch_reference(volume, grid))
    assert (out[..., 0, 0] == 0).all() and (out[..., 1, 1] == 0).all() and (out[..., 0, 3] == 0).all()


def test_non_contiguous_inputs() -> None:
    volume, grid = _case(6, (2, 4, 5, 3, 6), (2, 3, 4, 2), torch.float32)
    volume_view = volume.permute(0, 1, 2, 4, 3).contiguous().permute(0, 1, 2, 4, 3)
    grid_view = grid.transpose(1, 2).contiguous().transpose(1, 2)
    assert not volume_view.is_contiguous() and not grid_view.is_contiguous()
    torch.testing.assert_close(grid_sample_3d(volume_view, grid_view), grid_sample_3d(volume, grid))


def test_empty_output() -> None:
    volume, grid = _case(7, (1, 2, 3, 4, 5), (1, 0, 4, 5), torch.float32)
    assert grid_sample_3d(volume, grid).shape == (1, 2, 0, 4, 5)


def _bad_inputs() -> dict[str, tuple[torch.Tensor, torch.Tensor, type[Exception], str]]:
    volume, grid = _case(8, (1, 2, 3, 4, 5), (1, 2, 2, 2), torch.float32)
    return {
        "volume_4d": (volume[0], grid, ValueError, r"input must be \(N, C, D, H, W\)"),
        "grid_xy_only": (volume, grid[..., :2], ValueError, r"grid must be \(N, Do, Ho, Wo, 3\)"),
        "batch_mismatch": (volume, grid.expand(2, -1, -1, -1, -1), ValueError,
                           "grid batch 2 differs from input batch 1"),
        "volume_float64": (volume.double(), grid, TypeError, "input must be float16 or float32"),
        "grid_int": (volume, grid.int(), TypeError, "grid must be float16 or float32"),
        "grid_elsewhere": (volume, grid.to("meta"), ValueError, "grid is on meta but input is on"),
    }


BAD_INPUTS = _bad_inputs()


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_rejects_bad_inputs(name: str) -> None:
    volume, grid, error, message = BAD_INPUTS[name]
    with pytest.raises(error, match=f"^grid_sample_3d: {message}"):
        grid_sample_3d(volume, grid)


def test_cpu_tensors_need_the_interpreter() -> None:
    compiled_kernel = object()  # what triton.jit returns without TRITON_INTERPRET is not an InterpretedFunction
    with pytest.raises(RuntimeError, match="^op: CPU tensors need TRITON_INTERPRET=1"):
        launch_device("op", compiled_kernel, {"x": torch.zeros(1)})
