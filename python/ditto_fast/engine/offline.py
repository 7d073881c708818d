"""Offline rendering: audio in, frames out, the reference's offline algorithm.

Motion for the whole utterance is generated first (audio features, conditions, LMDM clips),
as the reference does offline. Frames are then rendered one by one (stitch, warp, decode,
paste-back) by a producer thread into a `FrameRing`, and handed to the consumer without a
copy, in order.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from ditto_fast._core import FrameRing, RingClosed
from ditto_fast.backends.base import Network
from ditto_fast.options import RenderOptions
from ditto_fast.stages.audio import FPS, SAMPLE_RATE, frame_count, offline_features
from ditto_fast.stages.avatar import Avatar
from ditto_fast.stages.condition import ConditionHandler
from ditto_fast.stages.motion import Audio2Motion, Audio2MotionOptions, GaussianNoise
from ditto_fast.stages.paste import PasteBack, render_to_hwc
from ditto_fast.stages.source import mirror_index
from ditto_fast.stages.stitch import MotionStitch

DEFAULT_RING_SLOTS = 4


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

    def render_into(self, ring: FrameRing, index: int, x_d_info: Mapping[str, np.ndarray]) -> None:
        """Render frame `index` and commit it to `ring`. The networks run before a slot is
        taken; paste-back then writes straight into the slot (no frame copy)."""
        source = mirror_index(index, self.avatar.num_frames)
        x_s, x_d = self.stitch(self.avatar.motion_info(source), x_d_info, **self.stitch.frame_ctrl(index))
        (feature,) = self.networks["warp_network"](feature_3d=self.avatar.f_s[source], kp_source=x_s,
                                                   kp_driving=x_d)
        (image,) = self.networks["decoder"](feature=feature)
        face = render_to_hwc(image)
        with ring.acquire() as slot:  # an error before commit gives the slot back
            self.paste(self.avatar.frames[source], face, self.avatar.m_c2o[source], out=slot.array)
            slot.commit(index)


class RenderJob:
    """A lazy render: `info` at once, frames when iterated (faster-whisper's shape).

    Iterating starts a producer thread; each frame is valid until the next is taken. Leaving
    the loop early stops the producer; an error in the producer is raised in the consumer.
    """

    def __init__(self, networks: Mapping[str, Network], avatar: Avatar, options: RenderOptions, *,
                 audio: np.ndarray | None = None, features: np.ndarray | None = None,
                 ring_slots: int = DEFAULT_RING_SLOTS) -> None:
        """Give `audio` (float32, 16 kHz) or precomputed HuBERT `features` (n, 1024)."""
        if (audio is None) == (features is None):
            raise ValueError("RenderJob needs audio or features, not both")
        frames = frame_count(len(audio)) if audio is not None else len(features)
        seconds = len(audio) / SAMPLE_RATE if audio is not None else frames / FPS
        self.info = RenderInfo(frames, FPS, avatar.frame_size, seconds, options)
        self._networks, self._avatar = networks, avatar
        self._audio, self._features = audio, features
        self._ring_slots = ring_slots
        self._started = False

    def __iter__(self) -> Iterator[Frame]:
        if self._started:
            raise RuntimeError("a RenderJob can be iterated once; call render() again for another pass")
        self._started = True
        height, width = self.info.frame_size
        ring = FrameRing(self._ring_slots, height, width, 3)
        failure: list[BaseException] = []
        stop = threading.Event()
        producer = threading.Thread(target=self._produce, args=(ring, stop, failure), daemon=True,
                                    name="ditto-fast-render")
        producer.start()
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
            stop.set()
            ring.close()
            producer.join()
        if failure:
            raise failure[0]  # keeps the producer's traceback

    def _produce(self, ring: FrameRing, stop: threading.Event, failure: list[BaseException]) -> None:
        try:
            features = (self._features if self._features is not None
                        else offline_features(self._audio, self._networks["hubert"]))
            motions = motion_frames(self._networks, self._avatar, features, self.info.options)
            render = FrameRenderer(self._networks, self._avatar, self.info.options, self.info.num_frames)
            for index, x_d_info in enumerate(motions):
                if stop.is_set():
                    return
                render.render_into(ring, index, x_d_info)
        except RingClosed:
            pass  # the consumer stopped early
        except BaseException:  # noqa: BLE001 - handed to the consumer with its traceback
            failure.append(sys.exc_info()[1])
            ring.close()
