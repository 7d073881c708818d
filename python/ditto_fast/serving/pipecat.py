"""Pipecat adapter: a `FrameProcessor` that turns the bot's TTS audio into lip-synced video of one
live session (serving/engine.py). Needs `pip install "ditto-fast[pipecat]"`.

    avatar = DittoVideoProcessor(engine, engine.add_avatar("portrait.png"), seed=0)
    pipeline = Pipeline([transport.input(), stt, context_aggregator.user(), llm, tts, avatar,
                         transport.output(), context_aggregator.assistant()])

Put it between the TTS and the output transport (with `video_out_enabled=True`, 25 fps, the
session's size). What it does with each frame going downstream:
- `StartFrame`: opens the session (`engine.open(avatar_id, **session_options)`) and starts a task
  that forwards the session's frames.
- `TTSAudioRawFrame`: its audio goes into the session and the frame stops here. In its place the
  processor sends, for every video frame of speech, `OutputImageRawFrame(RGB, size=(w, h))` with
  `sync_with_audio=True`, then that frame's own 40 ms of audio as a `TTSAudioRawFrame` (16 kHz
  mono; the transport resamples it). Why replace rather than pass the TTS audio on: the session's
  frames come out ~1 s after their audio went in (the driver's look-ahead), while the TTS audio
  would reach the transport at once; the transport writes audio in real time and shows an image
  with `sync_with_audio` only after the audio queued before it, so interleaving each image with
  the audio it shows keeps lips and sound together however early or late the frames are made.
  The cost: the bot's audio leaves at 16 kHz, the engine's rate.
- Idle frames (no speech) go out the same way with 40 ms of silence as a plain
  `OutputAudioRawFrame` (not TTS audio, so the transport's "bot speaking" tracking ignores it):
  the transport's audio clock paces every image, speech or not.
- `TTSStartedFrame` passes at once; `TTSStoppedFrame` is held and sent right after the segment's
  last frame (the transport ends "bot speaking" on it, so it must follow the audio); one that
  ends no speech (none came, or it was interrupted) passes at once.
- `InterruptionFrame`: the session is interrupted (its queued speech and frames dropped); from
  then on frames go out as idle ones (silent), a held `TTSStoppedFrame` of the interrupted
  segment is dropped (the interruption ended it), and the frame passes on, so that the
  transport drops what it has queued.
- `EndFrame`: waits (at most `drain_timeout` s) for the frames of the speech received, then closes
  the session and passes it on; `CancelFrame` closes at once.
- Everything else, and everything going upstream, passes unchanged.

Frames are pushed at most `lead` seconds ahead of real time (25 per second after that), so the
transport's queue stays short (and an interruption drops little) while the session waits,
through its back-pressure, for the pipeline.

Threads: the processor's coroutines never block. `session.push` (which blocks on the session's
back-pressure) runs in order on one pusher thread; `session.interrupt` on the loop's default
executor, so that it can unblock a push in progress; `session.frames()` on a frame thread that
hands frames to the loop with `call_soon_threadsafe`, at most `queue_frames` waiting.

Not exercised by the tests (they run the processor in a pipeline without a transport): a
transport's real-time audio writes and what it shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ditto_fast.serving.adapter_bridge import Driver, FrameBridge, Span, to_int16
from ditto_fast.stages.audio import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

try:
    from pipecat.frames.frames import (
        CancelFrame,
        EndFrame,
        Frame,
        InterruptionFrame,
        OutputAudioRawFrame,
        OutputImageRawFrame,
        StartFrame,
        TTSAudioRawFrame,
        TTSStartedFrame,
        TTSStoppedFrame,
    )
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
except ImportError as exc:  # an optional extra
    raise ImportError('ditto_fast.serving.pipecat needs Pipecat: pip install "ditto-fast[pipecat]"') from exc

if TYPE_CHECKING:
    from ditto_fast.serving.engine import LiveFrame, LiveSession, SessionEngine

__all__ = ["DittoVideoProcessor"]

DEFAULT_QUEUE_FRAMES = 4  # converted frames waiting for the forwarding task
DEFAULT_LEAD_S = 0.25  # how far ahead of real time frames are pushed
DEFAULT_DRAIN_TIMEOUT_S = 10.0  # EndFrame: the longest wait for the last speech's frames
_SILENCE = bytes(2 * SAMPLES_PER_FRAME)


class DittoVideoProcessor(FrameProcessor):
    """Lip-synced video of one live session from the TTS audio (see the module docstring).

    `engine`: a `SessionEngine`; `avatar_id`: one of its avatars; `session_options`: passed to
    `engine.open` (seed, emo, ...). The session is opened on StartFrame and closed on EndFrame,
    CancelFrame or cleanup."""

    def __init__(self, engine: SessionEngine, avatar_id: str, *, queue_frames: int = DEFAULT_QUEUE_FRAMES,
                 lead: float = DEFAULT_LEAD_S, drain_timeout: float = DEFAULT_DRAIN_TIMEOUT_S,
                 session_options: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._engine, self._avatar_id = engine, avatar_id
        self._session_options = dict(session_options or {})
        self._queue_frames, self._lead, self._drain_timeout = queue_frames, lead, drain_timeout
        self._driver: Driver | None = None
        self._forward_task: asyncio.Task | None = None
        self._context_id: str | None = None  # of the segment being received
        self._drained = asyncio.Event()  # set by the forwarding task when no segment's frames are due

    @property
    def session(self) -> LiveSession | None:
        """The live session, between StartFrame and the end."""
        return self._driver.session if self._driver is not None else None

    def set_controls(self, **controls: Any) -> None:
        """`LiveSession.set_controls` (emotion, pose and expression controls) of the open session."""
        if self._driver is not None:
            self._driver.session.set_controls(**controls)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self._start()
            await self.push_frame(frame, direction)
        elif isinstance(frame, CancelFrame):
            await self._stop()
            await self.push_frame(frame, direction)
        elif isinstance(frame, EndFrame):
            await self._drain()
            await self._stop()
            await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            if self._driver is not None:
                await self._driver.interrupt()
            await self.push_frame(frame, direction)
        elif direction != FrameDirection.DOWNSTREAM or self._driver is None:
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSAudioRawFrame):
            # Consumed: its audio comes out again with the frames that show it.
            pcm = np.frombuffer(frame.audio, np.int16).reshape(-1, frame.num_channels)
            await self._driver.push(pcm, frame.sample_rate, getattr(frame, "context_id", None) or self._context_id)
        elif isinstance(frame, TTSStartedFrame):
            self._context_id = getattr(frame, "context_id", None)
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSStoppedFrame):
            if not await self._driver.end_segment(frame):
                await self.push_frame(frame, direction)  # no speech of it to wait for
        else:
            await self.push_frame(frame, direction)

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._stop()

    async def _start(self) -> None:
        if self._driver is not None:
            return
        session = await asyncio.get_running_loop().run_in_executor(
            None, lambda: self._engine.open(self._avatar_id, **self._session_options))
        self._driver = Driver(session)
        bridge = self._driver.frames(asyncio.get_running_loop(), self._queue_frames, _convert)
        self._forward_task = self.create_task(self._forward(bridge))

    async def _forward(self, bridge: FrameBridge) -> None:
        """The session's frames downstream: image, then its audio; segment ends after their last."""
        driver = self._driver
        frame_time = 1.0 / FPS
        due: float | None = None  # when the next frame is due, in real time
        try:
            while (item := await bridge.get()) is not None:
                index, image, size, audio = item
                now = time.monotonic()
                if due is None or due < now - self._lead:
                    due = now  # late (made slower than real time): no burst to catch up
                if due - self._lead > now:
                    await asyncio.sleep(due - self._lead - now)
                due += frame_time
                before, span, after = driver.classify(index)
                for ended in before:
                    await self._push_end(ended)
                picture = OutputImageRawFrame(image=image, size=size, format="RGB")
                picture.sync_with_audio = True  # shown once the audio before it is out
                await self.push_frame(picture)
                if span is not None:
                    sound = TTSAudioRawFrame(audio=audio, sample_rate=SAMPLE_RATE, num_channels=1,
                                             context_id=span.label)
                else:
                    sound = OutputAudioRawFrame(audio=_SILENCE, sample_rate=SAMPLE_RATE, num_channels=1)
                await self.push_frame(sound)
                for ended in after:
                    await self._push_end(ended)
                if not driver.pending:
                    self._drained.set()
        except Exception as exc:  # noqa: BLE001 - the session failed: tell the pipeline
            await self.push_error(error_msg=f"{self}: the live session failed: {exc}", exception=exc)
        finally:
            bridge.stop()

    async def _push_end(self, span: Span) -> None:
        if span.end is not None:  # the segment's TTSStoppedFrame (None: ended by EndFrame)
            await self.push_frame(span.end)

    async def _drain(self) -> None:
        """Before the end: the frames of the speech received so far (and their TTSStoppedFrame) go
        out first, for at most `drain_timeout` seconds."""
        if self._driver is None:
            return
        await self._driver.end_segment(None)  # a segment still open (no TTSStoppedFrame): waited for too
        self._drained.clear()  # set again after a frame pushed with no segment left
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._drained.wait(), self._drain_timeout)

    async def _stop(self) -> None:
        driver, task = self._driver, self._forward_task
        self._driver = self._forward_task = self._context_id = None
        if task is not None:
            await self.cancel_task(task)
        if driver is not None:
            await driver.close()


def _convert(frame: LiveFrame) -> tuple[int, bytes, tuple[int, int], bytes]:
    """On the frame thread: the frame's index, RGB bytes, (width, height) and int16 audio."""
    height, width = frame.rgb.shape[:2]
    return frame.index, frame.rgb.tobytes(), (width, height), to_int16(frame.audio)
