"""The mp4 writer: H.264 + AAC, 25 fps, atomic on success, nothing left behind on failure."""

from __future__ import annotations

import os
import pathlib
import re
import threading

import av
import numpy as np
import pytest

import ditto_fast.stages.writer as writer_module
from ditto_fast.stages.writer import (
    DEFAULT_CRF,
    DEFAULT_PRESET,
    FPS,
    X264_PRESETS,
    OutputError,
    VideoWriter,
    check_writable,
    check_x264_options,
)


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


# -- encoder options -------------------------------------------------------------------------------

# x264's subpixel-refinement level per preset: the preset itself is not in the stream, its settings are.
SUBME_OF_PRESET = {"ultrafast": 0, "veryfast": 2, "medium": 7, "slow": 8}


def x264_settings(path) -> dict[str, str]:
    """The settings libx264 wrote into the stream's SEI ("x264 - core ... options: crf=18.0 ...")."""
    with av.open(str(path)) as container:
        first = bytes(next(container.demux(video=0)))
    match = re.search(rb"x264 - core .*? options: ([^\x00]*)", first)
    assert match, f"{path}: no x264 settings SEI in the first packet"
    return dict(item.split("=", 1) for item in match.group(1).decode().split() if "=" in item)


def write_frames(path, frames, **options) -> None:
    frames = list(frames)
    height, width = frames[0].shape[:2]
    with VideoWriter(path, width, height, **{"encoder": "libx264", **options}) as writer:
        for frame in frames:
            writer.write(frame)


def test_defaults_are_the_references():
    assert check_x264_options() == (DEFAULT_CRF, DEFAULT_PRESET) == (18, "medium")
    assert check_x264_options(0, "placebo") == (0, "placebo")
    assert check_x264_options(np.int64(51), "ultrafast") == (51, "ultrafast")


@pytest.mark.parametrize("crf", [-1, 52, 18.5, "18", True])
def test_bad_crf_is_refused_before_a_file_exists(tmp_path, crf):
    with pytest.raises(ValueError, match=r"^x264 crf must be an integer from 0 to 51, got "):
        VideoWriter(tmp_path / "o.mp4", 64, 64, crf=crf)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("preset", ["quick", "Medium", "", "balanced"])
def test_bad_x264_preset_is_refused_before_a_file_exists(tmp_path, preset):
    with pytest.raises(ValueError, match=r"^unknown x264 preset .*; choose from ultrafast, superfast") as info:
        VideoWriter(tmp_path / "o.mp4", 64, 64, preset=preset)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("crf,preset", [(30, "ultrafast"), (12, "veryfast"), (None, None)])
def test_options_reach_the_encoder(tmp_path, crf, preset):
    out = tmp_path / "o.mp4"
    write_frames(out, moving_frames(3), crf=crf, preset=preset)
    settings = x264_settings(out)
    expected_crf, expected_preset = check_x264_options(crf, preset)
    assert float(settings["crf"]) == expected_crf
    assert int(settings["subme"]) == SUBME_OF_PRESET[expected_preset]


def test_frame_threads_not_slice_threads(tmp_path):
    out = tmp_path / "o.mp4"
    write_frames(out, moving_frames(3, 256, 256))  # x264 gives tiny frames a single thread
    settings = x264_settings(out)
    assert settings["sliced_threads"] == "0"
    if len(os.sched_getaffinity(0)) > 1:
        assert int(settings["threads"]) > 1


@pytest.mark.parametrize("threads", [1, 3])
def test_thread_budget_reaches_x264(tmp_path, threads):
    out = tmp_path / "o.mp4"
    write_frames(out, moving_frames(3, 256, 256), threads=threads)
    assert int(x264_settings(out)["threads"]) == threads


@pytest.mark.parametrize("threads", [-1, 2.0, "2", True])
def test_bad_thread_budget_is_refused_before_a_file_exists(tmp_path, threads):
    with pytest.raises(ValueError, match=r"^threads must be a positive integer"):
        VideoWriter(tmp_path / "o.mp4", 64, 64, threads=threads)
    assert list(tmp_path.iterdir()) == []


def test_every_preset_name_is_one_x264_knows(tmp_path):
    for preset in X264_PRESETS:
        write_frames(tmp_path / f"{preset}.mp4", moving_frames(1, 32, 32), preset=preset)
    assert len(list(tmp_path.glob("*.mp4"))) == len(X264_PRESETS)


# -- the encoder thread ----------------------------------------------------------------------------


def gray_levels(count: int) -> list[int]:
    return [10 + 20 * i for i in range(count)]


def test_frames_arrive_in_order_and_the_buffer_is_free_after_write(tmp_path):
    out = tmp_path / "o.mp4"
    levels = gray_levels(12)
    buffer = np.empty((64, 64, 3), np.uint8)  # one buffer, refilled at once: a ring slot handed back
    with VideoWriter(out, 64, 64, queued_frames=2) as writer:
        for level in levels:
            buffer[:] = level
            writer.write(buffer)
    with av.open(str(out)) as container:
        decoded = [float(f.to_ndarray(format="rgb24").mean()) for f in container.decode(video=0)]
    assert np.allclose(decoded, levels, atol=2)


