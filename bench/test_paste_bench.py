"""Paste-back of one rendered 512² face into its frame: the reference's method against the native kernel.

The reference warps mask and render over the whole frame with two ``cv2.warpAffine`` calls and blends
the whole frame in NumPy; the native kernel (src/paste_back.cpp) samples, blends and writes only the
frame window the crop lands on, in one pass, on two threads. The crop covers 45 % of the frame's
shorter side, slightly rotated, as a face crop of a portrait video does.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ditto_fast._core import paste_back
from ditto_fast.ops.paste_back import PASTE_SIZE, paste_mask

SIZES = {"1432": (1432, 1432), "1080p": (1080, 1920)}
FACE_SHARE = 0.45  # crop side / the frame's shorter side
FACE_ROTATION_DEG = 8.0


def _crop_to_frame(height: int, width: int) -> np.ndarray:
    """3×3 float32 crop→frame matrix: the crop scaled to FACE_SHARE of the shorter side, rotated, with
    its centre a little above the frame's centre (where a face sits)."""
    scale = FACE_SHARE * min(height, width) / PASTE_SIZE
    a = np.radians(FACE_ROTATION_DEG)
    linear = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    centre = np.array([width / 2 + 0.37, height * 0.42 + 0.61])
    shift = centre - linear @ np.full(2, PASTE_SIZE / 2)
    return np.vstack([np.hstack([linear, shift[:, None]]), [0, 0, 1]]).astype(np.float32)


@pytest.fixture(params=list(SIZES))
def scene(request: pytest.FixtureRequest) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    height, width = SIZES[request.param]
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    render = (rng.integers(0, 1021, size=(PASTE_SIZE, PASTE_SIZE, 3)) / 4).astype(np.float32)
    return request.param, frame, render, paste_mask(), _crop_to_frame(height, width)


def _reference_paste(frame: np.ndarray, render: np.ndarray, mask: np.ndarray, m_c2o: np.ndarray) -> np.ndarray:
    """The reference's put-back: full-frame warps of mask and render, then the NumPy blend."""
    dsize = (frame.shape[1], frame.shape[0])
    mask_w = cv2.warpAffine(mask, m_c2o[:2], dsize, flags=cv2.INTER_LINEAR).clip(0, 1)[..., None]
    face_w = cv2.warpAffine(render, m_c2o[:2], dsize, flags=cv2.INTER_LINEAR)
    return np.clip(mask_w * face_w + (1 - mask_w) * frame, 0, 255).astype(np.uint8)


def test_reference_cv2_full_frame(benchmark, scene):
    size, frame, render, mask, m_c2o = scene
    benchmark.group = f"paste-back {size}"
    benchmark(_reference_paste, frame, render, mask, m_c2o)


def test_native_kernel_two_threads(benchmark, scene):
    size, frame, render, mask, m_c2o = scene
    benchmark.group = f"paste-back {size}"
    out = benchmark(paste_back, frame, render, mask, m_c2o, threads=2)
    # Same output as the reference's method, up to OpenCV releases' differing warps (PasteBack's
    # docstring): a sanity check that both benchmarks do the same job.
    diff = np.abs(out.astype(np.int16) - _reference_paste(frame, render, mask, m_c2o))
    assert diff.max() <= 8 and (diff > 1).mean() < 0.01
