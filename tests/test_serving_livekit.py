"""The LiveKit Agents adapter (serving/livekit.py) under the real `AvatarRunner`, without a room.

The runner takes a room only to publish its two tracks; a stand-in that is "connected" and whose
publications need no subscriber lets everything else run as in production: the agent side's
in-memory `QueueAudioOutput` as the audio receiver (capture_frame / flush / clear_buffer, the
playback events the agent waits for), the runner's reading, clearing and forwarding tasks, and its
AVSynchronizer (real rtc.AudioSource / VideoSource, paced as live), whose `push` is recorded. Not
exercised: track publication, the data-stream receiver's RPCs, a viewer. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np
import pytest
import soxr

pytest.importorskip("livekit.agents")

from adapter_cases import assert_import_hint, engine_with_avatar, run  # noqa: E402
from livekit import rtc  # noqa: E402
from livekit.agents.voice.avatar import AudioSegmentEnd, AvatarRunner, QueueAudioOutput  # noqa: E402

from ditto_fast.serving.engine import SessionEngine  # noqa: E402
from ditto_fast.serving.livekit import DittoVideoGenerator, avatar_options  # noqa: E402
from ditto_fast.tools.demo import demo_speech  # noqa: E402

TTS_RATE = 24000  # what a TTS typically sends; the adapter resamples to 16 kHz
TTS_FRAME = TTS_RATE // 50  # 20 ms frames, as the agent's audio output sends them


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    yield from engine_with_avatar(tmp_path_factory.mktemp("livekit"))


class _Publication:
    async def wait_for_subscription(self) -> None:
        return None


class _Participant:
    async def publish_track(self, track, options) -> _Publication:
        return _Publication()


class FakeRoom:
    """What AvatarRunner uses of an rtc.Room: connected, events, a participant that publishes."""

    def __init__(self) -> None:
        self.local_participant = _Participant()

    def isconnected(self) -> bool:
        return True

    def on(self, *args, **kwargs) -> None:
        return None

    def off(self, *args, **kwargs) -> None:
        return None


class Harness:
    """A runner around a fresh session; `log` is what reached the AVSynchronizer, in order, with
    the agent's playback events: ("video" | "audio", frame, t) and ("finished", event, t)."""

    def __init__(self, engine: SessionEngine) -> None:
        self.session = engine.open(engine.test_avatar, seed=0)
        self.options = avatar_options(self.session)
        self.generator = DittoVideoGenerator(self.session)
        self.agent_audio = QueueAudioOutput()
        self.log: list[tuple[str, object, float]] = []
        self.agent_audio.on("playback_finished", lambda ev: self.log.append(("finished", ev, time.monotonic())))

    async def __aenter__(self) -> Harness:
        self.runner = AvatarRunner(FakeRoom(), audio_recv=self.agent_audio, video_gen=self.generator,
                                   options=self.options)
        sync = self.runner.av_sync
        push = sync.push

        async def recording_push(frame, timestamp=None):
            kind = "audio" if isinstance(frame, rtc.AudioFrame) else "video"
            self.log.append((kind, frame, time.monotonic()))
            await push(frame, timestamp)

        sync.push = recording_push
        await self.runner.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.runner.aclose()
        await self.generator.aclose()

    async def say(self, speech16k: np.ndarray, flush: bool = True) -> None:
        """The agent's side: TTS audio at 24 kHz in 20 ms frames, then the end of the segment."""
        pcm = np.clip(soxr.resample(speech16k, 16000, TTS_RATE) * 32768, -32768, 32767).astype(np.int16)
        for start in range(0, len(pcm), TTS_FRAME):
            piece = pcm[start:start + TTS_FRAME]
            await self.agent_audio.capture_frame(rtc.AudioFrame(piece.tobytes(), TTS_RATE, 1, len(piece)))
        if flush:
            self.agent_audio.flush()

    def count(self, kind: str) -> int:
        return sum(1 for entry in self.log if entry[0] == kind)

    async def until(self, condition, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out; log: {self.summary()}")
            await asyncio.sleep(0.02)

    def finished(self) -> list:
        return [entry[1] for entry in self.log if entry[0] == "finished"]

    def summary(self) -> str:
        return "".join({"video": "v", "audio": "a", "finished": "|"}[entry[0]] for entry in self.log)


def test_options_and_import_hint(engine, monkeypatch):
    session = engine.open(engine.test_avatar, seed=0)
    try:
        options = avatar_options(session)
        height, width = session.frame_size
        assert (options.video_width, options.video_height, options.video_fps) == (width, height, 25)
        assert (options.audio_sample_rate, options.audio_channels) == (16000, 1)
    finally:
        session.close()
    # Without livekit installed, importing the adapter says how to get it.
    assert_import_hint(monkeypatch, "livekit", "livekit")


def test_an_utterance_plays_in_sync_and_idle_follows(engine):
    seconds = 0.8
    speech = demo_speech(seconds)

    async def scenario():
        async with Harness(engine) as h:
            await h.say(speech)
            await h.until(lambda: h.finished(), 25)
            done = len(h.log)
            await h.until(lambda: sum(1 for e in h.log[done:] if e[0] == "video") >= 3, 10)  # idle goes on
            return h.log, h.options, h.session.stats_dict()

    log, options, stats = run(scenario)
    kinds = [entry[0] for entry in log]
    videos = [entry[1] for entry in log if entry[0] == "video"]
    audios = [entry[1] for entry in log if entry[0] == "audio"]
    assert all((v.width, v.height, v.type) == (options.video_width, options.video_height, rtc.VideoBufferType.RGBA)
               for v in videos)
    assert all((a.sample_rate, a.num_channels, a.samples_per_channel) == (16000, 1, 640) for a in audios)
    # Every audio frame follows its video frame: 25 video frames per second of speech.
    assert all(kinds[i - 1] == "video" for i, kind in enumerate(kinds) if kind == "audio")
    # The whole utterance and nothing else: its duration, rounded up to a frame.
    assert len(audios) == math.ceil(seconds * 25)
    ended = kinds.index("finished")
    assert "audio" not in kinds[ended:], "no audio after the segment ended"
    event = log[ended][1]
    assert not event.interrupted
    assert event.playback_position == pytest.approx(len(audios) * 0.04)
    # The audio is the speech pushed (through the 24 kHz round trip), in place: frame k shows 40 ms
    # from k·40 ms on.
    played = np.concatenate([np.frombuffer(a.data, np.int16) for a in audios]).astype(np.float32) / 32768
    n = len(speech)
    assert np.corrcoef(played[:n], speech)[0, 1] > 0.99
    assert np.abs(played[n:]).max(initial=0) == 0, "the padding to a whole frame is silence"
    # Idle frames (no audio) after the end.
    assert kinds[ended + 1:].count("video") >= 3
    assert stats["frames_taken"] >= len(videos)


def test_clear_buffer_stops_speech_and_the_next_utterance_plays(engine):
    async def scenario():
        async with Harness(engine) as h:
            await h.say(demo_speech(3.0))
            await h.until(lambda: h.count("audio") >= 3, 20)
            h.agent_audio.clear_buffer()  # the agent is interrupted: the runner calls clear_buffer
            cleared = len(h.log)
            await h.until(lambda: h.finished(), 5)
            await asyncio.sleep(0)  # the runner's clear task has run the generator's clear_buffer
            after_clear = h.log[cleared:]
            # Idle video continues, silent.
            await h.until(lambda: sum(1 for e in h.log[cleared:] if e[0] == "video") >= 3, 15)
            second = len(h.log)
            await h.say(demo_speech(0.4))
            await h.until(lambda: len(h.finished()) >= 2, 25)
            return h.log, cleared, after_clear, second

    log, cleared, after_clear, second = run(scenario)
    first = log[:cleared]
    interrupted = [e[1] for e in log if e[0] == "finished"][0]
    assert interrupted.interrupted
    spoken = sum(1 for e in first if e[0] == "audio")
    assert interrupted.playback_position == pytest.approx(spoken * 0.04, abs=0.081)
    assert sum(1 for e in after_clear if e[0] == "audio") <= 2, "speech stops within a couple of frames"
    gap = [e for e in log[cleared:second] if e[0] != "finished"]
    assert gap and all(e[0] == "video" for e in gap[2:]), "only silent idle video until the next utterance"
    # The next utterance, after the interrupt, is found in the renumbered frames: all of it, then its end.
    tail = log[second:]
    kinds = [e[0] for e in tail]
    ended = kinds.index("finished")
    assert kinds[:ended].count("audio") == 10
    assert "audio" not in kinds[ended:]
    assert not tail[ended][1].interrupted
    assert tail[ended][1].playback_position == pytest.approx(0.4)



def test_generator_ends_queued_segments_in_order(engine):
    """The generator alone, driven as the runner drives it: two segments pushed before the first
    one's frames are out each end right after their own frames. (The runner itself reports one
    segment at a time: its "audio playing" flag is set by the audio it reads, so an agent sends
    the next segment after the playback of the last one finished, as AgentSession does.)"""
    session = engine.open(engine.test_avatar, seed=0)
    generator = DittoVideoGenerator(session)

    async def scenario():
        for seconds, seed in ((0.4, 1), (0.5, 2)):
            pcm = (demo_speech(seconds, seed=seed) * 32767).astype(np.int16)
            for start in range(0, len(pcm), 320):
                piece = pcm[start:start + 320]
                await generator.push_audio(rtc.AudioFrame(piece.tobytes(), 16000, 1, len(piece)))
            await generator.push_audio(AudioSegmentEnd())
        await generator.push_audio(AudioSegmentEnd())  # an end without audio: ignored
        out = []
        async for item in generator:
            out.append(item)
            if sum(isinstance(i, AudioSegmentEnd) for i in out) == 2:
                break
        await generator.aclose()
        return out

    out = run(scenario)
    kinds = ["end" if isinstance(i, AudioSegmentEnd) else "audio" if isinstance(i, rtc.AudioFrame) else "video"
             for i in out]
    first = kinds.index("end")
    assert kinds[:first].count("audio") == 10
    assert kinds[first + 1:-1].count("audio") == math.ceil(0.5 * 25)
    assert kinds[-1] == "end"
    assert session.closed
