"""Zero-cost stand-ins for the render path's networks, and a synthetic still-image avatar.

They let a benchmark measure everything around the networks (stitch, paste-back, frame handoff,
scheduling) and a test drive the whole engine in a second: each network answers at once with
preallocated arrays of its contract shapes (read-only, so a stage that writes into a network's
output fails loudly instead of corrupting the next frame).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ditto_fast.avatar import Avatar
from ditto_fast.backends.base import HostExecutor
from ditto_fast.contract import HUBERT_LENGTHS, MODELS, TensorInfo, hubert_frames
from ditto_fast.ops.paste_back import PASTE_SIZE
from ditto_fast.stages.motion import MOTION_DIM, NUM_BINS, SEQ_FRAMES

Response = Callable[..., tuple[np.ndarray, ...]]

# The networks a render needs once the avatar exists (registration's networks are not doubled).
RENDER_NETWORKS = ("hubert", "lmdm", "stitch_network", "warp_network", "decoder")
# Crop side / the frame's shorter side: the reference's default crop (crop_scale 2.3 around the
# detected face) measured at about 81 % of the shorter side, the 512² render scaled up 2.27× at
# 1432². (0.57 was used before; a smaller crop flatters a method that works only on the crop.)
CROP_SHARE = 0.81
CROP_ROTATION_DEG = 4.0
STITCH_DELTA = np.float32(1e-3)  # the real stitch MLP nudges the driving keypoints a little


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _peaked_logits(num_bins: int = NUM_BINS) -> np.ndarray:
    """(num_bins,) float32 pose logits peaked on the middle bin: a head turned by about 0°."""
    bins = np.arange(num_bins, dtype=np.float32)
    return -((bins - (num_bins - 1) / 2) ** 2) / 8


class ZeroCostNetwork:
    """A `Network` whose outputs cost nothing: `respond(**arrays)` returns preallocated arrays.

    Inputs are checked against the contract by name and fixed dimensions, so a double still
    catches a stage that feeds its network the wrong tensor.
    """

    device = "cpu"
    max_batch = None

    def __init__(self, name: str, respond: Response) -> None:
        spec = MODELS[name]
        self.name = name
        self.path = Path(f"<zero-cost {name}>")
        self.inputs = tuple(TensorInfo(t.name, t.shape, t.dtype) for t in spec.inputs)
        self.outputs = tuple(TensorInfo(t.name, t.shape, t.dtype) for t in spec.outputs)
        self._respond = respond

    def __call__(self, **arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        if arrays.keys() != {t.name for t in self.inputs}:
            raise ValueError(f"{self.path}: expected inputs {[t.name for t in self.inputs]}, got {sorted(arrays)}")
        for expected in self.inputs:
            shape = np.shape(arrays[expected.name])
            if len(shape) != len(expected.shape) or any(
                    isinstance(e, int) and e != s for e, s in zip(expected.shape, shape)):
                raise ValueError(f"{self.path}: input {expected.name!r} has shape {shape}, "
                                 f"expected {list(expected.shape)}")
        return self._respond(**arrays)

    def executor(self) -> HostExecutor:
        return HostExecutor(self)


def _constant(*outputs: np.ndarray) -> Response:
    outputs = tuple(_read_only(o) for o in outputs)
    return lambda **_: outputs


def _decoded_face() -> np.ndarray:
    """(1, 3, 512, 512) float32 in [0, 1]: smooth colour ramps and a bright disc, so a pasted face
    is visible and differs from any background."""
    y, x = np.mgrid[0:PASTE_SIZE, 0:PASTE_SIZE].astype(np.float32) / (PASTE_SIZE - 1)
    disc = ((x - 0.5) ** 2 + (y - 0.45) ** 2 < 0.1).astype(np.float32)
    return np.stack([x, y, 0.25 + 0.75 * disc])[None]


def _lmdm_motion() -> np.ndarray:
    """(1, 80, 265) motion clip: neutral scale and pose, the expression swinging like speech."""
    clip = np.zeros((1, SEQ_FRAMES, MOTION_DIM), np.float32)
    clip[..., 0] = 0.5  # stored as scale − 1
    for axis in range(3):
        clip[0, :, 1 + axis * NUM_BINS:1 + (axis + 1) * NUM_BINS] = _peaked_logits()
    swing = np.sin(np.arange(SEQ_FRAMES, dtype=np.float32) * 0.7)[:, None]
    clip[0, :, MOTION_DIM - 63:] = 0.01 * swing
    return clip


def _stitch(kp_source: np.ndarray, kp_driving: np.ndarray) -> tuple[np.ndarray]:
    return (kp_driving + STITCH_DELTA,)


def _hubert_response() -> Response:
    bank = _read_only(np.zeros((hubert_frames(HUBERT_LENGTHS[-1]), 1024), np.float32))

    def respond(input_values: np.ndarray) -> tuple[np.ndarray]:
        frames = hubert_frames(input_values.shape[1])
        if not 0 < frames <= len(bank):
            raise ValueError(f"<zero-cost hubert>: input_values of {input_values.shape[1]} samples is outside "
                             f"[400, {HUBERT_LENGTHS[-1]}]")
        return (bank[:frames],)

    return respond


def zero_cost_networks() -> dict[str, ZeroCostNetwork]:
    """The render path's networks (`RENDER_NETWORKS`) as zero-cost doubles, by contract name."""
    responses = {
        "hubert": _hubert_response(),
        "lmdm": _constant(np.zeros((1, SEQ_FRAMES, MOTION_DIM), np.float32), _lmdm_motion()),
        "stitch_network": _stitch,
        "warp_network": _constant(np.full((1, 256, 64, 64), 0.5, np.float32)),
        "decoder": _constant(_decoded_face()),
    }
    return {name: ZeroCostNetwork(name, responses[name]) for name in RENDER_NETWORKS}


