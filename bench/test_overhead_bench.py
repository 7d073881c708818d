"""Per-frame cost of the render loop around the networks: ours against the reference's structure.

The networks are zero-cost doubles (`ditto_fast.tools.benchmark_doubles`) and frames are dropped instead
of encoded, so what is left is the pipeline's own work: motion stitch, the decoder output's
conversion to an HWC image in [0, 255], paste-back into the full frame, and the handoff of the frame
to the consumer. The driving motion is generated before the timer for both. The crop is the
reference's default, 81 % of the frame's shorter side (`benchmark_doubles.CROP_SHARE`).

- ours: the engine's frame stage, `FrameRenderer.render_clip_into` (the stitch once per block of
  frames, as the engine hands them over) on a producer thread writing into a
  `FrameRing` that the consumer takes frames from, as `RenderJob` runs it;
- reference (compiled PutBack): the reference's per-frame work as it runs, on a worker thread: the
  same `MotionStitch` on the motion dict as it is (its stitch worker passes the dict on, no copy),
  the networks, ``np.transpose`` to HWC and clip ×255 of the decoder output, its PutBack (two
  full-frame ``cv2.warpAffine``, a fresh ``np.empty`` result, the compiled blend:
  bench/reference_path.py) and a put of that result on a ``queue.Queue(maxsize=100)`` to the
  writer thread (here the consumer, which drops it). Skipped, with the reason, without a C compiler.
- reference, NumPy put-back (not what the reference runs): the same loop with the NumPy blend, the
  baseline these figures used before.

`extra_info` holds milliseconds per frame: wall clock (median and fastest round) and the process's
CPU time (median round, all threads), which a busy machine inflates far less than the wall clock.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping

import numpy as np
import pytest
from reference_path import PUTBACK_LABELS, PUTBACKS, ReferenceUnavailable, require_reference_blend

from ditto_fast._core import FrameRing
from ditto_fast.avatar import Avatar
from ditto_fast.backends.base import Network
from ditto_fast.engine.motion_setup import motion_setup
from ditto_fast.engine.offline import DEFAULT_RING_SLOTS
from ditto_fast.ops.paste_back import paste_mask
from ditto_fast.options import RenderOptions
from ditto_fast.pipeline.frames import FrameRenderer
from ditto_fast.stages.frame_index import mirror_index
from ditto_fast.stages.motion import motion_dict_to_vector
from ditto_fast.stages.stitch import MotionStitch
from ditto_fast.tools.benchmark_doubles import CROP_SHARE, still_avatar, zero_cost_networks

SIZES = {"1432": (1432, 1432), "1080p": (1080, 1920)}
FRAMES = 50  # 2 s at 25 frames/s
ROUNDS = 5
QUEUE_SIZE = 100  # the reference's queue.Queue(maxsize=100) between its stages
OPTIONS = RenderOptions(seed=0)


@pytest.fixture(scope="module", params=list(SIZES))
def scene(request: pytest.FixtureRequest) -> tuple[str, dict[str, Network], Avatar, list[dict[str, np.ndarray]]]:
    """(size name, networks, avatar, the driving motion of every frame)."""
    networks, avatar = zero_cost_networks(), still_avatar(*SIZES[request.param])
    features = np.zeros((FRAMES, 1024), np.float32)  # HuBERT features; the doubles ignore their values
    condition, a2m = motion_setup(networks, avatar, OPTIONS)
    return request.param, networks, avatar, a2m.to_frame_dicts(a2m.generate_offline(condition(features, 0)))


def _cpu_timed(work: Callable[..., None], cpu_seconds: list[float]) -> Callable[..., None]:
    """`work`, appending the process CPU time (all threads) each call takes to `cpu_seconds`."""
    def timed(*args) -> None:
        start = time.process_time()
        work(*args)
        cpu_seconds.append(time.process_time() - start)
    return timed


def _record_ms_per_frame(benchmark, frames: int, cpu_seconds: list[float]) -> None:
    if benchmark.stats is None:  # --benchmark-disable: the code ran once, nothing was timed
        return
    benchmark.extra_info.update(
        frames_per_round=frames,
        ms_per_frame_median=benchmark.stats["median"] / frames * 1e3,
        ms_per_frame_min=benchmark.stats["min"] / frames * 1e3,
        cpu_ms_per_frame_median=float(np.median(cpu_seconds)) / frames * 1e3,
    )


def _render_through_ring(renderer: FrameRenderer, motion: np.ndarray, ring: FrameRing) -> None:
    """The engine's frame stage on its own thread, the consumer here, joined by the ring (as in RenderJob)."""
    def produce() -> None:
        try:
            with renderer.writer(ring) as writer:
                renderer.render_block(writer, 0, motion)
        finally:
            ring.close()  # committed frames are still handed out; an early stop fails take() below

    producer = threading.Thread(target=produce)
    producer.start()
    for _ in motion:
        ring.take().release()  # dropped instead of encoded
    producer.join()