def test_a_frame_of_the_wrong_size_or_after_close_is_refused(tmp_path):
    with VideoWriter(tmp_path / "o.mp4", 64, 64) as writer:
        with pytest.raises(ValueError, match=r"frame 0 is uint8 \(64, 32, 3\), expected uint8 \(64, 64, 3\)"):
            writer.write(np.zeros((64, 32, 3), np.uint8))
        writer.write(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(OutputError, match=r"write\(\) after close\(\) or abort\(\)"):
        writer.write(np.zeros((64, 64, 3), np.uint8))


class EncoderBroke(RuntimeError):
    pass


@pytest.fixture
def encoder_fails_at(monkeypatch):
    """Make the encoder thread raise while encoding frame `index` (set the returned list's item)."""
    failing_index = [None]
    real = VideoWriter.encode_frame

    def failing_encode(self, frame):
        if frame is not None and frame.pts == failing_index[0]:
            raise EncoderBroke(f"frame {frame.pts} could not be encoded")
        real(self, frame)

    monkeypatch.setattr(VideoWriter, "encode_frame", failing_encode)
    return failing_index


def test_an_encoder_error_surfaces_once_at_the_next_write(tmp_path, encoder_fails_at):
    encoder_fails_at[0] = 2
    out = tmp_path / "o.mp4"
    writer = VideoWriter(out, 64, 64, queued_frames=2)
    with pytest.raises(EncoderBroke, match="frame 2 could not") as info:
        for frame in moving_frames(50, 64, 64):
            writer.write(frame)
    assert "failing_encode" in [entry.name for entry in info.traceback]  # the encoder thread's own frames
    assert writer.frames < 50  # back-pressure: the caller could not run far ahead of the failure
    with pytest.raises(OutputError, match="the encoder failed earlier"):  # not the same error twice
        writer.close()
    assert list(tmp_path.iterdir()) == []


def test_an_encoder_error_after_the_last_write_surfaces_at_close(tmp_path, encoder_fails_at):
    encoder_fails_at[0] = 2
    out = tmp_path / "o.mp4"
    out.write_bytes(b"previous render")
    with pytest.raises(EncoderBroke) as info:
        with VideoWriter(out, 64, 64) as writer:
            for frame in moving_frames(3, 64, 64):
                writer.write(frame)
    assert "failing_encode" in [entry.name for entry in info.traceback]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"] and out.read_bytes() == b"previous render"


def test_abort_drops_queued_frames_without_encoding_them(tmp_path, monkeypatch):
    real = VideoWriter.encode_frame
    encoded = []
    first_frame_started = threading.Event()
    release = threading.Event()

    def slow_encode(self, frame):
        first_frame_started.set()
        release.wait(timeout=10)
        encoded.append(frame)
        real(self, frame)

    monkeypatch.setattr(VideoWriter, "encode_frame", slow_encode)
    writer = VideoWriter(tmp_path / "o.mp4", 64, 64, queued_frames=3)
    for frame in moving_frames(4, 64, 64):  # one in the encoder, three queued
        writer.write(frame)
    assert first_frame_started.wait(timeout=10)
    threading.Timer(0.2, release.set).start()
    writer.abort()
    assert len(encoded) == 1
    assert list(tmp_path.iterdir()) == []


def test_auto_encoder_falls_back_to_libx264_without_nvenc(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_module, "nvenc_available", lambda: False)
    path = tmp_path / "auto.mp4"
    frames = [np.full((64, 64, 3), 40 * i, np.uint8) for i in range(3)]
    with VideoWriter(path, 64, 64) as writer:
        assert writer.encoder == "libx264"
        for frame in frames:
            writer.write(frame)
    assert "crf" in x264_settings(path)


def test_nvenc_is_chosen_when_it_opens_and_refused_by_name_when_it_does_not(monkeypatch):
    monkeypatch.setattr(writer_module, "nvenc_available", lambda: True)
    assert writer_module.resolve_encoder("auto") == "h264_nvenc"
    assert writer_module.resolve_encoder("libx264") == "libx264"
    monkeypatch.setattr(writer_module, "nvenc_available", lambda: False)
    with pytest.raises(OutputError, match="h264_nvenc cannot be opened here"):
        writer_module.resolve_encoder("h264_nvenc")
    with pytest.raises(ValueError, match="unknown encoder 'x265'"):
        writer_module.resolve_encoder("x265")


def test_without_an_nvidia_driver_the_nvenc_probe_says_no_instead_of_failing():
    if pathlib.Path("/dev/nvidiactl").exists():
        pytest.skip("an NVIDIA driver is present: NVENC may open here")
    assert writer_module.nvenc_available() is False
