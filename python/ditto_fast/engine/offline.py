"""Offline rendering: audio in, frames out, the reference's offline algorithm.

The reference generates the whole utterance's motion before rendering a frame. Here the same
motion comes out clip by clip (`Audio2Motion.offline_blocks`: rows are released once no later
clip can change them), so three stages overlap on their own threads, joined by bounded
channels: audio features window by window → LMDM clips → frames (stitch, warp, decode,
paste-back into a `FrameRing` slot). The consumer — the caller, or the encoder — takes frames
from the ring without a copy, in order. The first error in any stage stops the others and is
raised in the consumer with its own traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from ditto_fast._core import FrameRing, RingClosed
from ditto_fast.backends.base import Network
from ditto_fast.engine.stage_threads import Channel, StageGroup
from ditto_fast.options import RenderOptions
from ditto_fast.stages.audio import FPS, SAMPLE_RATE, frame_count, offline_feature_blocks
from ditto_fast.stages.avatar import Avatar
from ditto_fast.stages.condition import ConditionHandler
from ditto_fast.stages.motion import Audio2Motion, Audio2MotionOptions, GaussianNoise
from ditto_fast.stages.paste import PasteBack
from ditto_fast.stages.source import mirror_index
from ditto_fast.stages.stitch import MotionStitch

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


def motion_setup(networks: Mapping[str, Network], avatar: Avatar,
                 options: RenderOptions) -> tuple[ConditionHandler, Audio2Motion]:
    """The condition handler and the clip generator the options describe (offline or online,
    per `options.online_mode`); the condition source is `ch_info` when given."""
    condition_source: Avatar = options.ch_info or avatar
    condition = ConditionHandler(condition_source.sc, condition_source.eye_open, condition_source.eye_ball,
                                 emo=options.emo, eye_f0_mode=options.eye_f0_mode)
    a2m = Audio2Motion(
        networks["lmdm"], condition_source.motion_info(0),
        Audio2MotionOptions(
            overlap=options.overlap_v2, smo_k_d=options.smo_k_d, fix_kp_cond=options.fix_kp_cond,
            fix_kp_cond_dim=options.fix_kp_cond_dim, sampling_timesteps=options.sampling_timesteps,
            online_mode=options.online_mode, v_min_max_for_clip=options.v_min_max_for_clip,
        ),
        noise=GaussianNoise(options.seed),
    )
    return condition, a2m


def motion_frames(networks: Mapping[str, Network], avatar: Avatar, features: np.ndarray,
                  options: RenderOptions) -> list[dict[str, np.ndarray]]:
    """The driving motion of every output frame from HuBERT features (num_frames, 1024)
    (the reference's offline audio2motion)."""
    condition, a2m = motion_setup(networks, avatar, options)
    return a2m.to_frame_dicts(a2m.generate_offline(condition(features, 0)))


class FrameRenderer:
    """Stitch → warp → decode → paste-back for one output frame at a time."""

    def __init__(self, networks: Mapping[str, Network], avatar: Avatar, options: RenderOptions,
                 num_frames: int) -> None:
        self.networks, self.avatar = networks, avatar
        self.stitch = MotionStitch(networks["stitch_network"])
        self.stitch.setup(
            avatar.motion_info(0), is_image=avatar.is_image, N_d=num_frames, use_d_keys=options.use_d_keys,
            relative_d=options.relative_d, drive_eye=options.drive_eye, delta_eye_arr=options.delta_eye_arr,
            delta_eye_open_n=options.delta_eye_open_n, fade_type=options.fade_type,
            fade_out_keys=options.fade_out_keys, flag_stitching=options.flag_stitching,
            ch_x_s_info=options.ch_info.motion_info(0) if options.ch_info is not None else None,
            ctrl_info=options.ctrl_info, overall_ctrl_info=options.overall_ctrl_info, seed=options.seed,
        )
        self.stitch.setup_frames(num_frames, options.fade_in, options.fade_out, options.ctrl_info)
        self.paste = PasteBack()

    def stitch_block(self, first_index: int, motion: np.ndarray) -> tuple[list[int], np.ndarray, np.ndarray]:
        """Source frame of each output frame and the keypoints x_s, x_d (n, 21, 3) of frames
        first_index, first_index+1, ... of (n, 265) driving motion, stitched in one pass."""
        indices = np.arange(first_index, first_index + len(motion))
        sources = [mirror_index(int(index), self.avatar.num_frames) for index in indices]
        x_s, x_d = self.stitch.stitch_clip(self.avatar.motion_rows(sources), motion, indices)
        return sources, x_s, x_d

    def render_clip_into(self, ring: FrameRing, first_index: int, motion: np.ndarray,
                         committed: Callable[[int], None] | None = None) -> None:
        """Render frames first_index, first_index+1, ... of (n, 265) driving motion (after the
        output clamp) and commit each to `ring`, calling `committed(index)` after each. The
        stitch runs once for the whole block; per frame the networks run before a slot is taken,
        then paste-back writes straight into the slot (no frame copy)."""
        sources, x_s, x_d = self.stitch_block(first_index, motion)
        for row, source in enumerate(sources):
            index = first_index + row
            (feature,) = self.networks["warp_network"](feature_3d=self.avatar.f_s[source], kp_source=x_s[row:row + 1],
                                                       kp_driving=x_d[row:row + 1])
            (image,) = self.networks["decoder"](feature=feature)
            with ring.acquire() as slot:  # an error before commit gives the slot back
                # The decoder's (1, 3, S, S) output goes in as it is: the kernel converts it.
                self.paste(self.avatar.frames[source], image, self.avatar.m_c2o[source], out=slot.array)
                slot.commit(index)
            if committed is not None:
                committed(index)


class RenderJob:
    """A lazy render: `info` at once, frames when iterated (faster-whisper's shape).

    Iterating starts a producer thread; each frame is valid until the next is taken. Leaving
    the loop early stops the producer; an error in the producer is raised in the consumer.
    """

    def __init__(self, networks: Mapping[str, Network], avatar: Avatar, options: RenderOptions, *,
                 audio: np.ndarray | None = None, features: np.ndarray | None = None,
                 ring_slots: int = DEFAULT_RING_SLOTS, frame_batch: int = 1) -> None:
        """Give `audio` (float32, 16 kHz) or precomputed HuBERT `features` (n, 1024).
        `frame_batch` > 1 renders frames that many at a time through the device-resident torch
        path (`ditto_fast.gpu.BatchedRenderer`; torch-backend networks only)."""
        if (audio is None) == (features is None):
            raise ValueError("RenderJob needs audio or features, not both")
        if frame_batch < 1:
            raise ValueError(f"RenderJob: frame_batch must be at least 1, got {frame_batch}")
        frames = frame_count(len(audio)) if audio is not None else len(features)
        seconds = len(audio) / SAMPLE_RATE if audio is not None else frames / FPS
        self.info = RenderInfo(frames, FPS, avatar.frame_size, seconds, options)
        self._networks, self._avatar = networks, avatar
        self._audio, self._features = audio, features
        self._ring_slots = ring_slots
        self._frame_batch = frame_batch
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
            else offline_feature_blocks(self._audio, self._networks["hubert"]))
        first = 0
        for block in blocks:
            out.put(condition(block, first))
            first += len(block)
        out.finish()

    def _render_frames(self, motions: Iterable[np.ndarray], ring: FrameRing) -> None:
        render = FrameRenderer(self._networks, self._avatar, self.info.options, self.info.num_frames)
        try:
            if self._frame_batch > 1:
                self._render_batched(render, motions, ring)
                return
            first = 0
            for block in motions:
                render.render_clip_into(ring, first, block)
                first += len(block)
        except RingClosed:
            pass  # the consumer stopped early

    def _render_batched(self, render: FrameRenderer, motions: Iterable[np.ndarray], ring: FrameRing) -> None:
        # Imported here: the batched path needs torch, which the default path does not.
        from ditto_fast.gpu.batched_render import BatchedRenderer, stitched_frames
        from ditto_fast.gpu.ring_writer import RingWriter

        batched = BatchedRenderer.from_networks(self._networks, self._avatar, batch_size=self._frame_batch)
        with RingWriter(ring, batched.device) as writer:
            batched.render(stitched_frames(render, motions), writer)


def _forward(items: Iterable[np.ndarray], out: Channel[np.ndarray]) -> None:
    for item in items:
        out.put(item)
    out.finish()
