"""Clip sampling: an optional capability an LMDM network may offer beside the `Network` call.

The DDIM loop calls the guided LMDM once per step with the same `cond_frame`, `cond` and time
table. A network that can hoist the work depending only on those exposes an object with this
protocol as its `clip_sampling` attribute: `prepare_clip` once per clip, then `guided_step`
per step. Networks without the attribute (or with it set to None) are called step by step
through the plain `Network` protocol.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class ClipSampling(Protocol):
    def prepare_clip(self, kp_cond: np.ndarray, cond: np.ndarray, time_table: np.ndarray) -> Any:
        """A handle for one clip: kp_cond (1, 265), cond (1, 80, C), the DDIM time steps (S,) int64."""
        ...

    def guided_step(self, x: np.ndarray, clip: Any, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(pred_noise, x_start) for x (1, 80, 265) at time_table[step], as the plain LMDM call gives them."""
        ...


def clip_sampling_of(network: object) -> ClipSampling | None:
    """The clip sampling a network offers, or None for a plain network."""
    offered = getattr(network, "clip_sampling", None)
    if offered is None:
        return None
    if not isinstance(offered, ClipSampling):
        raise TypeError(f"{network!r}: its clip_sampling is a {type(offered).__name__}, "
                        "which lacks prepare_clip() or guided_step()")
    return offered
