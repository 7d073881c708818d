"""The mp4 writer: H.264 + AAC, 25 fps, atomic on success, nothing left behind on failure."""

from __future__ import annotations

import os

import av
import numpy as np
import pytest

from ditto_fast.stages.writer import FPS, OutputError, VideoWriter, check_writable


def write_tone(path, seconds: float, rate: int = 44100, channels: int = 2) -> None:
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    samples = np.repeat(tone[None], channels, axis=0).T.reshape(1, -1)  # packed s16
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        stream.layout = "stereo" if channels == 2 else "mono"
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout=stream.layout.name)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def moving_frames(count: int, height: int = 96, width: int = 128):
    for i in range(count):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[:, (i * 4) % width:(i * 4) % width + 16] = (200, 80, 40)
        yield frame


def test_frames_and_audio_round_trip(tmp_path):
    audio = tmp_path / "speech.wav"
    write_tone(audio, 1.0)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 128, 96, audio_path=audio) as writer:
        for frame in moving_frames(25):
            writer.write(frame)
    assert out.is_file() and not list(tmp_path.glob(".*partial*"))
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        assert (video.codec_context.name, video.codec_context.width, video.codec_context.height) == ("h264", 128, 96)
        assert video.average_rate == FPS
        assert sum(1 for _ in container.decode(video=0)) == 25
    with av.open(str(out)) as container:
        audio_stream = container.streams.audio[0]
        assert audio_stream.codec_context.name == "aac"
        duration = sum(f.samples for f in container.decode(audio=0)) / audio_stream.codec_context.sample_rate
    assert abs(duration - 1.0) <= 0.04 + 2048 / 44100  # AAC priming/padding frames at most


def test_an_error_mid_render_leaves_no_file_and_keeps_an_old_one(tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous render")
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(out, 64, 64) as writer:
            writer.write(np.zeros((64, 64, 3), np.uint8))
            raise RuntimeError("boom")
    assert out.read_bytes() == b"previous render"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_keyboard_interrupt_also_cleans_up(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(out, 64, 64) as writer:
            writer.write(np.zeros((64, 64, 3), np.uint8))
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name,message",
    [("missing/out.mp4", "does not exist"), ("out.avi", "must be an .mp4"), (".", "is a folder")],
)
def test_unwritable_outputs_are_refused_up_front(tmp_path, name, message):
    with pytest.raises(OutputError, match=message):
        check_writable(tmp_path / name)


def test_read_only_folder(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    with pytest.raises(OutputError, match="is not writable"):
        check_writable(folder / "out.mp4")


def test_odd_sizes_and_silent_audio_file(tmp_path):
    with pytest.raises(ValueError, match="even frame sizes"):
        VideoWriter(tmp_path / "o.mp4", 65, 64)
    assert list(tmp_path.iterdir()) == []
    video_only = tmp_path / "v.mp4"
    with VideoWriter(video_only, 64, 64) as writer:
        writer.write(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="has no audio stream"):
        VideoWriter(tmp_path / "o2.mp4", 64, 64, audio_path=video_only)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]
