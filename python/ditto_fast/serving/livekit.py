"""LiveKit Agents avatar adapter: one `LiveSession` (serving/engine.py) as the `VideoGenerator`
of a `livekit.agents.voice.avatar.AvatarRunner`. Needs `pip install "ditto-fast[livekit]"`.

    session = engine.open(avatar_id, seed=0)
    video_gen = DittoVideoGenerator(session)
    runner = AvatarRunner(room, audio_recv=DataStreamAudioReceiver(room), video_gen=video_gen,
                          options=avatar_options(session))
    await runner.start()
    ...
    await runner.aclose()
    await video_gen.aclose()  # closes the session

The runner's contract (livekit-agents 1.2 to 1.8, voice/avatar/_runner.py), and how it is met:
- It awaits `push_audio(frame)` for every `rtc.AudioFrame` of the agent's TTS (int16, any rate and
  channel count) and for `AudioSegmentEnd` at the end of each segment (the DataStreamAudioReceiver
  sends one after a segment it cleared, too). The audio is downmixed, resampled to 16 kHz (one
  resampler per segment, flushed at its end) and pushed into the session; a segment's end is
  padded to a whole frame (< 40 ms of silence).
- On the receiver's "clear_buffer" it awaits `clear_buffer()`, then reports the playback as
  interrupted itself: the session is interrupted, and none of the segment's audio is yielded
  after that call.
- It iterates the generator once and pushes each `rtc.VideoFrame` and `rtc.AudioFrame` into an
  AVSynchronizer (video paced at `video_fps`, audio into an AudioSource at `audio_sample_rate`);
  the AudioFrames' durations add up to the playback position it reports, and an `AudioSegmentEnd`
  makes it report the playback finished (if audio played since its last report). So:
  * every session frame becomes an RGBA VideoFrame of the session's size, 25 per second;
  * a frame that shows speech is followed by its own 640 samples (the audio it shows) as an int16
    16 kHz mono AudioFrame: lips and sound leave together;
  * idle frames (between segments, and the silence the engine inserts while speech lags) carry no
    audio: it would count into the playback position and fire "playback started";
  * `AudioSegmentEnd` follows the last frame of a segment. A segment that was cleared, or had no
    audio, gets none: the runner already reported it, and a late one would end the next segment.

Threads: the runner's coroutines never block. `session.push` (which blocks on the session's
back-pressure) runs in order on one pusher thread; `session.interrupt` on the loop's default
executor, so that it can unblock a push in progress; `session.frames()` on a frame thread that
hands frames to the loop with `call_soon_threadsafe`, at most `queue_frames` waiting (then it,
and so the session's rendering, waits for the runner).

Not exercised by the tests (they need a room): publishing the tracks, the data-stream receiver's
RPCs, and what a viewer sees of the AVSynchronizer's output.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from ditto_fast.serving.adapter_bridge import Driver, to_int16
from ditto_fast.stages.audio import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

try:
    from livekit import rtc
    from livekit.agents.voice.avatar import AudioSegmentEnd, AvatarOptions, VideoGenerator
except ImportError as exc:  # an optional extra
    raise ImportError('ditto_fast.serving.livekit needs LiveKit Agents: pip install "ditto-fast[livekit]"') from exc

if TYPE_CHECKING:
    from ditto_fast.serving.engine import LiveFrame, LiveSession

__all__ = ["DittoVideoGenerator", "avatar_options"]

DEFAULT_QUEUE_FRAMES = 4  # converted frames waiting for the runner: few, so that a clear shows at once


def avatar_options(session: LiveSession) -> AvatarOptions:
    """The runner's options for `session`: its frame size, 25 fps, 16 kHz mono audio."""
    height, width = session.frame_size
    return AvatarOptions(video_width=width, video_height=height, video_fps=FPS,
                         audio_sample_rate=SAMPLE_RATE, audio_channels=1)


class DittoVideoGenerator(VideoGenerator):
    """One live session as an AvatarRunner's video generator (see the module docstring).

    `session`: an open `LiveSession`, owned from here on (`aclose()` closes it). Call its methods
    through this object, on the event loop."""

    def __init__(self, session: LiveSession, *, queue_frames: int = DEFAULT_QUEUE_FRAMES) -> None:
        self._driver = Driver(session)
        self._queue_frames = queue_frames
        self._iterated = False

    @property
    def session(self) -> LiveSession:
        return self._driver.session

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        """Queue a TTS frame, or end the segment; waits only on the session's back-pressure (in the
        pusher thread) and on an interrupt in progress (so that new speech follows it)."""
        if isinstance(frame, AudioSegmentEnd):
            await self._driver.end_segment()
            return
        pcm = np.frombuffer(frame.data, np.int16).reshape(-1, frame.num_channels)
        await self._driver.push(pcm, frame.sample_rate)

    async def clear_buffer(self) -> None:
        """Interrupt: frames not yet yielded are yielded as idle frames (no audio); the session
        drops the rest of the speech and goes back to idle motion."""
        await self._driver.interrupt()

    def set_controls(self, **controls: Any) -> None:
        """`LiveSession.set_controls` (emotion, pose and expression controls)."""
        self._driver.session.set_controls(**controls)

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        if self._iterated:
            raise RuntimeError("a DittoVideoGenerator is iterated once (by its AvatarRunner)")
        self._iterated = True
        bridge = self._driver.frames(asyncio.get_running_loop(), self._queue_frames, _convert)
        try:
            while (item := await bridge.get()) is not None:
                index, video, audio = item
                before, span, after = self._driver.classify(index)
                for _ in before:
                    yield AudioSegmentEnd()
                yield video
                if span is not None:
                    yield rtc.AudioFrame(audio, SAMPLE_RATE, 1, SAMPLES_PER_FRAME)
                for _ in after:
                    yield AudioSegmentEnd()
        finally:
            bridge.stop()  # the runner stopped iterating: let the frame thread go

    async def aclose(self) -> None:
        """Stop the threads and close the session (idempotent)."""
        await self._driver.close()


def _convert(frame: LiveFrame) -> tuple[int, rtc.VideoFrame, bytes]:
    """On the frame thread: the frame's index, RGBA VideoFrame and int16 audio."""
    height, width = frame.rgb.shape[:2]
    rgba = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2RGBA)
    return frame.index, rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, rgba.tobytes()), to_int16(frame.audio)
