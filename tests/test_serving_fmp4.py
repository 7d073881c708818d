"""The fragmented MP4 encoder for browsers (MSE): box layout, fragments while the stream runs,
decoded content and timestamps, late joiners, video-only streams and misuse."""

from __future__ import annotations

import io
import re
import struct

import av
import numpy as np
import pytest

from ditto_fast.serving.fmp4 import AAC_FRAME, FragmentedMp4Encoder
from ditto_fast.stages.writer import nvenc_available

SIZE = 64
RATE = 16000
FRAMES = 50  # 2 s at 25 fps
SAMPLES_PER_FRAME = RATE // 25


def boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[str, int, int]]:
    """(type, start, end) of the boxes in data[start:end], which must be whole boxes exactly."""
    end = len(data) if end is None else end
    found = []
    while start < end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        assert size >= 8 and start + size <= end, f"box {kind!r} at {start} has size {size}"
        found.append((kind.decode("latin-1"), start, start + size))
        start += size
    return found


def frame(i: int, size: int = SIZE) -> np.ndarray:
    """A smooth pattern that moves with i: easy on the encoder, so decoded pixels stay close."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    rgb = np.stack([128 + 90 * np.sin((x + 2 * i) / 9), 128 + 90 * np.cos((y - i) / 11),
                    128 + 60 * np.sin((x + y + 3 * i) / 15)], axis=-1)
    return rgb.astype(np.uint8)


def speech(samples: int) -> np.ndarray:
    t = np.arange(samples) / RATE
    chirp, envelope = np.sin(2 * np.pi * (200 + 300 * t) * t), 0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t)
    return (0.3 * chirp * envelope).astype(np.float32)


def run(encoder: FragmentedMp4Encoder, frames: int, audio: np.ndarray | None = None) -> list[bytes]:
    """Push audio and frames in step, as a live session does; the take() after each frame, then
    close()'s bytes last."""
    takes = []
    for i in range(frames):
        if audio is not None:
            encoder.push_audio(audio[i * SAMPLES_PER_FRAME:(i + 1) * SAMPLES_PER_FRAME])
        encoder.push_video(frame(i, encoder.width))
        takes.append(encoder.take())
    takes.append(encoder.close())
    return takes


@pytest.fixture(scope="module")
def stream():
    """2 s of 64x64 video and audio; (encoder, takes, pushed frames, pushed audio)."""
    audio = speech(FRAMES * SAMPLES_PER_FRAME)
    encoder = FragmentedMp4Encoder(SIZE, SIZE, encoder="libx264")
    return encoder, run(encoder, FRAMES, audio), [frame(i) for i in range(FRAMES)], audio


