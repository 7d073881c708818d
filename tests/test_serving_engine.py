"""The session engine: many live sessions in one process, their frames rendered in shared batches.

Checked against the single-stream path (same seed, same audio → the same bytes), and for what a
live service needs: admission, idle motion, interrupt, live controls, a failing or stalled
session that touches no other, and the avatar cache. Every wait is bounded."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from ditto_fast import Renderer
from ditto_fast.serving.avatar_cache import AvatarCache
from ditto_fast.serving.engine import (
    DEFAULT_IDLE_AFTER_S,
    MAX_PENDING_FRAMES,
    MAX_READY_FRAMES,
    EngineBusy,
    SessionEngine,
)
from ditto_fast.stages.audio import SAMPLES_PER_FRAME, frame_count
from ditto_fast.stages.motion import SEQ_FRAMES
from ditto_fast.tools.demo import demo_portrait, demo_speech, write_demo_inputs

NO_IDLE = 3600.0  # idle_after: no silence is inserted within a test


@pytest.fixture(scope="module")
def renderer():
    return Renderer()


@pytest.fixture(scope="module")
def portrait(tmp_path_factory):
    return write_demo_inputs(tmp_path_factory.mktemp("engine"), seconds=0.5)[0]


def consume(session, into: list, timeout: float = 60) -> threading.Thread:
    def run():
        into.extend(session.frames(timeout=timeout))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def speak(sessions, speech: list[np.ndarray]) -> list[list]:
    """Session k says speech[k] (pushed at once, then ended); the frames each one gave."""
    received = [[] for _ in sessions]
    threads = [consume(session, frames) for session, frames in zip(sessions, received)]
    for session, audio in zip(sessions, speech):
        session.push(audio)
        session.end()
    for thread in threads:
        thread.join(timeout=120)
    return received


def test_sessions_render_what_a_single_stream_renders(renderer, portrait):
    speech = [demo_speech(seconds) for seconds in (1.0, 0.7, 1.3, 0.9)]
    with renderer.stream(renderer.register(portrait), seed=0) as stream:
        stream.push(speech[0])
        stream.end()
        alone = [frame.rgb.copy() for frame in stream.frames(timeout=60)]
    with SessionEngine(renderer, max_sessions=4, idle_after=NO_IDLE) as engine:
        avatar = engine.add_avatar(portrait)
        sessions = [engine.open(avatar, seed=0) for _ in speech]
        received = speak(sessions, speech)
        stats = [session.stats_dict() for session in sessions]
        for session in sessions:
            session.close()
        assert engine.metrics()["frames_rendered_total"] == sum(len(frames) for frames in received)
    for audio, frames, figures in zip(speech, received, stats):
        assert [frame.index for frame in frames] == list(range(len(frames)))  # in order, no gap
        assert len(frames) == frame_count(len(audio)) == math.ceil(len(audio) / 16000 * 25)
        assert figures["idle_frames"] == 0 and figures["dropped_frames"] == 0
        # Audio and video aligned by construction: frame i carries samples [640 i, 640 (i + 1)).
        padded = np.pad(audio, (0, len(frames) * SAMPLES_PER_FRAME - len(audio)))
        np.testing.assert_array_equal(np.concatenate([frame.audio for frame in frames]), padded)
        assert all(frame.pts == frame.index / 25 for frame in frames)
    # The first session rendered in a shared batch schedule, byte for byte the single stream.
    assert all(np.array_equal(a, b.rgb) for a, b in zip(alone, received[0], strict=True))


def test_admission_past_the_limit_is_refused_at_once(renderer, portrait):
    with SessionEngine(renderer, max_sessions=2) as engine:
        avatar = engine.add_avatar(portrait)
        first, second = engine.open(avatar), engine.open(avatar)
        started = time.perf_counter()
        with pytest.raises(EngineBusy, match="busy: 2 of 2 sessions open"):
            engine.open(avatar)
        assert time.perf_counter() - started < 0.5
        first.close()
        engine.open(avatar).close()  # the slot is free again
        second.close()
        assert engine.metrics()["sessions_open"] == 0
        with pytest.raises(ValueError, match="unknown avatar"):
            engine.open("nope")
        with pytest.raises(ValueError, match="sampling_timesteps"):
            engine.open(avatar, sampling_timesteps=0)


def test_idle_motion_before_speech_then_speech_follows(renderer, portrait):
    with SessionEngine(renderer, idle_after=0.1) as engine:
        session = engine.open(engine.add_avatar(portrait), seed=0)
        frames: list = []
        thread = consume(session, frames)
        deadline = time.monotonic() + 60
        while len(frames) < 10 and time.monotonic() < deadline:  # nothing pushed: the avatar idles
            time.sleep(0.05)
        assert len(frames) >= 10
        speech = demo_speech(1.0)
        session.push(speech)
        session.end()
        thread.join(timeout=120)
        figures = session.stats_dict()
        session.close()
    idle = figures["idle_frames"]
    assert idle >= 10 and len(frames) == idle + frame_count(len(speech))
    assert [frame.index for frame in frames] == list(range(len(frames)))
    portrait_rgb = demo_portrait().astype(float)
    for frame in frames[:10]:  # idle frames show the portrait (PSNR >= 30 dB)
        assert 10 * np.log10(255**2 / np.mean((frame.rgb - portrait_rgb) ** 2)) >= 30
        assert not frame.audio.any()
    # Speech sits on the timeline right after the silence; no frame jumps more at its onset
    # than the speech itself moves the face.
    onset = next(i for i, frame in enumerate(frames) if frame.audio.any())
    steps = [np.abs(frames[i].rgb.astype(int) - frames[i - 1].rgb).mean() for i in range(1, len(frames))]
    assert steps[onset - 1] <= max(steps[onset:]) + 1e-9


def test_interrupt_drops_queued_speech_within_a_frame(renderer, portrait):
    speech = demo_speech(6.0)

    def shows_speech(frame) -> bool:  # its audio is the speech at its place on the timeline
        expected = speech[frame.index * SAMPLES_PER_FRAME:(frame.index + 1) * SAMPLES_PER_FRAME]
        return expected.any() and np.array_equal(frame.audio, expected)

    with SessionEngine(renderer, idle_after=0.1) as engine:
        session = engine.open(engine.add_avatar(portrait), seed=0)
        feeder = threading.Thread(target=session.push, args=(speech,), daemon=True)
        feeder.start()
        frames = session.frames(timeout=60)
        before = [next(frames) for _ in range(12)]
        assert shows_speech(before[-1])  # past the speech's leading silence: it is playing
        session.interrupt()
        feeder.join(timeout=60)
        after = [next(frames) for _ in range(25)]
        session.close()
    speaking = [shows_speech(frame) for frame in after]
    # At most the frame already made and one batch in flight still carry the dropped speech.
    assert sum(speaking) <= 1 + engine.warp_decode.batch_size and not any(speaking[1 + engine.warp_decode.batch_size:])
    assert not any(frame.audio.any() for frame in after[1 + engine.warp_decode.batch_size:])  # idle follows
    indices = [frame.index for frame in before + after]
    assert indices == list(range(len(indices)))  # the numbering goes on


def test_live_controls_apply_from_the_next_frame_and_are_checked(renderer, portrait):
    with SessionEngine(renderer, idle_after=NO_IDLE) as engine:
        avatar = engine.add_avatar(portrait)
        plain, turned = engine.open(avatar, seed=0), engine.open(avatar, seed=0)
        turned.set_controls(delta_yaw=25.0, emo=3)
        with pytest.raises(ValueError, match="unknown controls"):
            turned.set_controls(yaw_delta=1.0)
        with pytest.raises(ValueError, match="option emo=9"):
            turned.set_controls(emo=9)
        a, b = speak([plain, turned], [demo_speech(0.6)] * 2)
    assert len(a) == len(b) == 15
    assert all(np.abs(x.rgb.astype(int) - y.rgb).mean() > 1 for x, y in zip(a, b))


def test_blink_gaps_change_live_and_need_a_blink_table(renderer, portrait):
    blink = np.zeros((6, 63), np.float32)
    blink[:, 1::3] = np.linspace(0.02, 0.12, 6)[:, None]  # a visible eyelid motion on every keypoint
    with SessionEngine(renderer, idle_after=NO_IDLE) as engine:
        avatar = engine.add_avatar(portrait)
        with pytest.raises(ValueError, match="blink table"):
            engine.open(avatar).set_controls(delta_eye_open_n=5)
        options = {"seed": 0, "drive_eye": True, "delta_eye_arr": blink, "delta_eye_open_n": -1}
        steady, blinking = engine.open(avatar, **options), engine.open(avatar, **options)
        blinking.set_controls(delta_eye_open_n=3)  # from "never" to every 3 frames
        with pytest.raises(ValueError, match="delta_eye_open_n"):
            blinking.set_controls(delta_eye_open_n="often")
        open_eyes, blinks = speak([steady, blinking], [demo_speech(0.6)] * 2)
    differing = [np.abs(a.rgb.astype(int) - b.rgb).max() > 0 for a, b in zip(open_eyes, blinks, strict=True)]
    assert any(differing) and not all(differing)  # blinks on some frames, open eyes between them


def test_a_failing_session_and_a_stalled_one_touch_no_other(renderer, portrait, monkeypatch):
    with SessionEngine(renderer, idle_after=NO_IDLE) as engine:
        avatar = engine.add_avatar(portrait)
        broken, stalled, healthy = (engine.open(avatar, seed=0) for _ in range(3))

        def fail(*args, **kwargs):
            raise RuntimeError("stitch fell over")

        monkeypatch.setattr(broken.render, "stitch_block", fail)
        broken.push(demo_speech(1.0))
        broken.end()
        with pytest.raises(RuntimeError, match="stitch fell over"):
            list(broken.frames(timeout=60))
        # Nobody reads `stalled`: its own queues fill and stop it, and only it.
        closed: list = []

        def feed_stalled():
            try:
                stalled.push(demo_speech(8.0))
            except RuntimeError as exc:  # the session was closed under the blocked push
                closed.append(exc)

        feeder = threading.Thread(target=feed_stalled, daemon=True)
        feeder.start()
        received: list = []
        thread = consume(healthy, received)
        healthy.push(demo_speech(1.0))
        healthy.end()
        thread.join(timeout=120)
        assert len(received) == 25
        deadline = time.monotonic() + 30
        while stalled.room() > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stalled.room() == 0 and feeder.is_alive()  # bounded: push waits instead of growing
        assert engine.metrics()["pending_frames"] <= MAX_PENDING_FRAMES + SEQ_FRAMES  # the limit, plus one block
        stalled.close()
        feeder.join(timeout=30)
        assert not feeder.is_alive() and "closed" in str(closed[0])  # closing wakes its blocked producer
        assert stalled.stats.dropped_frames >= MAX_READY_FRAMES


def test_avatars_are_registered_once_and_bounded_by_bytes(renderer, portrait, tmp_path):
    with SessionEngine(renderer) as engine:
        first = engine.add_avatar(portrait)
        assert engine.add_avatar(portrait) == first and engine.avatars.registrations == 1
        assert engine.add_avatar(portrait, crop_scale=2.0) != first  # other options, another avatar
        assert engine.avatars.registrations == 2
    avatar = renderer.register(portrait)
    cache = AvatarCache(max_bytes=int(avatar.nbytes * 3.5))  # room for three
    for key in "abc":
        cache.put(key, avatar)
    cache.get("a")  # a is now the most recent: b goes first
    cache.put("d", avatar)
    assert "b" not in cache and {"a", "c", "d"} <= {k for k in "abcd" if k in cache}
    assert cache.nbytes <= cache.max_bytes


def test_capacity_is_measured_from_a_session(renderer):
    with SessionEngine(renderer) as engine:
        capacity = engine.measure_capacity(seconds=1.0)
        assert capacity.frames_per_second > 0 and capacity.sessions == max(1, int(capacity.frames_per_second // 25))
        assert engine.metrics()["sessions_open"] == 0 and engine.metrics()["frames_rendered_total"] == 25
        assert engine.idle_after == DEFAULT_IDLE_AFTER_S  # restored
