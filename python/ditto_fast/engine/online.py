"""Online rendering: push audio as it arrives, take frames as soon as they exist.

The audio path is the reference's online branch: `chunksize = (past, current, future)` video
frames per HuBERT window, windows every `current` frames, the first one preceded by `past`
frames of silence, the last one zero-padded. Motion comes from the reference's streaming
worker (`OnlineAudio2Motion`), frames from the one frame renderer (pipeline/frames.py) that
offline jobs use too. Two stages overlap on their own threads: "motion" (HuBERT and LMDM for window k+1)
and "frames" (rendering window k's frames), joined by a short bounded channel.

Length: a stream ends with its audio, as an offline render does: `ceil(seconds × 25)` frames
for the audio pushed (counted again from each `interrupt()`). The reference's online mode runs
on through its zero-padded flush windows, a little past the audio; `end_with_audio=False` keeps
that length (and windows given to `push_window` are never trimmed: their caller made them).

Timing: each frame is due on a player's clock that starts with the first frame, at 25 fps; a
frame made after that is counted late (a pause in the audio shows as late frames, as it would as
a freeze in a player). Frames made but never taken (the session closed first) count as dropped.

Back-pressure: windows wait in a bounded queue, motion in a bounded channel and frames in a
bounded ring. When the consumer is slow the ring fills, the stages wait, the queue fills and
`push()` blocks: audio is never dropped and memory does not grow. `interrupt()` is the way to
drop audio. The first error in a stage stops both and is raised by `push`/`frames`.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import soxr

from ditto_fast._core import FrameRing, RingClosed
from ditto_fast.avatar import Avatar
from ditto_fast.backends.base import Network
from ditto_fast.engine.motion_setup import motion_setup
from ditto_fast.engine.offline import Frame
from ditto_fast.engine.stage_threads import StageGroup
from ditto_fast.options import RenderOptions, check_chunksize
from ditto_fast.pipeline.frames import FrameRenderer
from ditto_fast.stages.audio import FPS, SAMPLE_RATE, as_mono_16k
from ditto_fast.stages.audio_features import feature_extractor
from ditto_fast.stages.audio_windows import DEFAULT_CHUNKSIZE, LiveWindows
from ditto_fast.stages.motion import MOTION_DIM
from ditto_fast.stages.online_motion import OnlineAudio2Motion, silence_warmup_features

DEFAULT_RING_SLOTS = 8
DEFAULT_QUEUED_WINDOWS = 8  # ~1.6 s of audio at the default chunk size
QUEUED_MOTION = 2  # windows' worth of motion waiting for the frames stage


LATE_MARGIN_S = 0.5 / FPS  # a frame is late when it misses its due time by more than half a frame


@dataclass
class StreamStats:
    """Latency and throughput of a stream, in seconds of wall time. `as_dict()` is what
    `ditto-fast stream --stats-json` writes."""

    chunksize: tuple[int, int, int] = DEFAULT_CHUNKSIZE
    overlap_v2: int = 0
    first_frame_latency: float | None = None  # first push → first frame ready
    chunk_latencies: list[float] = field(default_factory=list)  # window complete → its frames ready
    frames_emitted: int = 0  # frames made and handed to the ring
    frames_taken: int = 0  # frames the consumer took
    late_frames: int = 0  # frames made after their due time (module docstring)
    dropped_frames: int = 0  # frames made but never taken: the session closed first
    audio_seconds: float = 0.0  # real audio pushed
    motion_seconds: float = 0.0  # compute time of the motion stage (HuBERT, LMDM)
    frames_seconds: float = 0.0  # compute time of the frames stage (stitch, warp, decode, paste-back)
    max_lateness: float = 0.0  # seconds the latest frame missed its due time by

    @property
    def real_time_factor(self) -> float | None:
        """Compute time per second of audio of the busier stage: the stages overlap, so the
        stream keeps up with real time while this stays below 1."""
        busiest = max(self.motion_seconds, self.frames_seconds)
        return busiest / self.audio_seconds if self.audio_seconds else None

    def as_dict(self) -> dict:
        chunks = self.chunk_latencies
        return {
            "chunksize": list(self.chunksize),
            "overlap_v2": self.overlap_v2,
            "first_frame_latency_s": self.first_frame_latency,
            "chunk_latency_mean_s": float(np.mean(chunks)) if chunks else None,
            "chunk_latency_max_s": float(np.max(chunks)) if chunks else None,
            "frames_emitted": self.frames_emitted,
            "frames_taken": self.frames_taken,
            "late_frames": self.late_frames,
            "dropped_frames": self.dropped_frames,
            "max_lateness_s": self.max_lateness,
            "audio_seconds": self.audio_seconds,
            "motion_seconds": self.motion_seconds,
            "frames_seconds": self.frames_seconds,
            "real_time_factor": self.real_time_factor,
        }


class _MotionBlock(NamedTuple):
    """What the motion stage hands the frames stage: the driving motion of one window."""

    motion: np.ndarray  # (n, 265), after the output clamp
    d0: np.ndarray | None  # the driver's first motion row, once known (the stitch's reference)
    queued_at: float | None  # when its audio window was queued (None: not from a window)
    reset: bool = False  # interrupt(): frames from here on follow the audio pushed after it


class StreamSession:
    """One live stream. Use as a context manager; `push` and `end` from one thread, `frames`
    from another (or the same, alternating)."""

    def __init__(self, networks: Mapping[str, Network], avatar: Avatar, options: RenderOptions,
                 chunksize: tuple[int, int, int] = DEFAULT_CHUNKSIZE, ring_slots: int = DEFAULT_RING_SLOTS,
                 queued_windows: int = DEFAULT_QUEUED_WINDOWS, frame_batch: int = 1, paste_threads: int = 0,
                 encoder_threads: int | None = None, end_with_audio: bool = True) -> None:
        self.chunksize = check_chunksize(chunksize)
        self.options = options = options.replace(online_mode=True)
        self.stats = StreamStats(chunksize=self.chunksize, overlap_v2=options.overlap_v2)
        self.end_with_audio = end_with_audio
        self._features = feature_extractor(networks)
        self._cutter = LiveWindows(self.chunksize, self._features.window_extra_samples)
        condition, a2m = motion_setup(networks, avatar, options)
        self._driver = OnlineAudio2Motion(
            a2m, condition, silence_warmup_features(self._features, options.overlap_v2))
        self._render = FrameRenderer(networks, avatar, options, options.N_d, batch_size=frame_batch,
                                     paste_threads=paste_threads)
        height, width = avatar.frame_size
        self._ring = FrameRing(max(ring_slots, 2 * frame_batch + 2), height, width, 3)
        self._writer = self._render.writer(self._ring, committed=self._count_frame)
        self._encoder_threads = encoder_threads
        self._windows: queue.Queue = queue.Queue(maxsize=queued_windows)
        self._lock = threading.Lock()  # guards the window cutter and the resampler
        self._resampler: tuple[int, soxr.ResampleStream] | None = None
        self._first_push: float | None = None
        self._first_frame: tuple[int, float] | None = None  # (index, when ready): the player's clock
        self._ended = False
        self._next_index = 0
        self._samples = 0  # 16 kHz samples pushed since the start or the last interrupt()
        self._frames_after_reset: int | None = None  # set by end(): frames the last audio makes
        self._reset_index = 0  # the frames stage's index at the last interrupt()
        self._generation = 0  # bumped by interrupt(): pushes of an older generation stop queueing
        self._stages = StageGroup("ditto-fast-stream")
        self._stages.on_stop(self._ring.close)
        self._stages.on_stop(self._wake_motion_stage)
        self._motion = self._stages.channel(QUEUED_MOTION)
        self._stages.start("motion", self._make_motion)
        self._stages.start("frames", self._make_frames)

    # -- producer side -------------------------------------------------------------------------

    def _to_16k(self, pcm: np.ndarray, sample_rate: int) -> np.ndarray:
        mono = as_mono_16k(np.asarray(pcm), SAMPLE_RATE)  # downmix and scale; no resampling yet
        if sample_rate == SAMPLE_RATE:
            return mono
        # A streaming resampler keeps its filter state across pushes: no seams between chunks.
        if self._resampler is None:
            self._resampler = (sample_rate, soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, np.float32, "HQ"))
        elif self._resampler[0] != sample_rate:
            raise ValueError(f"the stream's sample rate changed from {self._resampler[0]} to {sample_rate}")
        return self._resampler[1].resample_chunk(mono)

    def push(self, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
        """Queue audio: float32 in [-1, 1] or int16, mono (n,) or (n, channels), any length and
        rate. Blocks while the queue of windows is full (a slow consumer slows the producer)."""
        if self._ended:
            raise RuntimeError("push() after end(): start a new stream")
        self._raise_failure()
        if self._first_push is None:
            self._first_push = time.perf_counter()
        with self._lock:
            generation = self._generation
            samples = self._to_16k(pcm, sample_rate)
            self._samples += len(samples)
            self.stats.audio_seconds += len(samples) / SAMPLE_RATE
            ready = self._cutter.push(samples)
        for window in ready:
            if generation != self._generation:
                return  # interrupted while this push was waiting: its audio is dropped
            self._put(("window", window, time.perf_counter()))

    def push_window(self, window: np.ndarray) -> None:
        """Queue one complete HuBERT window as the reference's online script builds it
        (`StreamSDK.run_chunk`); do not mix with `push`."""
        window = np.asarray(window, np.float32)
        if window.shape != (self._cutter.window_length,):
            raise ValueError(f"a window for chunksize {self.chunksize} has {self._cutter.window_length} samples, "
                             f"got {window.shape}")
        if self._first_push is None:
            self._first_push = time.perf_counter()
        self.stats.audio_seconds += self._cutter.stride / SAMPLE_RATE
        self._put(("window", window, time.perf_counter()))

    def end(self, flush: bool = True) -> None:
        """End of audio: the last windows are zero-padded and every remaining frame is made.
        `flush=False` skips the padding windows (when the caller built every window itself)."""
        if self._ended:
            return
        self._ended = True
        with self._lock:
            windows = []
            if flush:
                tail = np.zeros(0, np.float32)
                if self._resampler is not None:  # soxr holds its last samples back until told the stream ended
                    tail = self._resampler[1].resample_chunk(tail, last=True)
                    self._samples += len(tail)
                    self.stats.audio_seconds += len(tail) / SAMPLE_RATE
                if self.end_with_audio and self._samples:
                    # Read by the frames stage before it renders any flush window's frames.
                    self._frames_after_reset = math.ceil(self._samples * FPS / SAMPLE_RATE)
                windows = self._cutter.push(tail) + self._cutter.flush()
            for window in windows:
                self._put(("window", window, time.perf_counter()))
        self._put(("end",))

    def interrupt(self) -> None:
        """Drop all queued audio and return to idle (the avatar's own pose) without a restart;
        frames already rendered are still handed out."""
        with self._lock:
            self._generation += 1
            self._samples = 0
            self._cutter.reset()
            while True:
                try:
                    self._windows.get_nowait()
                except queue.Empty:
                    break
        self._put(("reset",))

    def _put(self, item: tuple) -> None:
        while True:
            self._raise_failure()
            try:
                self._windows.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # -- stages ---------------------------------------------------------------------------------

    def _make_motion(self) -> None:
        """Windows → driving motion, handed to the frames stage with the window's timing."""
        while True:
            item = self._windows.get()
            started = time.perf_counter()
            if item[0] == "stop":
                return
            if item[0] == "window":
                motion = self._driver.push_motion(self._features.chunk(item[1], self.chunksize))
            elif item[0] == "reset":
                self._driver.reset()
                motion = np.zeros((0, MOTION_DIM), np.float32)
            else:
                motion = self._driver.end_motion()
            self.stats.motion_seconds += time.perf_counter() - started
            self._motion.put(_MotionBlock(self._driver.a2m.clamp(motion), self._driver.d0,
                                          item[2] if item[0] == "window" else None, reset=item[0] == "reset"))
            if item[0] == "end":
                self._motion.finish()
                return

    def _make_frames(self) -> None:
        try:
            for block in self._motion:
                started = time.perf_counter()
                if block.reset:
                    self._reset_index = self._next_index
                if block.d0 is not None:
                    self._render.stitch.set_d0(block.d0)
                self._emit(self._within_audio(block.motion))
                self.stats.frames_seconds += time.perf_counter() - started
                if block.queued_at is not None:
                    self.stats.chunk_latencies.append(time.perf_counter() - block.queued_at)
        except RingClosed:
            return  # the session was closed
        self._ring.close()  # end of stream: the consumer drains what is left

    def _within_audio(self, motion: np.ndarray) -> np.ndarray:
        """The rows of `motion` that still lie within the audio, once end() knows its length."""
        if self._frames_after_reset is None:
            return motion
        return motion[:max(0, self._reset_index + self._frames_after_reset - self._next_index)]

    def _emit(self, motion: np.ndarray) -> None:
        if not len(motion):
            return
        self._render.render_block(self._writer, self._next_index, motion)
        self._writer.flush()  # live: every frame of the chunk is handed out now, not with the next chunk
        self._next_index += len(motion)

    def _count_frame(self, index: int) -> None:
        now, stats = time.perf_counter(), self.stats
        stats.frames_emitted += 1
        if self._first_frame is None:
            self._first_frame = (index, now)
            if self._first_push is not None:
                stats.first_frame_latency = now - self._first_push
            return
        lateness = now - (self._first_frame[1] + (index - self._first_frame[0]) / FPS)
        if lateness > LATE_MARGIN_S:
            stats.late_frames += 1
        stats.max_lateness = max(stats.max_lateness, lateness)

    def _wake_motion_stage(self) -> None:
        try:
            self._windows.put_nowait(("stop",))
        except queue.Full:
            pass  # the stage is not waiting for a window; it stops at its next channel put

    @property
    def queued_windows(self) -> int:
        """How many audio windows wait for the motion stage now (bounded by `queued_windows`)."""
        return self._windows.qsize()

    # -- consumer side -------------------------------------------------------------------------

    def frames(self, timeout: float | None = None) -> Iterator[Frame]:
        """Frames in order as they are made, until the stream has ended and drained. Each frame
        is valid until the next is taken. `timeout`: seconds to wait for one frame."""
        while True:
            try:
                taken = self._ring.take(timeout=timeout)
            except RingClosed:
                self._raise_failure()
                return
            self.stats.frames_taken += 1
            try:
                yield Frame(taken.index, taken.index / FPS, taken.array)
            finally:
                taken.release()

    def write_mp4(self, path, audio_path=None, *, crf: int | None = None, x264_preset: str | None = None,
                  encoder: str = "auto", progress: Callable[[int], None] | None = None) -> int:
        """Consume the frames into an mp4 as they come (H.264, plus `audio_path`'s audio);
        returns the frame count. The file appears when the stream has ended. `crf`,
        `x264_preset` and `encoder` are the writer's (see stages/writer.py); `progress(frames)`
        is called after each frame."""
        from ditto_fast.stages.writer import VideoWriter

        height, width = self._ring.shape[:2]
        with VideoWriter(path, width, height, audio_path=audio_path, crf=crf, preset=x264_preset,
                         encoder=encoder, threads=self._encoder_threads) as writer:
            for frame in self.frames():
                writer.write(frame.rgb)
                if progress is not None:
                    progress(writer.frames)
        return writer.frames

    def _raise_failure(self) -> None:
        if self._stages.failure is not None:
            raise self._stages.failure

    def close(self) -> None:
        """Stop the stages; frames not yet taken are dropped (and counted in `stats`)."""
        self._stages.stop()
        self._stages.wait(timeout=10)
        self.stats.dropped_frames = self.stats.frames_emitted - self.stats.frames_taken

    def __enter__(self) -> StreamSession:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
