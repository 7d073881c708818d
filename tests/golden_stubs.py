"""Stub networks for golden tests: fixed outputs, recorded inputs (golden README §3.4)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class FixedOutputNetwork:
    """Returns `outputs` on every call, or `outputs[i]` on call i when given a list of tuples;
    records every call's inputs in `calls`."""

    def __init__(self, outputs: tuple[np.ndarray, ...] | Sequence[tuple[np.ndarray, ...]],
                 per_call: bool = False) -> None:
        self._outputs = outputs
        self._per_call = per_call
        self.calls: list[dict[str, np.ndarray]] = []

    def __call__(self, **arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        self.calls.append({k: np.array(v, copy=True) for k, v in arrays.items()})
        if self._per_call:
            return tuple(self._outputs[len(self.calls) - 1])
        return tuple(self._outputs)


def detector_outputs(golden, prefix: str) -> tuple[np.ndarray, ...]:
    """SCRFD raw outputs in contract order: scores, boxes, kps for strides 8, 16, 32."""
    return tuple(golden[f"{prefix}{kind}_s{stride}"] for kind in ("scores", "boxes", "kps")
                 for stride in (8, 16, 32))


class HubertStub:
    """Golden README §3.1: per 400-sample frame (hop 320), float64 mean m and population
    variance q; encoding_out[j] = float32(m·v1 + q·v2). Counts its calls."""

    name = "hubert"

    def __init__(self, v1: np.ndarray, v2: np.ndarray) -> None:
        self.v1 = v1.astype(np.float64)
        self.v2 = v2.astype(np.float64)
        self.calls = 0

    def __call__(self, *, input_values: np.ndarray) -> tuple[np.ndarray]:
        assert input_values.dtype == np.float32 and input_values.shape[0] == 1
        self.calls += 1
        frames = sliding_window_view(input_values[0].astype(np.float64), 400)[::320]
        mean = frames.mean(axis=1)
        variance = ((frames - mean[:, None]) ** 2).mean(axis=1)
        return ((mean[:, None] * self.v1 + variance[:, None] * self.v2).astype(np.float32),)


class LmdmStub:
    """Golden README §3.2 LMDM stub; records every call so tests can inspect each clip."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        f64 = {k: np.asarray(weights[f"lmdm_{k}"], dtype=np.float64) for k in ("Wx", "Wf", "Wc", "wt", "bh", "Wo")}
        self.Wx, self.Wf, self.Wc = f64["Wx"], f64["Wf"], f64["Wc"]
        self.wt, self.bh, self.Wo = f64["wt"], f64["bh"], f64["Wo"]
        self.a = np.asarray(weights["lmdm_sqrt_recip1m_alphas_cumprod"], dtype=np.float32)
        self.b = np.asarray(weights["lmdm_sqrt_recipm1_alphas_cumprod"], dtype=np.float32)
        self.calls: list[dict[str, np.ndarray]] = []

    def __call__(self, *, x: np.ndarray, cond_frame: np.ndarray, cond: np.ndarray,
                 time_cond: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert x.dtype == cond_frame.dtype == cond.dtype == np.float32 and time_cond.dtype == np.int64
        t = int(time_cond[0])
        frame = cond_frame.astype(np.float64)
        h = np.tanh(x.astype(np.float64) @ self.Wx + cond.astype(np.float64) @ self.Wc
                    + (frame @ self.Wf)[:, None, :] + (time_cond[0] / 1000) * self.wt + self.bh)
        x_start = (0.9 * frame[:, None, :] + h @ self.Wo).astype(np.float32)
        pred_noise = self.a[t] * x - x_start / self.b[t]
        self.calls.append(dict(x=x.copy(), cond_frame=cond_frame.copy(), cond=cond.copy(), t=t, x_start=x_start))
        return pred_noise, x_start

    def clips(self, num_steps: int) -> list[list[dict[str, np.ndarray]]]:
        assert len(self.calls) % num_steps == 0
        return [self.calls[k:k + num_steps] for k in range(0, len(self.calls), num_steps)]


class StitchStub:
    """Golden README §3.3 stitching MLP (126→128→128→64→65, ReLU); records what it was handed."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.layers = [(weights[f"stitch_W{i}"], weights[f"stitch_b{i}"]) for i in range(4)]
        self.kp_driving: list[np.ndarray] = []

    def __call__(self, *, kp_source: np.ndarray, kp_driving: np.ndarray) -> tuple[np.ndarray]:
        assert kp_source.shape == kp_driving.shape == (1, 21, 3)
        assert kp_source.dtype == kp_driving.dtype == np.float32
        self.kp_driving.append(kp_driving.copy())
        h = np.concatenate([kp_source.reshape(1, 63), kp_driving.reshape(1, 63)], axis=1)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w.T + b
            if i < 3:
                h = np.maximum(h, 0)
        out = kp_driving + h[:, :63].reshape(1, 21, 3)
        out[..., :2] += h[:, None, 63:65]
        return (out.astype(np.float32),)
