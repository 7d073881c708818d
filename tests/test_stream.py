"""Renderer.stream: the reference's online semantics, any push size, live behaviour, latency stats."""

from __future__ import annotations

import json
import math
import pathlib
import threading
import time

import av
import numpy as np
import pytest

from ditto_fast import Renderer
from ditto_fast.cli import main
from ditto_fast.compat import StreamSDK
from ditto_fast.stages.audio import frame_count, load_audio
from ditto_fast.stages.hubert import HubertFeatures
from ditto_fast.tools.demo import demo_portrait, demo_speech, write_demo_inputs

TINY = pathlib.Path(__file__).resolve().parents[1] / "checkpoints" / "synthetic-tiny"


@pytest.fixture(scope="module")
def renderer():
    return Renderer(TINY)


@pytest.fixture(scope="module")
def avatar(renderer, tmp_path_factory):
    portrait, _ = write_demo_inputs(tmp_path_factory.mktemp("s"), seconds=0.5)
    return renderer.register(portrait)


def expected_frames(samples: int, overlap: int, chunksize=(3, 5, 2)) -> int:
    """The reference's online output length: 5·ceil((n + past·640) / (current·640)) features,
    then the worker's emission rule (DITTO_SPEC §5.9)."""
    features = chunksize[1] * math.ceil((samples + chunksize[0] * 640) / (chunksize[1] * 640))
    valid = 80 - overlap
    if features < valid:
        return 0
    return (features // valid - 1) * valid + min(overlap + features % valid, 2 * valid)


def reference_windows(audio: np.ndarray, chunksize=(3, 5, 2)) -> list[np.ndarray]:
    """The windows the reference's online script hands to `run_chunk` (DITTO_SPEC §5.6 "Online")."""
    audio = np.concatenate([np.zeros(chunksize[0] * 640, np.float32), audio])
    split_len = int(sum(chunksize) * 0.04 * 16000) + 80
    return [np.pad(audio[i:i + split_len], (0, max(0, i + split_len - len(audio))))
            for i in range(0, len(audio), chunksize[1] * 640)]


def run(session, audio, piece=777, sample_rate=16000):
    def feed():
        for start in range(0, len(audio), piece):
            session.push(audio[start:start + piece], sample_rate)
        session.end()

    feeder = threading.Thread(target=feed)
    feeder.start()
    frames = [f.rgb.copy() for f in session.frames(timeout=60)]
    feeder.join()
    return frames


class RecordingHubert:
    def __init__(self, inner):
        self.inner, self.windows = inner, []

    def __call__(self, *, input_values):
        self.windows.append(input_values[0].copy())
        return self.inner(input_values=input_values)


@pytest.mark.parametrize("seconds,overlap", [(1.0, 70), (1.37, 75), (2.0, 70), (0.1, 70)])
def test_a_stream_ends_with_its_audio(renderer, avatar, seconds, overlap):
    audio = demo_speech(seconds)
    with renderer.stream(avatar, overlap_v2=overlap, seed=0) as session:
        frames = run(session, audio)
    assert len(frames) == frame_count(len(audio)) == math.ceil(seconds * 25)
    with renderer.stream(avatar, overlap_v2=overlap, seed=0, end_with_audio=False) as session:
        reference_length = run(session, audio)
    assert len(reference_length) == expected_frames(len(audio), overlap)  # the reference's flush runs past it
    # Trimming only cuts the end: the frames that remain are the reference's own.
    assert all(np.array_equal(a, b) for a, b in zip(frames, reference_length))


@pytest.mark.parametrize("chunksize", [(2, 5, 1), (3, 5, 2), (5, 5, 3)])
def test_chunk_sizes(renderer, avatar, chunksize):
    audio = demo_speech(1.1)
    with renderer.stream(avatar, chunksize=chunksize, overlap_v2=75, seed=0, end_with_audio=False) as session:
        frames = run(session, audio)
    assert len(frames) == expected_frames(len(audio), 75, chunksize)


def test_overlaps_that_cannot_stream_correctly_are_refused(renderer, avatar):
    # With O < V the reference never emits the first V - O real frames (DITTO_SPEC §5.9).
    with pytest.raises(ValueError, match="overlap"):
        renderer.stream(avatar, overlap_v2=10)


def test_windows_are_the_reference_online_windows(renderer, avatar):
    audio = demo_speech(1.3)
    recorder = RecordingHubert(renderer.networks["hubert"])
    networks = {name: (recorder if name == "hubert" else renderer.networks[name])
                for name in ("hubert", "lmdm", "stitch_network", "warp_network", "decoder")}
    from ditto_fast.engine.online import StreamSession

    with StreamSession(networks, avatar, renderer.options(online_mode=True, overlap_v2=70, seed=0)) as session:
        run(session, audio, piece=1234)
    reference = reference_windows(audio)
    # First come the warm-up features: the offline windows of 70 frames of silence.
    warmup = math.ceil(frame_count(70 * 640) / 5)
    assert len(recorder.windows) == warmup + len(reference)
    for ours, theirs in zip(recorder.windows[warmup:], reference, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_push_sizes_formats_and_rates(renderer, avatar):
    audio = demo_speech(1.2)
    with renderer.stream(avatar, seed=0) as session:
        reference = run(session, audio)
    with renderer.stream(avatar, seed=0) as session:
        one_sample = run(session, audio, piece=1)
    assert all(np.array_equal(a, b) for a, b in zip(reference, one_sample, strict=True))
    int16 = (audio * 32767).astype(np.int16)
    with renderer.stream(avatar, seed=0) as session:
        assert len(run(session, int16)) == len(reference)
    stereo_44k = np.repeat(np.interp(np.arange(int(1.2 * 44100)) / 44100, np.arange(len(audio)) / 16000, audio)
                           [:, None], 2, axis=1).astype(np.float32)
    with renderer.stream(avatar, seed=0) as session:
        frames = run(session, stereo_44k, piece=4410, sample_rate=44100)
    assert len(frames) == len(reference) == 30  # 1.2 s, at whatever rate it came


def test_silence_keeps_the_avatar_idle(renderer, avatar):
    with renderer.stream(avatar, seed=0) as session:
        frames = run(session, np.zeros(16000 * 2, np.float32))
    assert frames
    portrait = demo_portrait().astype(float)
    for frame in frames:
        assert 10 * np.log10(255**2 / np.mean((frame - portrait) ** 2)) >= 30


def test_interrupt_drops_queued_audio_and_goes_on(renderer, avatar):
    speech = demo_speech(4.0)
    with renderer.stream(avatar, seed=0) as session:
        feeder = threading.Thread(target=session.push, args=(speech,))  # one push of 4 s
        feeder.start()
        indices = []
        for frame in session.frames(timeout=60):
            indices.append(frame.index)
            if frame.index == 2:
                session.interrupt()  # drops what is queued and what the push still holds
                feeder.join(timeout=60)
                session.push(np.zeros(8000, np.float32))
                session.end()
    assert not feeder.is_alive()
    assert indices == list(range(len(indices)))  # numbering goes on without a gap
    assert len(indices) < frame_count(len(speech))  # most of the speech was dropped
    # After the interrupt the stream ends with the audio pushed since: 0.5 s, 13 frames.
    assert session.stats.frames_emitted == len(indices) >= 13


def test_a_slow_consumer_blocks_the_producer_instead_of_growing_memory(renderer, avatar):
    from ditto_fast.engine.online import StreamSession

    session = StreamSession(renderer.networks, avatar, renderer.options(online_mode=True, overlap_v2=75, seed=0),
                            ring_slots=2, queued_windows=2)
    audio = demo_speech(6.0)
    done = threading.Event()

    def feed():
        for start in range(0, len(audio), 640):
            session.push(audio[start:start + 640])
        session.end()
        done.set()

    feeder = threading.Thread(target=feed)
    feeder.start()
    time.sleep(3.0)  # nobody takes frames meanwhile
    assert not done.is_set()  # push() is blocked: the queue and the ring are full
    assert session.queued_windows <= 2
    taken = sum(1 for _ in session.frames(timeout=60))  # draining lets it finish
    feeder.join(timeout=60)
    assert done.is_set() and taken == frame_count(len(audio))
    session.close()


def test_stats(renderer, avatar):
    audio = demo_speech(1.5)
    with renderer.stream(avatar, seed=0) as session:
        frames = run(session, audio)
    stats = session.stats.as_dict()
    assert stats["frames_emitted"] == stats["frames_taken"] == len(frames) == frame_count(len(audio))
    assert stats["dropped_frames"] == 0 and 0 <= stats["late_frames"] < len(frames)
    assert (stats["chunksize"], stats["overlap_v2"]) == ([3, 5, 2], 70)
    assert stats["first_frame_latency_s"] > 0 and stats["real_time_factor"] > 0
    assert abs(stats["audio_seconds"] - 1.5) < 1e-6
    assert len(session.stats.chunk_latencies) == len(reference_windows(audio))


def test_errors_in_the_worker_reach_the_consumer(renderer, avatar, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("hubert fell over")

    with renderer.stream(avatar, seed=0) as session:
        monkeypatch.setattr(HubertFeatures, "chunk", broken)  # after the warm-up features were made
        # The worker's error surfaces at the next call into the session, whichever it is.
        with pytest.raises(RuntimeError, match="hubert fell over"):
            session.push(demo_speech(1.0))
            session.end()
            list(session.frames(timeout=60))
    with pytest.raises(ValueError, match="option chunksize="):
        renderer.stream(avatar, chunksize=(3, 0, 2))


def test_stream_command(tmp_path, capsys):
    portrait, speech = write_demo_inputs(tmp_path, seconds=1.0)
    out, stats = tmp_path / "s.mp4", tmp_path / "s.json"
    assert main(["stream", "--source", str(portrait), "--audio", str(speech), "--checkpoints", str(TINY),
                 "--out", str(out), "--stats-json", str(stats), "--seed", "0"]) == 0
    figures = json.loads(stats.read_text())
    expected = frame_count(len(load_audio(speech)))
    assert figures["frames_emitted"] == expected
    assert capsys.readouterr().out.startswith(f"{expected} frames from 1.00 s of audio")
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == expected
        assert container.streams.audio


def test_shim_run_chunk_follows_the_reference_online_script(tmp_path):
    portrait, speech = write_demo_inputs(tmp_path, seconds=1.0)
    sdk = StreamSDK(str(TINY / "ditto_cfg" / "v0.4_hubert_cfg_trt_online.pkl"), str(TINY / "ditto_onnx"))
    sdk.setup(portrait, tmp_path / "o.mp4", seed=0)
    assert sdk.online_mode
    audio = load_audio(speech)
    chunksize = (3, 5, 2)
    audio = np.concatenate([np.zeros(chunksize[0] * 640, np.float32), audio])
    split_len = int(sum(chunksize) * 0.04 * 16000) + 80
    for i in range(0, len(audio), chunksize[1] * 640):
        chunk = audio[i:i + split_len]
        if len(chunk) < split_len:
            chunk = np.pad(chunk, (0, split_len - len(chunk)))
        sdk.run_chunk(chunk, chunksize)
    sdk.close()
    with av.open(str(sdk.tmp_output_path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == expected_frames(16000, 70)


def test_late_and_dropped_frames_are_counted(renderer, avatar):
    from ditto_fast.engine.online import StreamSession

    options = renderer.options(online_mode=True, overlap_v2=75, seed=0)
    with StreamSession(renderer.networks, avatar, options, ring_slots=2) as session:
        session.push(demo_speech(1.0))
        session.end()
        for _ in session.frames(timeout=60):
            time.sleep(0.08)  # a player that takes a frame every 80 ms falls behind a 25 fps clock
    assert session.stats.late_frames > 0 and session.stats.max_lateness > 0.04
    assert session.stats.dropped_frames == 0

    with StreamSession(renderer.networks, avatar, options) as session:
        session.push(demo_speech(1.0))
        session.end()
        next(iter(session.frames(timeout=60)))
        deadline = time.monotonic() + 60
        while session.stats.frames_emitted < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
    # Closed with frames made but never taken: the ring held them, now they are dropped.
    assert session.stats.dropped_frames == session.stats.frames_emitted - 1 > 0
