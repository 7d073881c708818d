"""The motion side of one live stream: audio in, blocks of driving motion out.

Audio of any rate arrives in pieces of any size (`push`); it is resampled to 16 kHz with a
streaming resampler, cut into the reference's online HuBERT windows (`chunksize = (past,
current, future)` frames, a window every `current` frames), and queued. The motion stage
(`run`, on its owner's thread) turns each window into features and feeds the reference's
streaming LMDM driver (`OnlineAudio2Motion`), handing every block of motion it emits to its
owner: a `StreamSession` renders them on its own frames thread, the session engine
(serving/engine.py) renders the due frames of all its sessions in shared batches.

Length: a stream ends with its audio: `ceil(seconds × 25)` frames for the audio pushed (counted
again from each `interrupt()`). The reference's online mode runs on through its zero-padded flush
windows, a little past the audio; `end_with_audio=False` keeps that length (and windows given to
`push_window` are never trimmed: their caller made them).

Timeline: frame i of a stream shows samples [640·i, 640·(i + 1)) of the audio placed on its
timeline: speech as pushed, and the silence `fill_silence` inserts while no speech arrives
(idle motion: the avatar goes on moving rather than freezing). With `keep_audio` each block
carries its frames' samples, so the audio sent with a frame is the audio it shows.

`interrupt()` drops the queued audio (including a `push` still in progress) and restarts the
driver from idle; the frames after it follow the audio pushed after it.

Back-pressure: windows wait in a bounded queue; when it is full, `push()` blocks. The owner's
`check` callable raises the first error of any stage, so a blocked producer never waits on a
dead consumer.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np
import soxr

from ditto_fast.avatar import Avatar
from ditto_fast.backends.base import Network
from ditto_fast.engine.motion_setup import motion_setup
from ditto_fast.engine.stream_stats import StreamStats
from ditto_fast.options import RenderOptions, check_chunksize
from ditto_fast.stages.audio import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, as_mono_16k, check_sample_rate
from ditto_fast.stages.audio_features import feature_extractor
from ditto_fast.stages.audio_windows import DEFAULT_CHUNKSIZE, LiveWindows
from ditto_fast.stages.motion import MOTION_DIM
from ditto_fast.stages.online_motion import OnlineAudio2Motion, silence_warmup_features

DEFAULT_QUEUED_WINDOWS = 8  # ~1.6 s of audio at the default chunk size


class MotionBlock(NamedTuple):
    """The driving motion of one window, as the motion stage hands it on."""

    motion: np.ndarray  # (n, 265), after the output clamp
    d0: np.ndarray | None  # the driver's first motion row, once known (the stitch's reference)
    queued_at: float | None  # when its audio window was queued (None: not from a window)
    reset: bool = False  # interrupt(): frames from here on follow the audio pushed after it
    audio: np.ndarray | None = None  # (n·640,) float32: the timeline's samples of these frames (keep_audio)


class _Timeline:
    """One generation's audio as placed on the stream's timeline, consumed front to back."""

    def __init__(self) -> None:
        self._pieces: list[np.ndarray] = []
        self._held = 0

    def append(self, samples: np.ndarray) -> None:
        if len(samples):
            self._pieces.append(samples)
            self._held += len(samples)

    def take(self, count: int) -> np.ndarray:
        """The next `count` samples, zero-padded past the end (the flush windows' padding)."""
        out = np.zeros(count, np.float32)
        filled = 0
        while filled < count and self._pieces:
            piece = self._pieces[0]
            used = min(count - filled, len(piece))
            out[filled:filled + used] = piece[:used]
            filled += used
            if used == len(piece):
                self._pieces.pop(0)
            else:
                self._pieces[0] = piece[used:]
        self._held -= filled
        return out


class LiveMotion:
    """See the module docstring. `push`, `fill_silence`, `end` and `interrupt` from producer
    threads; `run` on the owner's motion thread; `stop` from anywhere."""

    def __init__(self, networks: Mapping[str, Network], avatar: Avatar, options: RenderOptions,
                 chunksize: tuple[int, int, int] = DEFAULT_CHUNKSIZE, *, queued_windows: int = DEFAULT_QUEUED_WINDOWS,
                 end_with_audio: bool = True, keep_audio: bool = False,
                 check: Callable[[], None] = lambda: None) -> None:
        """`self.stats` holds the stream's figures: this side writes the audio, idle and motion
        seconds, its owner the frames' (engine/stream_stats.py)."""
        self.chunksize = check_chunksize(chunksize)
        self.options = options
        self.end_with_audio, self.keep_audio = end_with_audio, keep_audio
        self._check = check
        self._features = feature_extractor(networks)
        self._cutter = LiveWindows(self.chunksize, self._features.window_extra_samples)
        self.condition, a2m = motion_setup(networks, avatar, options)
        self._driver = OnlineAudio2Motion(
            a2m, self.condition, silence_warmup_features(self._features, options.overlap_v2))
        self._windows: queue.Queue = queue.Queue(maxsize=queued_windows)
        self._lock = threading.Lock()  # guards the cutter, the resampler and the producer's counters
        self._resampler: tuple[int, soxr.ResampleStream] | None = None
        self._ended = False
        self._generation = 0  # bumped by interrupt(): pushes of an older generation stop queueing
        self._timelines: dict[int, _Timeline] = {0: _Timeline()}
        self._samples = 0  # samples placed in this generation (speech and silence)
        self._frame_limit: int | None = None  # set by end(): frames this generation's audio makes
        self._rows_out = 0  # rows handed on by the motion stage (all generations)
        self._head = 0  # samples on the timeline so far, as the output will show them
        self.first_push: float | None = None
        self.stats = StreamStats(chunksize=self.chunksize, overlap_v2=options.overlap_v2)

    # -- producer side -------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def queued_windows(self) -> int:
        """How many audio windows wait for the motion stage now (bounded by `queued_windows`)."""
        return self._windows.qsize()

    @property
    def timeline_seconds(self) -> float:
        """Seconds of audio (speech and inserted silence) on the stream's timeline so far."""
        return self._head / SAMPLE_RATE

    def _to_16k(self, pcm: np.ndarray, sample_rate: int) -> np.ndarray:
        check_sample_rate(sample_rate)
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
        rate. Blocks while the queue of windows is full."""
        if self._ended:
            raise RuntimeError("push() after end(): start a new stream")
        self._check()
        if self.first_push is None:
            self.first_push = time.perf_counter()
        with self._lock:
            samples = self._to_16k(pcm, sample_rate)
            self.stats.audio_seconds += len(samples) / SAMPLE_RATE
            generation, ready = self._place(samples)
        self._queue_windows(generation, ready)

    def fill_silence(self, frames: int) -> None:
        """Place `frames` frames of silence on the timeline now (idle motion while no speech
        arrives: it goes through the driver like speech, so speech that follows fades in)."""
        if self._ended or frames <= 0:
            return
        with self._lock:
            # The speech's last samples belong before the silence; the next speech starts a
            # resampler stream of its own.
            tail = self._flush_resampler()
            self.stats.idle_seconds += frames / FPS
            generation, ready = self._place(np.concatenate([tail, np.zeros(frames * SAMPLES_PER_FRAME, np.float32)]))
        self._queue_windows(generation, ready)

    def _flush_resampler(self) -> np.ndarray:
        """The samples the streaming resampler still holds back (none at 16 kHz), counted as
        speech; the next push at another rate starts a new resampler (under the lock)."""
        if self._resampler is None:
            return np.zeros(0, np.float32)
        tail = self._resampler[1].resample_chunk(np.zeros(0, np.float32), last=True)
        self._resampler = None
        self.stats.audio_seconds += len(tail) / SAMPLE_RATE
        return tail

    def _place(self, samples: np.ndarray) -> tuple[int, list[np.ndarray]]:
        """Samples onto the timeline and into the window cutter (under the lock)."""
        self._samples += len(samples)
        self._head += len(samples)
        if self.keep_audio:
            self._timelines[self._generation].append(samples)
        return self._generation, self._cutter.push(samples)

    def _queue_windows(self, generation: int, windows: list[np.ndarray]) -> None:
        for window in windows:
            if generation != self._generation:
                return  # interrupted while this push was waiting: its audio is dropped
            self._put(("window", window, time.perf_counter(), generation))

    def push_window(self, window: np.ndarray) -> None:
        """Queue one complete HuBERT window as the reference's online script builds it
        (`StreamSDK.run_chunk`); do not mix with `push`."""
        window = np.asarray(window, np.float32)
        if window.shape != (self._cutter.window_length,):
            raise ValueError(f"a window for chunksize {self.chunksize} has {self._cutter.window_length} samples, "
                             f"got {window.shape}")
        if self.first_push is None:
            self.first_push = time.perf_counter()
        self.stats.audio_seconds += self._cutter.stride / SAMPLE_RATE
        self._put(("window", window, time.perf_counter(), self._generation))

    def end(self, flush: bool = True) -> None:
        """End of audio: the last windows are zero-padded and every remaining frame is made.
        `flush=False` skips the padding windows (when the caller built every window itself)."""
        if self._ended:
            return
        self._ended = True
        with self._lock:
            windows = []
            if flush:
                windows = self._place(self._flush_resampler())[1] + self._cutter.flush()
                if self.end_with_audio and self._samples:
                    # Read by the motion stage before it hands on any flush window's motion.
                    self._frame_limit = math.ceil(self._samples * FPS / SAMPLE_RATE)
            generation = self._generation
            for window in windows:
                self._put(("window", window, time.perf_counter(), generation))
        self._put(("end", generation))

    def interrupt(self, frames_kept: int | None = None) -> None:
        """Drop all queued audio and return to idle (the avatar's own pose) without a restart.
        `frames_kept`: how many frames the owner keeps (it dropped the motion past them; default:
        all the motion stage handed on); the timeline goes on from there. Any thread may call it,
        also while a `push` waits: that push's audio is dropped too."""
        with self._lock:
            self._generation += 1
            self._timelines[self._generation] = _Timeline()
            self._samples = 0
            kept = self._rows_out if frames_kept is None else frames_kept
            self._head = kept * SAMPLES_PER_FRAME  # the dropped audio never shows
            self._cutter.reset()
            while True:
                try:
                    self._windows.get_nowait()
                except queue.Empty:
                    break
        self._put(("reset", self._generation))

    def _put(self, item: tuple) -> None:
        while True:
            self._check()
            try:
                self._windows.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def set_emotion(self, emo) -> None:
        """Emotion of the clips generated from now on (a `RenderOptions.emo` value, checked there)."""
        self.condition.set_emotion(self.options.replace(emo=emo).emo)

    # -- the motion stage -------------------------------------------------------------------------

    def run(self, hand_on: Callable[[MotionBlock], None]) -> None:
        """The motion stage: windows → motion blocks, handed on in order, until the end of the
        stream (after its last block) or `stop()`."""
        generation_rows = 0  # rows handed on in the current generation (what end()'s limit counts)
        generation = 0  # the generation of the last reset seen
        while True:
            item = self._windows.get()
            started = time.perf_counter()
            kind = item[0]
            if kind == "stop":
                return
            if item[-1] < generation:
                continue  # queued by a push that raced interrupt(): its audio is dropped
            generation = item[-1]
            if kind == "window":
                motion = self._driver.push_motion(self._features.chunk(item[1], self.chunksize))
            elif kind == "reset":
                self._driver.reset()
                self._timelines = {g: t for g, t in self._timelines.items() if g >= item[1]}
                generation_rows = 0
                motion = np.zeros((0, MOTION_DIM), np.float32)
            else:
                motion = self._driver.end_motion()
            if self._frame_limit is not None and kind != "reset":
                motion = motion[:max(0, self._frame_limit - generation_rows)]
            motion = self._driver.a2m.clamp(motion)
            generation_rows += len(motion)
            self._rows_out += len(motion)
            audio = None
            if self.keep_audio:
                audio = self._timelines[item[-1]].take(len(motion) * SAMPLES_PER_FRAME)
            self.stats.motion_seconds += time.perf_counter() - started
            hand_on(MotionBlock(motion, self._driver.d0, item[2] if kind == "window" else None,
                                reset=kind == "reset", audio=audio))
            if kind == "end":
                return

    def stop(self) -> None:
        """Wake the motion stage so that it returns (when it is waiting for a window)."""
        try:
            self._windows.put_nowait(("stop",))
        except queue.Full:
            pass  # the stage is not waiting for a window; its owner stops it at its next hand-on