def test_ours_frame_renderer(benchmark, scene):
    size, networks, avatar, motions = scene

    def fresh_renderer():
        ring = FrameRing(DEFAULT_RING_SLOTS, *avatar.frame_size, 3)
        motion = np.stack([motion_dict_to_vector(frame) for frame in motions])
        return (FrameRenderer(networks, avatar, OPTIONS, len(motions)), motion, ring), {}

    benchmark.group = f"render loop {size}"
    benchmark.extra_info.update(column="ours", crop_share=CROP_SHARE)
    cpu_seconds: list[float] = []
    benchmark.pedantic(_cpu_timed(_render_through_ring, cpu_seconds), setup=fresh_renderer, rounds=ROUNDS,
                       iterations=1)
    _record_ms_per_frame(benchmark, len(motions), cpu_seconds)


def _reference_worker(networks: Mapping[str, Network], avatar: Avatar, motions: list[dict[str, np.ndarray]],
                      stitch: MotionStitch, putback: Callable[..., np.ndarray], frames_out: queue.Queue) -> None:
    mask = paste_mask()
    try:
        for index, motion in enumerate(motions):
            source = mirror_index(index, avatar.num_frames)
            x_s, x_d = stitch(avatar.motion_info(source), motion, **stitch.frame_ctrl(index))
            (feature,) = networks["warp_network"](feature_3d=avatar.f_s[source], kp_source=x_s, kp_driving=x_d)
            (image,) = networks["decoder"](feature=feature)
            render = np.clip(np.transpose(image[0], (1, 2, 0)), 0, 1) * 255
            # PutBack returns a fresh frame: it goes onto the writer's queue as it is.
            frames_out.put(putback(avatar.frames[source], render, mask, avatar.m_c2o[source]))
    finally:
        frames_out.put(None)  # also on an error, so the consumer stops (the error fails the test)


@pytest.mark.parametrize("putback", list(PUTBACKS))
def test_reference_structure(benchmark, scene, putback):
    size, networks, avatar, motions = scene
    if putback == "compiled":
        try:
            require_reference_blend()
        except ReferenceUnavailable as exc:
            pytest.skip(f"reference (compiled PutBack) not measured: {exc}")
    method = PUTBACKS[putback]
    # Sanity check that the loop does the paste-back's job: within 1 per byte of the NumPy put-back.
    mask, render = paste_mask(), np.full((512, 512, 3), 127.5, np.float32)
    expected = PUTBACKS["numpy"](avatar.frames[0], render, mask, avatar.m_c2o[0])
    assert np.abs(method(avatar.frames[0], render, mask, avatar.m_c2o[0]).astype(np.int16) - expected).max() <= 1

    def fresh_stitch():
        stitch = MotionStitch(networks["stitch_network"])
        stitch.setup(avatar.motion_info(0), is_image=avatar.is_image, N_d=len(motions))
        return (stitch,), {}

    def render_all(stitch: MotionStitch) -> None:
        frames_out: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        worker = threading.Thread(target=_reference_worker,
                                  args=(networks, avatar, motions, stitch, method, frames_out))
        worker.start()
        while frames_out.get() is not None:
            pass  # dropped instead of encoded
        worker.join()

    benchmark.group = f"render loop {size}"
    benchmark.extra_info.update(column=PUTBACK_LABELS[putback], crop_share=CROP_SHARE)
    cpu_seconds: list[float] = []
    benchmark.pedantic(_cpu_timed(render_all, cpu_seconds), setup=fresh_stitch, rounds=ROUNDS, iterations=1)
    _record_ms_per_frame(benchmark, len(motions), cpu_seconds)
