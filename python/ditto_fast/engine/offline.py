"""Offline rendering: audio in, frames out, the reference's offline algorithm.

The reference generates the whole utterance's motion before rendering a frame. Here the same
motion comes out clip by clip (`Audio2Motion.offline_blocks`: rows are released once no later
clip can change them), so three stages overlap on their own threads, joined by bounded
channels: audio features window by window → LMDM clips → frames (the one frame renderer,
pipeline/frames.py: stitch, warp, decode, paste-back into a `FrameRing` slot). The consumer —
the caller, or the encoder — takes frames from the ring without a copy, in order. The first
error in any stage stops the others and is raised in the consumer with its own traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from ditto_fast._core import FrameRing, RingClosed
from ditto_fast.avatar import Avatar
from ditto_fast.backends.base import Network
from ditto_fast.engine.motion_setup import motion_setup
from ditto_fast.engine.stage_threads import Channel, StageGroup
from ditto_fast.options import RenderOptions
from ditto_fast.pipeline.frames import FrameRenderer
from ditto_fast.stages.audio import FPS, SAMPLE_RATE, frame_count
from ditto_fast.stages.audio_features import feature_extractor
from ditto_fast.stages.condition import ConditionHandler

DEFAULT_RING_SLOTS = 4
# Blocks waiting between stages: a few HuBERT windows / motion blocks, enough to absorb jitter.
CHANNEL_CAPACITY = 4


@dataclass(frozen=True)
class Frame:
    """One output frame. `rgb` views a ring slot: valid until the next frame is taken
    (copy it to keep it)."""

    index: int
    timestamp: float  # seconds from the start of the audio
    rgb: np.ndarray  # (H, W, 3) uint8, read-only


@dataclass(frozen=True)
class RenderInfo:
    num_frames: int
    fps: int
    frame_size: tuple[int, int]  # (height, width)
    audio_seconds: float
    options: RenderOptions


class RenderJob:
    """A lazy render: `info` at once, frames when iterated (faster-whisper's shape).

    Iterating starts a producer thread; each frame is valid until the next is taken. Leaving
    the loop early stops the producer; an error in the producer is raised in the consumer.
    """

    def __init__(self, networks: Mapping[str, Network], avatar: Avatar, options: RenderOptions, *,
                 audio: np.ndarray | None = None, features: np.ndarray | None = None,
                 ring_slots: int = DEFAULT_RING_SLOTS, frame_batch: int = 1, paste_threads: int = 0) -> None:
        """Give `audio` (float32, 16 kHz) or precomputed HuBERT `features` (n, 1024).
        `frame_batch` > 1 renders frames that many at a time through the device-resident torch
        path (`ditto_fast.runtime.BatchedRenderer`; torch-backend networks only)."""
        if (audio is None) == (features is None):
            raise ValueError("RenderJob needs audio or features, not both")
        if frame_batch < 1:
            raise ValueError(f"RenderJob: frame_batch must be at least 1, got {frame_batch}")
        frames = frame_count(len(audio)) if audio is not None else len(features)
        seconds = len(audio) / SAMPLE_RATE if audio is not None else frames / FPS
        self.info = RenderInfo(frames, FPS, avatar.frame_size, seconds, options)
        self._networks, self._avatar = networks, avatar
        self._audio, self._features = audio, features
        # Room for two batches in flight beside the one the consumer holds.
        self._ring_slots = max(ring_slots, 2 * frame_batch + 2)
        self._frame_batch = frame_batch
        self._paste_threads = paste_threads
        self._started = False

    def __iter__(self) -> Iterator[Frame]:
        if self._started:
            raise RuntimeError("a RenderJob can be iterated once; call render() again for another pass")
        self._started = True
        height, width = self.info.frame_size
        ring = FrameRing(self._ring_slots, height, width, 3)
        stages = self._start_stages(ring)
        taken = None
        try:
            for index in range(self.info.num_frames):
                try:
                    taken = ring.take()
                except RingClosed:
                    break
                yield Frame(index, index / FPS, taken.array)
                taken.release()
                taken = None
        finally:
            if taken is not None:
                taken.release()
            stages.stop()
            stages.join()  # raises the first stage error, traceback intact

    def _start_stages(self, ring: FrameRing) -> StageGroup:
        """features → motion → frames, each on its own thread (see the module docstring)."""
        stages = StageGroup("ditto-fast-render")
        stages.on_stop(ring.close)
        condition, a2m = motion_setup(self._networks, self._avatar, self.info.options)
        conditions: Channel[np.ndarray] = stages.channel(CHANNEL_CAPACITY)
        motions: Channel[np.ndarray] = stages.channel(CHANNEL_CAPACITY)
        stages.start("features", lambda: self._condition_rows(condition, conditions))
        stages.start("motion", lambda: _forward(map(a2m.clamp, a2m.offline_blocks(conditions, self.info.num_frames)),
                                                motions))
        stages.start("frames", lambda: self._render_frames(motions, ring))
        return stages

    def _condition_rows(self, condition: ConditionHandler, out: Channel[np.ndarray]) -> None:
        blocks: Iterable[np.ndarray] = (
            (self._features,) if self._features is not None
            else feature_extractor(self._networks).offline_blocks(self._audio))
        first = 0
        for block in blocks:
            out.put(condition(block, first))
            first += len(block)
        out.finish()

    def _render_frames(self, motions: Iterable[np.ndarray], ring: FrameRing) -> None:
        render = FrameRenderer(self._networks, self._avatar, self.info.options, self.info.num_frames,
                               batch_size=self._frame_batch, paste_threads=self._paste_threads)
        try:
            with render.writer(ring) as writer:
                first = 0
                for block in motions:
                    render.render_block(writer, first, block)
                    first += len(block)
        except RingClosed:
            pass  # the consumer stopped early


def _forward(items: Iterable[np.ndarray], out: Channel[np.ndarray]) -> None:
    for item in items:
        out.put(item)
    out.finish()
