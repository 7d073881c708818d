"""Paste-back of one rendered 512² face into its frame: the reference's put-back against the native kernel.

- reference (compiled PutBack): what the reference runs (bench/reference_path.py): two full-frame
  ``cv2.warpAffine`` (mask, render), a fresh ``np.empty`` result and the compiled blend
  (bench/reference_blend.c, built at session start with the reference's flags; skipped, with the
  reason, where no C compiler is found). Input ``hwc``: the render as HWC float32 in [0, 255], what its
  PutBack is given; ``chw``: the decoder's (1, 3, 512, 512) output in [0, 1], with the reference's
  transpose and clip ×255 before the PutBack (what the renderer hands our kernel, below).
- reference, NumPy put-back (not what the reference runs): the same warps with the blend in NumPy,
  the baseline these figures used before; kept as a labelled second column.
- ours: the native kernel (src/paste_back.cpp, two threads), which samples, blends and writes only
  the frame window the crop lands on, for the render layouts ``hwc`` (float32 [0, 255]) and ``chw``
  (the decoder's (1, 3, S, S) [0, 1] output, which `FrameRenderer.paste_frame` passes) and the
  placements ``new`` (out=None: a new frame, every row copied), ``slot`` (into a preallocated
  buffer, as into a ring slot: every row copied) and ``inplace`` (out=frame: only the window).

The crop is the reference's default: 81 % of the frame's shorter side (crop_scale 2.3,
`benchmark_doubles.CROP_SHARE`), turned by 4°, a little above the frame's centre.

Memory-bandwidth floor (extra_info of the ``ours`` cases): bytes one call touches,
out of place  H·W·3 (frame read) + H·W·3 (out write) + S²·3·4 (render read, float32) + S²·4 (mask read),
in place      2·3·(window area, the crop's bounding box in the frame) + S²·3·4 + S²·4,
S = 512; the copy bandwidth is that of ``np.copyto`` between two 256 MB buffers (far above the
32 MB last-level cache of the 2-core EPYC), bytes read + written per second, best of a few, on one thread and on two
(halves); the floor is bytes / the better of the two, and ``time_over_floor`` the median time / floor
(``fastest_over_floor``: the fastest round's).
A frame-sized copy's bandwidth (mostly cache-resident) is recorded beside it for reference.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from reference_path import PUTBACK_LABELS, PUTBACKS, ReferenceUnavailable, require_reference_blend

from ditto_fast._core import paste_back
from ditto_fast.ops.paste_back import PASTE_SIZE, paste_mask, render_to_hwc
from ditto_fast.tools.benchmark_doubles import CROP_SHARE, crop_to_frame

SIZES = {"1432": (1432, 1432), "1080p": (1080, 1920)}
THREADS = 2
LARGE_COPY_BYTES = 256 << 20


@pytest.fixture(scope="module", params=list(SIZES))
def scene(request: pytest.FixtureRequest) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(size, frame, decoder output (1, 3, S, S) in [0, 1], mask, crop→frame matrix)."""
    height, width = SIZES[request.param]
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    decoded = (rng.integers(0, 1021, size=(1, 3, PASTE_SIZE, PASTE_SIZE)) / 1020).astype(np.float32)
    return request.param, frame, decoded, paste_mask(), crop_to_frame(height, width, CROP_SHARE)


