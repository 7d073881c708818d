"""Eye openness and gaze features from the 478 MediaPipe landmarks (normalised, 3-D).

Both eyes are computed side by side on an "eye" axis; every reduction runs over the xyz axis
alone, so each row of a batch gives the same float32 bits as a call on that row by itself.
"""

from __future__ import annotations

import numpy as np

# Landmark indices per eye, in the order (left, right).
_OUTER = [33, 263]  # outer corner
_INNER = [133, 362]  # inner corner
_IRIS = [468, 473]  # iris centre
# Three lower/upper eyelid pairs per eye: [pair][eye] -> (lower, upper).
_LID_PAIRS = [
    [(145, 159), (374, 386)],
    [(144, 160), (373, 387)],
    [(153, 158), (380, 385)],
]
_EPS = 1e-8  # keeps closed eyes and a centred iris finite (0 / eps = 0)


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance over the last (xyz) axis, float32."""
    return np.sqrt(((a - b) ** 2).sum(-1))


def _unit(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Direction b → a, divided by its length + eps."""
    return (a - b) / (_distance(a, b)[..., None] + _EPS)


def eye_features(lmk478: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eye_open (K, 2), eye_ball (K, 6)) float32 of landmarks (K, 478, 3); K is 1 for one face.

    eye_open = [left, right] lid gap sum / eye width. eye_ball is the iris offset from the eye
    centre, expressed as (unit offset − unit inner→outer corner direction) · offset length,
    flattened xyz-major with the eyes interleaved: [Lx, Rx, Ly, Ry, Lz, Rz].
    """
    lmk = np.asarray(lmk478, dtype=np.float32)
    if lmk.ndim != 3 or lmk.shape[1:] != (478, 3):
        raise ValueError(f"eye_features: expected landmarks of shape (K, 478, 3), got {lmk.shape}")
    outer, inner, iris = lmk[:, _OUTER], lmk[:, _INNER], lmk[:, _IRIS]  # (K, eye, xyz)
    width = _distance(outer, inner)  # (K, eye)

    lid_gaps = [_distance(lmk[:, [p[0] for p in pair]], lmk[:, [p[1] for p in pair]]) for pair in _LID_PAIRS]
    eye_open = (lid_gaps[0] + lid_gaps[1] + lid_gaps[2]) / (width + _EPS)

    centre = (outer + inner) * 0.5
    move_direction = _unit(iris, centre) - _unit(outer, inner)
    move = move_direction * _distance(iris, centre)[..., None]  # (K, eye, xyz)
    eye_ball = move.transpose(0, 2, 1).reshape(-1, 6)
    return eye_open, eye_ball
