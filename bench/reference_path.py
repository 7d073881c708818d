"""The reference's put-back as it runs, for the benchmarks' baselines.

The reference (antgroup/ditto-talkinghead, core/atomic_components/putback.py, class PutBack, used by
both its offline and online pipelines) does per frame:

    mask_w = cv2.warpAffine(mask, M_c2o[:2], (w, h), flags=cv2.INTER_LINEAR).clip(0, 1)   # (h, w) float32
    face_w = cv2.warpAffine(render, M_c2o[:2], (w, h), flags=cv2.INTER_LINEAR)            # (h, w, 3) float32
    result = np.empty((h, w, 3), np.uint8)
    <compiled blend>(mask_w, face_w, frame, result)

with `mask` its 512² single-channel float32 feather mask, `render` the decoder's output as HWC float32
in [0, 255], and a blend compiled with -O3 -std=c99 -march=native -ffast-math computing
m·face + (1 − m)·orig per channel, clamped to [0, 255] and truncated to uint8. `reference_blend.c`
(beside this file) is our own C for that blend, with the same math and flags; it is compiled with the
system C compiler (`cc`, or $CC) once per process, at session start (conftest.py), and loaded with
ctypes (which releases the GIL during the call, as the reference's nogil blend does).

`numpy_putback` is the NumPy put-back (the same warps, the blend in NumPy) that the benchmarks used
to compare against; neither reference pipeline runs it. It is kept as a second, labelled column.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np

BLEND_SOURCE = Path(__file__).with_name("reference_blend.c")
# The reference's build flags for its blend (its setup script); -fPIC/-shared make a loadable library.
BLEND_FLAGS = ("-O3", "-std=c99", "-march=native", "-ffast-math")

_u8 = ctypes.POINTER(ctypes.c_uint8)
_f32 = ctypes.POINTER(ctypes.c_float)


class ReferenceUnavailable(RuntimeError):
    """The compiled blend cannot be built here (no C compiler, or it failed)."""


def _blend():
    """The compiled blend, built once per process (ReferenceUnavailable says why not, every time)."""
    built = _build()
    if isinstance(built, ReferenceUnavailable):
        raise built
    return built


@functools.cache
def _build():
    try:
        return _compile()
    except ReferenceUnavailable as exc:
        return exc


def _compile():
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise ReferenceUnavailable("no C compiler (cc) to build the reference's compiled blend")
    with tempfile.TemporaryDirectory(prefix="ditto_fast_reference_blend_") as scratch:
        library = Path(scratch) / "reference_blend.so"
        command = [compiler, *BLEND_FLAGS, "-shared", "-fPIC", str(BLEND_SOURCE), "-o", str(library)]
        try:
            built = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ReferenceUnavailable(f"{' '.join(command)}: {exc}") from None
        if built.returncode != 0:
            raise ReferenceUnavailable(f"{' '.join(command)} failed: {built.stderr.strip()[:500]}")
        blend = ctypes.CDLL(str(library)).reference_blend  # mapped: the file may go with the folder
    blend.argtypes = (_f32, _f32, _u8, _u8, ctypes.c_int, ctypes.c_int)
    blend.restype = None
    return blend


def require_reference_blend() -> None:
    """Build the compiled blend now (ReferenceUnavailable if it cannot be)."""
    _blend()


def reference_putback(frame: np.ndarray, render: np.ndarray, mask: np.ndarray, m_c2o: np.ndarray) -> np.ndarray:
    """The reference's PutBack: frame (h, w, 3) uint8, render (S, S, 3) float32 in [0, 255], mask (S, S)
    float32, m_c2o (3, 3) crop→frame. Returns a new (h, w, 3) uint8 frame."""
    blend = _blend()
    h, w = frame.shape[:2]
    mask_w = cv2.warpAffine(mask, m_c2o[:2], (w, h), flags=cv2.INTER_LINEAR).clip(0, 1)
    face_w = cv2.warpAffine(render, m_c2o[:2], (w, h), flags=cv2.INTER_LINEAR)
    result = np.empty((h, w, 3), np.uint8)
    # warpAffine and clip return fresh C-contiguous arrays; the frame is checked, not copied.
    if not (frame.flags.c_contiguous and frame.dtype == np.uint8 and face_w.dtype == np.float32
            and mask_w.dtype == np.float32):
        raise ValueError("reference_putback: expects a C-contiguous uint8 frame and float32 render and mask")
    blend(mask_w.ctypes.data_as(_f32), face_w.ctypes.data_as(_f32), frame.ctypes.data_as(_u8),
          result.ctypes.data_as(_u8), h, w)
    return result


def numpy_putback(frame: np.ndarray, render: np.ndarray, mask: np.ndarray, m_c2o: np.ndarray) -> np.ndarray:
    """The NumPy put-back (not what the reference runs): the same two full-frame warps, the blend in NumPy."""
    dsize = (frame.shape[1], frame.shape[0])
    mask_w = cv2.warpAffine(mask, m_c2o[:2], dsize, flags=cv2.INTER_LINEAR).clip(0, 1)[..., None]
    face_w = cv2.warpAffine(render, m_c2o[:2], dsize, flags=cv2.INTER_LINEAR)
    return np.clip(mask_w * face_w + (1 - mask_w) * frame, 0, 255).astype(np.uint8)


# Benchmark column names (the README's).
PUTBACKS = {"compiled": reference_putback, "numpy": numpy_putback}
PUTBACK_LABELS = {"compiled": "reference (compiled PutBack)",
                  "numpy": "reference, NumPy put-back (not what the reference runs)"}
