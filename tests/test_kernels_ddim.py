"""Triton DDIM step (kernels/ddim.py): bit-identical to the NumPy expression and to DDIMSampler's loop;
on the GPU when there is one, else in Triton's interpreter on the CPU."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ditto_fast.diffusion_schedule import ddim_tables
from ditto_fast.stages.motion import CLIP_SHAPE, DDIMSampler, GaussianNoise

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # read when the kernel is decorated, i.e. at its module's import
pytest.importorskip("triton")

from ditto_fast.kernels.ddim import ddim_step, ddim_update  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _device(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(DEVICE)


def _normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("shape", [CLIP_SHAPE, (3, 7, 11), (2049,)], ids=str)  # one clip; less than / over blocks
@pytest.mark.parametrize("step", [0, 24, 48])
def test_update_is_the_numpy_expression_bit_for_bit(shape: tuple[int, ...], step: int) -> None:
    rng = np.random.default_rng(step)
    x_start, pred_noise, noise = (_normal(rng, shape) * 3 for _ in range(3))
    t = ddim_tables(50)
    a, c, sigma = t.alpha_next_sqrt[step], t.c[step], t.sigma[step]
    expected = x_start * a + c * pred_noise + sigma * noise  # DDIMSampler.sample's expression
    out = ddim_update(_device(x_start), _device(pred_noise), _device(noise), float(a), float(c), float(sigma))
    np.testing.assert_array_equal(out.cpu().numpy(), expected)


class _StubLmdm:
    """A deterministic stand-in for the network, nonlinear in x and dependent on the time step."""

    def __call__(self, *, x, cond_frame, cond, time_cond):
        scale = np.float32(1 + time_cond[0] / 1000)
        pred_noise = np.tanh(x * scale + cond_frame[:, None, :]).astype(np.float32)
        x_start = (x * np.float32(0.9) - pred_noise * np.float32(0.2) + cond[..., :265]).astype(np.float32)
        return pred_noise, x_start


def test_sampler_loop_matches_ddim_sampler() -> None:
    """The sampler's loop with every update on the device ends on DDIMSampler.sample's clip exactly."""
    steps = 5
    sampler = DDIMSampler.drawn_from(steps, GaussianNoise(seed=3))
    rng = np.random.default_rng(4)
    kp_cond, cond, x_T = _normal(rng, (1, 265)), _normal(rng, (1, 80, 1103)), _normal(rng, CLIP_SHAPE)
    lmdm = _StubLmdm()
    expected = sampler.sample(lmdm, kp_cond, cond, x_T)

    step_noise = _device(sampler.step_noise)
    x = _device(x_T)
    for i, (time, _) in enumerate(sampler.tables.time_pairs):
        pred_noise, x_start = lmdm(x=x.cpu().numpy(), cond_frame=kp_cond, cond=cond,
                                   time_cond=np.array([time], dtype=np.int64))
        x = ddim_step(_device(x_start), _device(pred_noise), sampler.tables, i, step_noise)
    np.testing.assert_array_equal(x.cpu().numpy(), expected)


def test_out_may_alias_an_input_and_the_last_step_returns_x_start() -> None:
    rng = np.random.default_rng(5)
    x_start, pred_noise, noise = (_device(_normal(rng, (4, 300))) for _ in range(3))
    expected = ddim_update(x_start, pred_noise, noise, 0.5, 0.25, 0.125)
    in_place = x_start.clone()
    assert ddim_update(in_place, pred_noise, noise, 0.5, 0.25, 0.125, out=in_place) is in_place
    assert torch.equal(in_place, expected)

    tables, last = ddim_tables(5), 4
    step_noise = noise.expand(last, *noise.shape)
    assert ddim_step(x_start, pred_noise, tables, last, step_noise) is x_start
    out = torch.zeros_like(x_start)
    assert ddim_step(x_start, pred_noise, tables, last, step_noise, out=out) is out
    assert torch.equal(out, x_start)


def _bad_update_cases() -> dict[str, tuple[dict[str, object], type[Exception], str]]:
    x = torch.zeros((2, 5), device=DEVICE)
    return {
        "float64": ({"pred_noise": x.double()}, TypeError, "pred_noise must be float32"),
        "other_shape": ({"noise": x[:1]}, ValueError, r"noise has shape \(1, 5\), x_start \(2, 5\)"),
        "strided": ({"x_start": torch.zeros((5, 2), device=DEVICE).t()}, ValueError, "x_start must be contiguous"),
        "out_half": ({"out": x.half()}, ValueError, r"out must be a contiguous float32 tensor of shape \(2, 5\)"),
        "elsewhere": ({"noise": x.to("meta")}, ValueError, "noise is on meta but x_start is on"),
    }


BAD_UPDATES = _bad_update_cases()


@pytest.mark.parametrize("name", BAD_UPDATES)
def test_update_rejects_bad_inputs(name: str) -> None:
    x = torch.zeros((2, 5), device=DEVICE)
    args: dict[str, object] = {"x_start": x, "pred_noise": x, "noise": x, "alpha_next_sqrt": 1.0, "c": 0.0,
                               "sigma": 0.0}
    overrides, error, message = BAD_UPDATES[name]
    args.update(overrides)
    with pytest.raises(error, match=f"^ddim_update: {message}"):
        ddim_update(**args)


def test_step_rejects_bad_steps_and_noise() -> None:
    x = torch.zeros((2, 5), device=DEVICE)
    tables = ddim_tables(4)
    with pytest.raises(ValueError, match=r"^ddim_step: step must be in \[0, 4\), got 4"):
        ddim_step(x, x, tables, 4, x.expand(3, 2, 5))
    with pytest.raises(ValueError, match="^ddim_step: step_noise must hold 3 tensors along its first axis"):
        ddim_step(x, x, tables, 0, x)
