"""Per-frame cost of the render loop around the networks: ours against the reference's structure.

The networks are zero-cost doubles (`ditto_fast.tools.benchmark_doubles`) and frames are dropped instead
of encoded, so what is left is the pipeline's own work: motion stitch, the decoder output's
conversion to an HWC image in [0, 255], paste-back into the full frame, and the handoff of the frame
to the consumer. The driving motion is generated before the timer for both.

- ours: the engine's frame stage, `FrameRenderer.render_clip_into` (the stitch once per block of
  frames, as the engine hands them over) on a producer thread writing into a
  `FrameRing` that the consumer takes frames from, as `RenderJob` runs it;
- the reference's structure, written here from DITTO_SPEC §5.13–§5.14 and §6: per frame a deep
  copy of the motion dict, the same `MotionStitch`, the networks, ``np.transpose`` to HWC, clip
  ×255, two full-frame ``cv2.warpAffine`` (mask and render) and the float blend, and a copy of the
  frame put on a ``queue.Queue`` for the writer thread.

`extra_info` holds milliseconds per frame: wall clock (median and fastest round) and the process's
CPU time (median round, all threads), which a busy machine inflates far less than the wall clock.
"""

from __future__ import annotations

import copy
import queue
import threading
import time
from collections.abc import Callable, Mapping

import numpy as np
import pytest
from test_paste_bench import _reference_paste

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
from ditto_fast.tools.benchmark_doubles import still_avatar, zero_cost_networks

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
    cpu_seconds: list[float] = []
    benchmark.pedantic(_cpu_timed(_render_through_ring, cpu_seconds), setup=fresh_renderer, rounds=ROUNDS,
                       iterations=1)
    _record_ms_per_frame(benchmark, len(motions), cpu_seconds)


def _reference_worker(networks: Mapping[str, Network], avatar: Avatar, motions: list[dict[str, np.ndarray]],
                      stitch: MotionStitch, frames_out: queue.Queue) -> None:
    mask = paste_mask()
    try:
        for index, motion in enumerate(motions):
            source = mirror_index(index, avatar.num_frames)
            x_d_info = copy.deepcopy(motion)  # the reference hands each stage its own copy of the dict
            x_s, x_d = stitch(avatar.motion_info(source), x_d_info, **stitch.frame_ctrl(index))
            (feature,) = networks["warp_network"](feature_3d=avatar.f_s[source], kp_source=x_s, kp_driving=x_d)
            (image,) = networks["decoder"](feature=feature)
            render = np.clip(np.transpose(image[0], (1, 2, 0)), 0, 1) * 255
            frame = _reference_paste(avatar.frames[source], render, mask, avatar.m_c2o[source])
            frames_out.put(frame.copy())  # the RGB copy handed to the writer (DITTO_SPEC §6.2, item 5)
    finally:
        frames_out.put(None)  # also on an error, so the consumer stops (the error fails the test)


def test_reference_structure(benchmark, scene):
    size, networks, avatar, motions = scene

    def fresh_stitch():
        stitch = MotionStitch(networks["stitch_network"])
        stitch.setup(avatar.motion_info(0), is_image=avatar.is_image, N_d=len(motions))
        return (stitch,), {}

    def render_all(stitch: MotionStitch) -> None:
        frames_out: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        worker = threading.Thread(target=_reference_worker, args=(networks, avatar, motions, stitch, frames_out))
        worker.start()
        while frames_out.get() is not None:
            pass  # dropped instead of encoded
        worker.join()

    benchmark.group = f"render loop {size}"
    cpu_seconds: list[float] = []
    benchmark.pedantic(_cpu_timed(render_all, cpu_seconds), setup=fresh_stitch, rounds=ROUNDS, iterations=1)
    _record_ms_per_frame(benchmark, len(motions), cpu_seconds)