def test_boxes_are_init_then_fragments(stream):
    encoder, takes, _, _ = stream
    data = b"".join(takes)
    top = boxes(data)
    assert [kind for kind, _, _ in top[:2]] == ["ftyp", "moov"]
    media = [kind for kind, _, _ in top[2:]]
    assert media and media == ["moof", "mdat"] * (len(media) // 2)
    _, moov_start, moov_end = top[1]
    moov = [kind for kind, _, _ in boxes(data, moov_start + 8, moov_end)]
    assert "mvex" in moov and moov.count("trak") == 2
    assert encoder.init_segment == data[:moov_end]
    assert encoder.mime_type.startswith('video/mp4; codecs="avc1.') and encoder.mime_type.endswith(', mp4a.40.2"')
    for chunk in takes:  # each take() is whole boxes: a fragment never spans two
        boxes(chunk)


def test_fragments_come_out_before_close(stream):
    _, takes, _, _ = stream
    running = takes[:-1]
    first = next(i for i, chunk in enumerate(running) if chunk)
    assert running[first].startswith(stream[0].init_segment)  # the init segment comes with fragment 1
    assert b"moof" in running[first][len(stream[0].init_segment):]
    # A keyframe every 25 frames: a fragment is complete when frame 25 (then 50) is pushed, give
    # or take the one packet the interleaver holds while the AAC encoder's output lags.
    assert first <= 26
    assert sum(chunk.count(b"moof") for chunk in running) >= 1


def test_decoded_video_matches_frames_and_times(stream):
    _, takes, pushed, _ = stream
    with av.open(io.BytesIO(b"".join(takes))) as container:
        video = container.streams.video[0]
        assert (video.codec_context.name, video.codec_context.width, video.codec_context.height) == ("h264", 64, 64)
        assert video.average_rate == 25
        decoded = [(f.pts * f.time_base, f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    assert len(decoded) == FRAMES
    for i, (time, rgb) in enumerate(decoded):
        assert abs(float(time) - i / 25) < 1e-3, (i, float(time))
        error = np.abs(rgb.astype(np.int16) - pushed[i]).mean()
        assert error < 4, (i, error)  # crf 18 on a smooth pattern: ~1 grey level (yuv420p chroma loss)


def test_decoded_audio_has_the_pushed_length_and_timing(stream):
    _, takes, _, pushed = stream
    with av.open(io.BytesIO(b"".join(takes))) as container:
        frames = list(container.decode(audio=0))
    assert frames[0].pts == 0 and frames[0].sample_rate == RATE
    decoded = np.concatenate([f.to_ndarray()[0] for f in frames])
    assert len(pushed) <= len(decoded) < len(pushed) + AAC_FRAME  # the last AAC frame is padded
    # The AAC priming is hidden (edit list): decoded sample n is pushed sample n, not 1024 later.
    assert np.abs(decoded[:len(pushed)] - pushed).mean() < 0.05 * np.abs(pushed).mean()


def test_a_late_joiner_plays_from_the_init_segment_and_a_later_fragment(stream):
    encoder, takes, _, _ = stream
    later = takes[-1]  # close()'s: the fragment of frames 25-49, the 2nd keyframe's
    assert [kind for kind, _, _ in boxes(later)] == ["moof", "mdat"]
    with av.open(io.BytesIO(encoder.init_segment + later)) as container:
        times = [float(f.pts * f.time_base) for f in container.decode(video=0)]
    assert times[0] == pytest.approx(1.0, abs=1e-3) and len(times) == 25


def test_each_fragment_starts_at_a_keyframe_every_interval():
    encoder = FragmentedMp4Encoder(SIZE, SIZE, encoder="libx264", keyframe_interval=10)
    takes = run(encoder, 30, speech(30 * SAMPLES_PER_FRAME))
    with av.open(io.BytesIO(b"".join(takes))) as container:
        keyframes = [i for i, p in enumerate(container.demux(video=0)) if p.size and p.is_keyframe]
    assert keyframes == [0, 10, 20]
    assert b"".join(takes).count(b"moof") == 3


def test_video_only():
    encoder = FragmentedMp4Encoder(SIZE, SIZE, audio_rate=None, encoder="libx264")
    takes = run(encoder, 30)
    assert b"moof" in takes[25]  # no audio to wait for: frame 25's keyframe closes fragment 1
    assert re.fullmatch(r'video/mp4; codecs="avc1\.[0-9a-f]{6}"', encoder.mime_type)
    with av.open(io.BytesIO(b"".join(takes))) as container:
        assert not container.streams.audio
        assert len(list(container.decode(video=0))) == 30


def test_short_audio_pushes_are_buffered_into_whole_frames():
    encoder = FragmentedMp4Encoder(SIZE, SIZE, encoder="libx264")
    audio = speech(26 * SAMPLES_PER_FRAME + 100)
    for chunk in np.array_split(audio, 97):  # odd lengths, none a multiple of 1024
        encoder.push_audio(chunk)
    for i in range(26):
        encoder.push_video(frame(i))
    data = encoder.take() + encoder.close()
    with av.open(io.BytesIO(data)) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
    assert len(audio) <= samples < len(audio) + AAC_FRAME


@pytest.mark.parametrize("bad", [np.zeros((SIZE, SIZE + 2, 3), np.uint8), np.zeros((SIZE, SIZE, 4), np.uint8),
                                 np.zeros((SIZE, SIZE, 3), np.float32), [[0] * 3] * SIZE])
def test_a_wrong_frame_names_the_expected_shape(bad):
    encoder = FragmentedMp4Encoder(SIZE, SIZE, encoder="libx264")
    with pytest.raises(ValueError, match=r"expected uint8 \(64, 64, 3\)"):
        encoder.push_video(bad)
    encoder.close()


@pytest.mark.parametrize("bad", [np.zeros(100, np.float64), np.zeros((100, 2), np.float32), np.zeros(100, np.int16)])
def test_wrong_audio_names_the_expected_format(bad):
    encoder = FragmentedMp4Encoder(SIZE, SIZE, encoder="libx264")
    with pytest.raises(ValueError, match=r"expected float32 \(samples,\) mono at 16000 Hz"):
        encoder.push_audio(bad)
    encoder.close()


def test_push_after_close_and_close_twice():
    encoder = FragmentedMp4Encoder(SIZE, SIZE, encoder="libx264")
    encoder.push_video(frame(0))
    encoder.push_audio(speech(3000))
    assert boxes(encoder.close())  # the whole stream, at close
    with pytest.raises(RuntimeError, match=r"push_video\(\) after close\(\)"):
        encoder.push_video(frame(1))
    with pytest.raises(RuntimeError, match=r"push_audio\(\) after close\(\)"):
        encoder.push_audio(speech(10))
    assert encoder.close() == b"" and encoder.take() == b""


def test_audio_into_a_video_only_encoder_is_refused():
    encoder = FragmentedMp4Encoder(SIZE, SIZE, audio_rate=None, encoder="libx264")
    with pytest.raises(RuntimeError, match="video-only"):
        encoder.push_audio(speech(10))
    assert encoder.close() == b""  # nothing pushed: no stream at all


@pytest.mark.parametrize("kwargs,message", [
    ({"width": 63}, "even frame sizes"), ({"height": 0}, "height must be a positive integer"),
    ({"keyframe_interval": 0}, "keyframe_interval must be"), ({"audio_rate": 0}, "audio_rate must be"),
    ({"crf": 60}, "crf must be an integer from 0 to 51"), ({"preset": "speed"}, "unknown x264 preset"),
    ({"encoder": "vp9"}, "unknown encoder"), ({"threads": -1}, "threads must be"),
])
def test_bad_settings_fail_at_construction(kwargs, message):
    settings = {"width": SIZE, "height": SIZE, "encoder": "libx264", **kwargs}
    with pytest.raises(ValueError, match=message):
        FragmentedMp4Encoder(**settings)


@pytest.mark.skipif(not nvenc_available(), reason="h264_nvenc does not open here")
def test_nvenc_streams_fragments_too():
    encoder = FragmentedMp4Encoder(256, 256, encoder="h264_nvenc")
    takes = run(encoder, 30, speech(30 * SAMPLES_PER_FRAME))
    assert any(b"moof" in chunk for chunk in takes[:-1])
    with av.open(io.BytesIO(b"".join(takes))) as container:
        times = [float(f.pts * f.time_base) for f in container.decode(video=0)]
    assert times == pytest.approx([i / 25 for i in range(30)], abs=1e-3)
