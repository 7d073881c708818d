"""Online rendering: push audio as it arrives, take frames as soon as they exist.

The audio path is the reference's online branch (engine/live_motion.py: resampling, the online
HuBERT windows, the streaming LMDM driver, the stream's length and `interrupt`); frames come
from the one frame renderer (pipeline/frames.py) that offline jobs use too. Two stages overlap
on their own threads: "motion" (HuBERT and LMDM for window k+1) and "frames" (rendering window
k's frames), joined by a short bounded channel.

Figures: `stats` (engine/stream_stats.py): first-frame latency from the first push, late and
dropped frames, the real-time factor.

Back-pressure: windows wait in a bounded queue, motion in a bounded channel and frames in a
bounded ring. When the consumer is slow the ring fills, the stages wait, the queue fills and
`push()` blocks: audio is never dropped and memory does not grow. `interrupt()` is the way to
drop audio. The first error in a stage stops both and is raised by `push`/`frames`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from ditto_fast._core import FrameRing, RingClosed
from ditto_fast.avatar import Avatar
from ditto_fast.backends.base import Network
from ditto_fast.engine.live_motion import DEFAULT_QUEUED_WINDOWS, LiveMotion, MotionBlock
from ditto_fast.engine.offline import Frame
from ditto_fast.engine.stage_threads import StageGroup
from ditto_fast.options import RenderOptions
from ditto_fast.pipeline.frames import FrameRenderer
from ditto_fast.stages.audio import FPS, SAMPLE_RATE
from ditto_fast.stages.audio_windows import DEFAULT_CHUNKSIZE

DEFAULT_RING_SLOTS = 8
QUEUED_MOTION = 2  # windows' worth of motion waiting for the frames stage


class StreamSession:
    """One live stream. Use as a context manager; `push` and `end` from one thread, `frames`
    from another (or the same, alternating)."""

    def __init__(self, networks: Mapping[str, Network], avatar: Avatar, options: RenderOptions,
                 chunksize: tuple[int, int, int] = DEFAULT_CHUNKSIZE, ring_slots: int = DEFAULT_RING_SLOTS,
                 queued_windows: int = DEFAULT_QUEUED_WINDOWS, frame_batch: int = 1, paste_threads: int = 0,
                 encoder_threads: int | None = None, end_with_audio: bool = True) -> None:
        self.options = options = options.replace(online_mode=True)
        self._stages = StageGroup("ditto-fast-stream")
        self._closed = False
        self._motion_side = LiveMotion(networks, avatar, options, chunksize, queued_windows=queued_windows,
                                       end_with_audio=end_with_audio, check=self._check_open)
        self.chunksize = self._motion_side.chunksize
        self.stats = self._motion_side.stats
        self._render = FrameRenderer(networks, avatar, options, options.N_d, batch_size=frame_batch,
                                     paste_threads=paste_threads)
        height, width = avatar.frame_size
        self._ring = FrameRing(max(ring_slots, 2 * frame_batch + 2), height, width, 3)
        self._writer = self._render.writer(self._ring, committed=self._count_frame)
        self._encoder_threads = encoder_threads
        self._next_index = 0
        self._stages.on_stop(self._ring.close)
        self._stages.on_stop(self._motion_side.stop)
        self._motion = self._stages.channel(QUEUED_MOTION)
        self._stages.start("motion", self._make_motion)
        self._stages.start("frames", self._make_frames)

    # -- producer side -------------------------------------------------------------------------

    def push(self, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
        """Queue audio: float32 in [-1, 1] or int16, mono (n,) or (n, channels), any length and
        rate. Blocks while the queue of windows is full (a slow consumer slows the producer)."""
        self._motion_side.push(pcm, sample_rate)

    def push_window(self, window: np.ndarray) -> None:
        """Queue one complete HuBERT window as the reference's online script builds it
        (`StreamSDK.run_chunk`); do not mix with `push`."""
        self._motion_side.push_window(window)

    def end(self, flush: bool = True) -> None:
        """End of audio: the last windows are zero-padded and every remaining frame is made.
        `flush=False` skips the padding windows (when the caller built every window itself)."""
        self._motion_side.end(flush)

    def interrupt(self) -> None:
        """Drop all queued audio and return to idle (the avatar's own pose) without a restart;
        frames already rendered are still handed out."""
        self._motion_side.interrupt()

    # -- stages ---------------------------------------------------------------------------------

    def _make_motion(self) -> None:
        """Windows → driving motion, handed to the frames stage with the window's timing."""
        self._motion_side.run(self._motion.put)
        self._motion.finish()

    def _make_frames(self) -> None:
        try:
            for block in self._motion:
                started = time.perf_counter()
                if block.d0 is not None:
                    self._render.stitch.set_d0(block.d0)
                self._emit(block)
                self.stats.frames_seconds += time.perf_counter() - started
                if block.queued_at is not None:
                    self.stats.chunk_latencies.append(time.perf_counter() - block.queued_at)
        except RingClosed:
            return  # the session was closed
        self._ring.close()  # end of stream: the consumer drains what is left

    def _emit(self, block: MotionBlock) -> None:
        if not len(block.motion):
            return
        self._render.render_block(self._writer, self._next_index, block.motion)
        self._writer.flush()  # live: every frame of the chunk is handed out now, not with the next chunk
        self._next_index += len(block.motion)

    def _count_frame(self, index: int) -> None:
        self.stats.count_frame(index, self._motion_side.first_push)

    @property
    def queued_windows(self) -> int:
        """How many audio windows wait for the motion stage now (bounded by `queued_windows`)."""
        return self._motion_side.queued_windows

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
            self.require_frames(writer.frames)  # no file without frames
        return writer.frames

    def require_frames(self, frames: int) -> None:
        """ValueError when a stream that has ended made no frames at all: audio shorter than
        one valid clip's worth of features (80 - overlap_v2) at this chunk size emits nothing,
        as in the reference's online mode."""
        if frames == 0:
            raise ValueError(f"the stream made no frames from {self.stats.audio_seconds:.2f} s of audio: too short "
                             f"for chunksize {','.join(map(str, self.chunksize))} at overlap_v2 "
                             f"{self.options.overlap_v2}")

    def _raise_failure(self) -> None:
        if self._stages.failure is not None:
            raise self._stages.failure

    def _check_open(self) -> None:
        """The producer's check: a stage's error, or the session closed (a `push` waiting on a
        full queue then returns with an error instead of waiting for ever)."""
        self._raise_failure()
        if self._closed:
            raise RuntimeError("the stream is closed: push() after close()")

    def close(self) -> None:
        """Stop the stages; frames not yet taken are dropped (and counted in `stats`). A `push`
        still waiting (the consumer went away) raises RuntimeError."""
        self._closed = True
        self._stages.stop()
        self._stages.wait(timeout=10)
        self.stats.dropped_frames = self.stats.frames_emitted - self.stats.frames_taken

    def __enter__(self) -> StreamSession:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
