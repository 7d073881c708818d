"""The Pipecat adapter (serving/pipecat.py) in a real pipeline: PipelineWorker + WorkerRunner,
the processor, and a sink that records what would reach the output transport. TTS audio is fed
as a TTS service sends it (TTSStartedFrame, 24 kHz TTSAudioRawFrames of 20 ms, TTSStoppedFrame).
Not exercised: a transport's real-time audio writes and display. Every wait is bounded."""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np
import pytest
import soxr

pytest.importorskip("pipecat")

from adapter_cases import assert_import_hint, engine_with_avatar, run  # noqa: E402
from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from ditto_fast.serving.engine import SessionEngine  # noqa: E402
from ditto_fast.serving.pipecat import DittoVideoProcessor  # noqa: E402
from ditto_fast.tools.demo import demo_speech  # noqa: E402

TTS_RATE = 24000
TTS_FRAME = TTS_RATE // 50  # 20 ms


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    yield from engine_with_avatar(tmp_path_factory.mktemp("pipecat"))


class Sink(FrameProcessor):
    """Records the frames going downstream, as the output transport would get them."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list = []

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
        await self.push_frame(frame, direction)


class Harness:
    def __init__(self, engine: SessionEngine) -> None:
        self.processor = DittoVideoProcessor(engine, engine.test_avatar, session_options={"seed": 0})
        self.sink = Sink()
        self.worker = PipelineWorker(Pipeline([self.processor, self.sink]), params=PipelineParams(),
                                     cancel_on_idle_timeout=False)
        self.started = asyncio.Event()
        self.worker.event_handler("on_pipeline_started")(self._on_started)
        self.runner = WorkerRunner(handle_sigint=False)
        self.session = None

    async def _on_started(self, worker, frame) -> None:
        self.started.set()

    async def start(self) -> asyncio.Task:
        await self.runner.add_workers(self.worker)
        running = asyncio.create_task(self.runner.run())
        await asyncio.wait_for(self.started.wait(), 10)
        await self.until(lambda: self.processor.session is not None, 10)
        self.session = self.processor.session
        return running

    async def say(self, speech16k: np.ndarray, stop: bool = True) -> None:
        pcm = np.clip(soxr.resample(speech16k, 16000, TTS_RATE) * 32768, -32768, 32767).astype(np.int16)
        await self.worker.queue_frame(TTSStartedFrame(context_id="turn"))
        for start in range(0, len(pcm), TTS_FRAME):
            await self.worker.queue_frame(TTSAudioRawFrame(pcm[start:start + TTS_FRAME].tobytes(), TTS_RATE, 1))
        if stop:
            await self.worker.queue_frame(TTSStoppedFrame(context_id="turn"))

    def of(self, kind) -> list:
        return [f for f in self.sink.frames if isinstance(f, kind)]

    async def until(self, condition, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out; frames: {summary(self.sink.frames)}")
            await asyncio.sleep(0.02)


def summary(frames) -> str:
    def letter(f):
        if isinstance(f, OutputImageRawFrame):
            return "i"
        if isinstance(f, TTSAudioRawFrame):
            return "s"  # speech
        if isinstance(f, OutputAudioRawFrame):
            return "_"  # silence
        return {TTSStartedFrame: "<", TTSStoppedFrame: ">", InterruptionFrame: "!", EndFrame: "."}.get(type(f), "?")

    return "".join(letter(f) for f in frames)


def test_import_hint(monkeypatch):
    assert_import_hint(monkeypatch, "pipecat", "pipecat")


def test_speech_becomes_synced_images_and_audio_then_a_clean_end(engine):
    seconds = 0.8
    speech = demo_speech(seconds)

    async def scenario():
        h = Harness(engine)
        running = await h.start()
        await h.say(speech)
        await h.until(lambda: h.of(TTSStoppedFrame), 25)
        stopped = len(h.sink.frames)
        await h.until(lambda: sum(isinstance(f, OutputImageRawFrame) for f in h.sink.frames[stopped:]) >= 3, 10)
        await h.worker.queue_frame(EndFrame())
        await asyncio.wait_for(running, 10)
        return h

    h = run(scenario)
    frames = h.sink.frames
    height, width = h.session.frame_size
    images = h.of(OutputImageRawFrame)
    assert all(i.size == (width, height) and i.format == "RGB" and len(i.image) == width * height * 3
               and i.sync_with_audio for i in images)
    # Each image is followed by the audio it shows: speech (TTS audio at 16 kHz) or silence.
    kinds = summary(frames)
    assert kinds.count("i") == kinds.count("s") + kinds.count("_")
    assert all(kinds[k + 1] in "s_" for k, letter in enumerate(kinds) if letter == "i")
    speech_frames = [f for f in frames if isinstance(f, TTSAudioRawFrame)]
    assert all((f.sample_rate, f.num_channels, len(f.audio), f.context_id) == (16000, 1, 1280, "turn")
               for f in speech_frames), "the 24 kHz TTS frames are replaced by the frames' own audio"
    assert len(speech_frames) == math.ceil(seconds * 25)
    # 25 images per second of speech, plus idle ones (silence the engine inserted, counted in its stats).
    stats = h.session.stats_dict()
    assert len(images) - len(speech_frames) <= stats["idle_frames"]
    assert len(images) <= stats["frames_taken"]
    # The held TTSStoppedFrame comes right after the segment's last frame; then idle (silent) frames.
    stop = kinds.index(">")
    assert kinds.rindex("s") == stop - 1
    assert kinds[:kinds.index("s")].count("<") == 1
    assert "s" not in kinds[stop:] and kinds[stop:].count("i") >= 3
    # The audio is the speech pushed, in place.
    played = np.concatenate([np.frombuffer(f.audio, np.int16) for f in speech_frames]).astype(np.float32) / 32768
    assert np.corrcoef(played[:len(speech)], speech)[0, 1] > 0.99
    # A clean end: EndFrame last, the session closed, the processor let go of it.
    assert isinstance(frames[-1], EndFrame)
    assert h.session.closed and h.processor.session is None


def test_interruption_stops_speech_and_the_next_utterance_plays(engine):
    async def scenario():
        h = Harness(engine)
        running = await h.start()
        await h.say(demo_speech(3.0), stop=False)
        await h.until(lambda: len(h.of(TTSAudioRawFrame)) >= 3, 20)
        await h.worker.queue_frame(InterruptionFrame())
        await h.until(lambda: h.of(InterruptionFrame), 5)
        mark = len(h.sink.frames)
        await h.until(lambda: sum(isinstance(f, OutputImageRawFrame) for f in h.sink.frames[mark:]) >= 3, 15)
        second = len(h.sink.frames)
        await h.say(demo_speech(0.4))
        await h.until(lambda: h.of(TTSStoppedFrame), 25)
        await h.worker.queue_frame(EndFrame())
        await asyncio.wait_for(running, 10)
        return h, mark, second

    h, mark, second = run(scenario)
    kinds = summary(h.sink.frames)
    assert kinds[mark:second].count("s") <= 2, "speech stops within a couple of frames"
    assert kinds[mark:second].count("i") >= 3, "idle video goes on"
    tail = kinds[second:]
    assert tail.count("s") == 10 and tail.rindex("s") == tail.index(">") - 1
    assert kinds.count(">") == 1, "the interrupted segment gets no TTSStoppedFrame"
    assert h.session.closed


def test_end_frame_waits_for_the_speech(engine):
    """EndFrame right behind the TTS audio: the speech's frames and its TTSStoppedFrame go out first."""

    async def scenario():
        h = Harness(engine)
        running = await h.start()
        await h.say(demo_speech(0.6))
        await h.worker.queue_frame(EndFrame())
        await asyncio.wait_for(running, 25)
        return h

    h = run(scenario)
    kinds = summary(h.sink.frames)
    assert kinds.count("s") == 15
    assert kinds.endswith(">.") or kinds[kinds.index(">"):].strip("i_") == ">."
    assert h.session.closed


def test_cancel_closes_the_session(engine):
    async def scenario():
        h = Harness(engine)
        running = await h.start()
        await h.say(demo_speech(1.0), stop=False)
        await h.until(lambda: h.of(OutputImageRawFrame), 20)
        await h.worker.cancel()
        await asyncio.wait_for(running, 10)
        return h

    h = run(scenario)
    assert h.session.closed and h.processor.session is None