def crop_to_frame(height: int, width: int, crop_share: float = CROP_SHARE) -> np.ndarray:
    """(3, 3) float32 crop→frame matrix: the 512² crop scaled to `crop_share` of the shorter side,
    turned by CROP_ROTATION_DEG, centred a little above the frame's centre (where a face sits)."""
    if not 0 < crop_share <= 1:
        raise ValueError(f"crop_share must be in (0, 1], got {crop_share}")
    scale = crop_share * min(height, width) / PASTE_SIZE
    angle = np.radians(CROP_ROTATION_DEG)
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([width / 2, height * 0.45])
    shift = centre - linear @ np.full(2, PASTE_SIZE / 2)
    return np.vstack([np.hstack([linear, shift[:, None]]), [0, 0, 1]]).astype(np.float32)


def still_avatar(height: int, width: int, crop_share: float = CROP_SHARE, seed: int = 0) -> Avatar:
    """An image avatar of a (height, width) still with plausible motion (neutral pose, scale 1.5,
    canonical keypoints within ±0.4) and a face-sized crop; its background is random pixels."""
    rng = np.random.default_rng(seed)
    kp = rng.uniform(-0.4, 0.4, (1, 1, 63)).astype(np.float32)
    logits = np.broadcast_to(_peaked_logits(), (1, 1, NUM_BINS)).copy()
    motion = {"pitch": logits, "yaw": logits.copy(), "roll": logits.copy(), "t": np.zeros((1, 1, 3), np.float32),
              "exp": np.zeros((1, 1, 63), np.float32), "scale": np.full((1, 1, 1), 1.5, np.float32), "kp": kp}
    return Avatar(
        motion=motion, f_s=np.zeros((1, 1, 32, 16, 64, 64), np.float32),
        m_c2o=crop_to_frame(height, width, crop_share)[None],
        eye_open=np.full((1, 2), 0.9, np.float32), eye_ball=np.zeros((1, 6), np.float32), sc=kp.reshape(63).copy(),
        frames=rng.integers(0, 256, (1, height, width, 3), dtype=np.uint8), is_image=True, source="<still avatar>",
    )
