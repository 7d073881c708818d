"""LMDM's diffusion schedule and DDIM sampler tables, in NumPy (DITTO_SPEC §5.10).

The reference computes these once at setup; they are reproduced here bit for bit so a sampler
built on them feeds the network exactly the time steps and coefficients the reference uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_TRAIN_TIMESTEPS = 1000
COSINE_OFFSET = 0.008
MAX_BETA = 0.999


def cosine_betas(num_timesteps: int = NUM_TRAIN_TIMESTEPS, s: float = COSINE_OFFSET) -> np.ndarray:
    """β_t of the cosine schedule, (num_timesteps,) float32, computed in float64 then rounded."""
    tau = np.linspace(0.0, num_timesteps, num_timesteps + 1, dtype=np.float64)
    alpha_bar = np.cos((tau / num_timesteps + s) / (1.0 + s) * np.pi * 0.5) ** 2
    alpha_bar = alpha_bar / alpha_bar[0]
    betas = 1.0 - alpha_bar[1:] / alpha_bar[:-1]
    return np.clip(betas, 0.0, MAX_BETA).astype(np.float32)


def cosine_alphas_cumprod(num_timesteps: int = NUM_TRAIN_TIMESTEPS,
                          s: float = COSINE_OFFSET) -> np.ndarray:
    """ᾱ_t = ∏ (1 − β), (num_timesteps,) float32.

    The reference takes the product with torch.cumprod on float32, which accumulates in float64
    on CPU and rounds each output once; a float32 running product drifts up to 4.8e-7 from it.
    """
    alphas = (np.float32(1.0) - cosine_betas(num_timesteps, s)).astype(np.float32)
    return np.cumprod(alphas.astype(np.float64)).astype(np.float32)


def ddim_time_pairs(num_steps: int, num_timesteps: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """(t, t_next) of every sampling step, (num_steps, 2) int64, from t = T−1 down to t_next = −1.

    The final pair has t_next = −1: that step returns x0 instead of updating x.
    """
    if num_steps < 1 or num_steps > num_timesteps:
        raise ValueError(f"ddim_time_pairs: num_steps must be in [1, {num_timesteps}], got {num_steps}")
    # int64 cast truncates toward zero, as the reference's int() does.
    times = np.linspace(-1.0, num_timesteps - 1, num_steps + 1).astype(np.int64)[::-1]
    return np.stack([times[:-1], times[1:]], axis=1)


@dataclass(frozen=True)
class DdimTables:
    """Per-step DDIM constants; entry i of the float tables belongs to update i (all but the last pair).

    Update i: x = x0·alpha_next_sqrt[i] + c[i]·pred_noise + sigma[i]·noise[i].
    """

    time_pairs: np.ndarray  # (S, 2) int64
    alpha_next_sqrt: np.ndarray  # (S-1,) float32
    sigma: np.ndarray  # (S-1,) float32
    c: np.ndarray  # (S-1,) float32

    @property
    def time_cond(self) -> np.ndarray:
        """The network's time input of every step, (S,) int64."""
        return self.time_pairs[:, 0]


def ddim_tables(num_steps: int, alphas_cumprod: np.ndarray | None = None,
                eta: float = 1.0) -> DdimTables:
    """DDIM time pairs and σ / c / √ᾱ_next tables in float32, as the reference's NumPy sampler builds them."""
    if alphas_cumprod is None:
        alphas_cumprod = cosine_alphas_cumprod()
    alphas_cumprod = np.asarray(alphas_cumprod, dtype=np.float32)
    pairs = ddim_time_pairs(num_steps, len(alphas_cumprod))
    updates = pairs[:-1]
    alpha = alphas_cumprod[updates[:, 0]]
    alpha_next = alphas_cumprod[updates[:, 1]]
    one = np.float32(1.0)
    # Same float32 operation order as the reference; elementwise, so the results are bit-identical.
    sigma = np.float32(eta) * np.sqrt((one - alpha / alpha_next) * (one - alpha_next) / (one - alpha))
    c = np.sqrt(one - alpha_next - sigma ** 2)
    return DdimTables(time_pairs=pairs, alpha_next_sqrt=np.sqrt(alpha_next).astype(np.float32),
                      sigma=sigma.astype(np.float32), c=c.astype(np.float32))