def _best_seconds(work, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def _copy_bandwidth(nbytes: int, repeats: int, threads: int = 1) -> float:
    """Bytes read + written per second by np.copyto of an `nbytes` buffer, on `threads` threads (halves)."""
    src = np.full(nbytes, 7, np.uint8)
    dst = np.zeros_like(src)  # both touched once: the pages exist before the timing
    parts = np.array_split(np.arange(nbytes // 4096 + 1) * 4096, threads)
    bounds = [(int(p[0]), min(int(p[-1]) + 4096, nbytes)) for p in parts]

    def copy() -> None:
        if threads == 1:
            np.copyto(dst, src)
            return
        workers = [threading.Thread(target=np.copyto, args=(dst[a:b], src[a:b])) for a, b in bounds]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    copy()
    return 2 * nbytes / _best_seconds(copy, repeats)


@pytest.fixture(scope="module")
def copy_bandwidth() -> dict[str, float]:
    """Bytes/s of a large copy on one and two threads, and of a 1432² frame-sized copy."""
    return {
        "large_1_thread": _copy_bandwidth(LARGE_COPY_BYTES, 5),
        "large_2_threads": _copy_bandwidth(LARGE_COPY_BYTES, 5, threads=2),
        "frame_1432_1_thread": _copy_bandwidth(1432 * 1432 * 3, 50),
    }


@pytest.fixture(scope="module")
def compiled_reference() -> None:
    try:
        require_reference_blend()
    except ReferenceUnavailable as exc:
        pytest.skip(f"reference (compiled PutBack) not measured: {exc}")


def _reference_from_decoder(putback, frame, decoded, mask, m_c2o):
    """The reference's decoder-output conversion (transpose, clip ×255), then its put-back."""
    return putback(frame, render_to_hwc(decoded), mask, m_c2o)


@pytest.mark.parametrize("render_input", ["hwc", "chw"])
@pytest.mark.parametrize("putback", list(PUTBACKS))
def test_reference(benchmark, request, scene, putback, render_input):
    size, frame, decoded, mask, m_c2o = scene
    if putback == "compiled":
        request.getfixturevalue("compiled_reference")
    method = PUTBACKS[putback]
    benchmark.group = f"paste-back {size}"
    benchmark.extra_info.update(column=PUTBACK_LABELS[putback], render_input=render_input, crop_share=CROP_SHARE)
    if render_input == "hwc":
        render = np.ascontiguousarray(render_to_hwc(decoded))
        out = benchmark(method, frame, render, mask, m_c2o)
    else:
        out = benchmark(_reference_from_decoder, method, frame, decoded, mask, m_c2o)
    # Sanity check that every column does the same job: within 1 per byte of the NumPy put-back.
    expected = PUTBACKS["numpy"](frame, render_to_hwc(decoded), mask, m_c2o)
    assert np.abs(out.astype(np.int16) - expected).max() <= 1


def _window_area(height: int, width: int, m_c2o: np.ndarray) -> int:
    """Pixels of the crop's bounding box inside the frame: what the kernel touches in place."""
    corners = np.array([[0, 0, 1], [PASTE_SIZE, 0, 1], [0, PASTE_SIZE, 1], [PASTE_SIZE, PASTE_SIZE, 1]]) @ m_c2o.T
    x0, y0 = np.clip(np.floor(corners[:, :2].min(axis=0)), 0, None)
    x1, y1 = np.ceil(corners[:, :2].max(axis=0))
    return int((min(x1, width) - x0) * (min(y1, height) - y0))


def _bytes_touched(frame: np.ndarray, m_c2o: np.ndarray, placement: str) -> tuple[int, str]:
    height, width = frame.shape[:2]
    inputs = PASTE_SIZE**2 * 3 * 4 + PASTE_SIZE**2 * 4  # render (float32, either layout) + mask
    if placement == "inplace":
        return 2 * 3 * _window_area(height, width, m_c2o) + inputs, "2*3*window_area + S*S*3*4 + S*S*4"
    return 2 * 3 * height * width + inputs, "H*W*3 (frame read) + H*W*3 (out write) + S*S*3*4 + S*S*4"


@pytest.mark.parametrize("placement", ["new", "slot", "inplace"])
@pytest.mark.parametrize("render_layout", ["hwc", "chw"])
def test_ours_native_kernel(benchmark, scene, copy_bandwidth, render_layout, placement):
    size, frame, decoded, mask, m_c2o = scene
    render = np.ascontiguousarray(render_to_hwc(decoded)) if render_layout == "hwc" else decoded
    benchmark.group = f"paste-back {size}"
    target = {"new": None, "slot": np.empty_like(frame), "inplace": frame.copy()}[placement]
    out = benchmark(paste_back, target if placement == "inplace" else frame, render, mask, m_c2o, out=target,
                    threads=THREADS)

    # Same output as the reference's put-back within 1 per byte (OpenCV releases' warps differ;
    # PasteBack's docstring): a sanity check that both benchmarks do the same job.
    check = frame.copy() if placement == "inplace" else None
    out = paste_back(check if check is not None else frame, render, mask, m_c2o, out=check, threads=THREADS)
    expected = PUTBACKS["numpy"](frame, render_to_hwc(decoded), mask, m_c2o)
    assert np.abs(out.astype(np.int16) - expected).max() <= 1

    nbytes, formula = _bytes_touched(frame, m_c2o, placement)
    bandwidth = max(copy_bandwidth["large_1_thread"], copy_bandwidth["large_2_threads"])
    floor_s = nbytes / bandwidth
    benchmark.extra_info.update(
        column="ours", render_layout=render_layout, placement=placement, threads=THREADS, crop_share=CROP_SHARE,
        bytes_per_frame=nbytes, bytes_formula=formula,
        copy_gb_per_s_256mb_1_thread=round(copy_bandwidth["large_1_thread"] / 1e9, 2),
        copy_gb_per_s_256mb_2_threads=round(copy_bandwidth["large_2_threads"] / 1e9, 2),
        copy_gb_per_s_frame_1432_1_thread=round(copy_bandwidth["frame_1432_1_thread"] / 1e9, 2),
        floor_ms=round(floor_s * 1e3, 4),
    )
    if benchmark.stats is not None:  # None under --benchmark-disable: nothing was timed
        benchmark.extra_info["time_over_floor"] = round(benchmark.stats["median"] / floor_s, 2)
        benchmark.extra_info["fastest_over_floor"] = round(benchmark.stats["min"] / floor_s, 2)
