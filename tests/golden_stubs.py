"""Stub networks for golden tests: fixed outputs, recorded inputs (golden README §3.4)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
