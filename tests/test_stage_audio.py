"""Audio stage: file loading (PyAV + soxr, librosa-compatible) and HuBERT feature windowing,
checked bit-exactly against the reference golden vectors (golden README §3.1, §5.3; features exact).

Golden cases: hubert_stub.npz; every length of wav2feat_offline.npz and of
wav2feat_offline_chunksize.npz; wav2feat_offline_long.npz; every case of wav2feat_online.npz.
Compared: probe_encoding (the test's HuBERT stub, built from the file's own hubert_v1/v2, which
must equal stub_weights.npz's); len{i}_num_f and len{i}_feat; num_f and feat; case{c}_num_f,
case{c}_n_chunks, case{c}_chunks, case{c}_chunk_feats, n_cases (the number of cases).
Inputs, not compared: lengths / len{i}_audio / audio / case{c}_audio / chunksize /
case{c}_chunksize, nonzero_band_samples (where the long audio is non-zero: a description of the
input, checked to cover frame 1615, the first window that starts a sample early), hubert_stub's
note. Not comparable: len{i}_n_windows, which the reference run did not record (all 0); the
HuBERT call count is checked against the 5-frames-per-call windowing instead.
"""

from __future__ import annotations

import itertools
import math
import tracemalloc
import wave
from pathlib import Path

import av
import numpy as np
import pytest
from golden_stubs import HubertStub, golden_cases, load_golden

from ditto_fast.stages import audio, audio_windows
from ditto_fast.stages.audio import AudioError
from ditto_fast.stages.audio_features import offline_features
from ditto_fast.stages.audio_windows import DEFAULT_CHUNKSIZE, LiveWindows
from ditto_fast.stages.hubert import HubertFeatures, features_from_hubert

# --------------------------------------------------------------------------- HuBERT stub


@pytest.fixture(scope="module")
def hubert_stub() -> HubertStub:
    weights = load_golden("stub_weights.npz")
    return HubertStub(weights["hubert_v1"], weights["hubert_v2"])


def test_hubert_stub_matches_its_probe(hubert_stub: HubertStub) -> None:
    golden = load_golden("hubert_stub.npz")
    for key in ("hubert_v1", "hubert_v2"):
        np.testing.assert_array_equal(golden[key], load_golden("stub_weights.npz")[key])
    (encoding,) = HubertStub(golden["hubert_v1"], golden["hubert_v2"])(input_values=golden["probe_input"][None])
    np.testing.assert_array_equal(encoding, golden["probe_encoding"])
    (encoding,) = hubert_stub(input_values=golden["probe_input"][None])
    np.testing.assert_array_equal(encoding, golden["probe_encoding"])


# ------------------------------------------------------------------------ offline golden


def _chunksize(golden) -> tuple[int, int, int]:
    return tuple(int(c) for c in golden["chunksize"]) if "chunksize" in golden else DEFAULT_CHUNKSIZE


@pytest.mark.parametrize(("path", "i"), golden_cases("wav2feat_offline*.npz", "len"))
def test_offline_features_match_golden_bit_exactly(hubert_stub: HubertStub, path, i: int) -> None:
    golden = load_golden(path)
    chunksize = _chunksize(golden)
    if "chunksize" in golden:  # a file that names its chunksize is there to try another one
        assert chunksize != DEFAULT_CHUNKSIZE
    samples = golden[f"len{i}_audio"]
    length = int(golden["lengths"][i])
    assert samples.shape == (length,)
    expected = golden[f"len{i}_feat"]
    num_f = int(golden[f"len{i}_num_f"]) if f"len{i}_num_f" in golden else len(expected)
    assert audio.frame_count(length) == num_f == len(expected), f"length {length}"
    hubert_stub.calls = 0
    features = offline_features(HubertFeatures(hubert_stub), samples, chunksize)
    assert hubert_stub.calls == math.ceil(num_f / chunksize[1]), f"length {length}"
    assert features.dtype == np.float32
    np.testing.assert_array_equal(features, expected, err_msg=f"length {length}")


def test_offline_features_long_audio_match_golden(hubert_stub: HubertStub) -> None:
    """Long audio whose windows include the starts that fall one sample early (README §5.3)."""
    golden = load_golden("wav2feat_offline_long.npz")
    band_start, band_end = (int(s) for s in golden["nonzero_band_samples"])
    # The band must contain frame 1615, the first whose window starts a sample early.
    assert band_start <= 1615 * 640 < band_end
    assert audio.frame_count(golden["audio"].shape[0]) == int(golden["num_f"])
    features = offline_features(HubertFeatures(hubert_stub), golden["audio"], _chunksize(golden))
    np.testing.assert_array_equal(features, golden["feat"])


# ------------------------------------------------------------------------- online golden


def test_online_golden_names_its_cases() -> None:
    golden = load_golden("wav2feat_online.npz")
    assert golden.indices("case") == list(range(int(golden["n_cases"])))


@pytest.mark.parametrize(("path", "case"), golden_cases("wav2feat_online*.npz", "case"))
def test_online_chunks_and_features_match_golden(hubert_stub: HubertStub, path, case: int) -> None:
    golden = load_golden(path)
    chunksize = tuple(int(c) for c in golden[f"case{case}_chunksize"])
    samples = golden[f"case{case}_audio"]
    assert audio.frame_count(len(samples)) == int(golden[f"case{case}_num_f"])
    extractor = HubertFeatures(hubert_stub)
    chunks = np.stack(_live_windows(samples, chunksize, [len(samples)]))  # the whole audio at once, then its end
    assert chunks.shape[0] == int(golden[f"case{case}_n_chunks"])
    np.testing.assert_array_equal(chunks, golden[f"case{case}_chunks"])
    features = np.stack([extractor.chunk(chunk, chunksize) for chunk in chunks])
    np.testing.assert_array_equal(features, golden[f"case{case}_chunk_feats"])
    # However the live audio is split into pushes, the same windows come out.
    for pieces in ([1], [777, 3, 6480, 3199]):
        np.testing.assert_array_equal(np.stack(_live_windows(samples, chunksize, pieces)), chunks,
                                      err_msg=f"pushes of {pieces} samples")


def _live_windows(samples: np.ndarray, chunksize, pieces: list[int]) -> list[np.ndarray]:
    """`samples` pushed into a fresh `LiveWindows` in pieces of the given sizes (cycled), then flushed."""
    cutter = LiveWindows(chunksize, HubertFeatures.window_extra_samples)
    windows, start, sizes = [], 0, itertools.cycle(pieces)
    while start < len(samples):
        size = next(sizes)
        windows += cutter.push(samples[start:start + size])
        start += size
    return windows + cutter.flush()


# ------------------------------------------------------------ geometry (no golden needed)


@pytest.mark.parametrize(
    ("num_samples", "expected"),
    [
        (0, 0),
        (1, 1),
        (640, 1),
        (641, 2),
        (3200, 5),
        (16000, 25),
        (16001, 26),
        # Exact multiples of 640 where ceil((n/16000)*25) in double rounds up (spec §5.6).
        (7 * 640, 8),
        (14 * 640, 15),
    ],
)
def test_frame_count_reproduces_double_rounding(num_samples: int, expected: int) -> None:
    assert audio.frame_count(num_samples) == expected


def test_window_length() -> None:
    assert audio_windows.window_length((3, 5, 2), HubertFeatures.window_extra_samples) == 6480
    assert audio_windows.window_length((2, 4, 1), HubertFeatures.window_extra_samples) == 4560


def test_offline_windows_start_one_sample_early_at_the_spec_frames() -> None:
    # A ramp makes every window's first value name the source sample it starts at.
    num_samples = 3235 * 640
    ramp = np.arange(num_samples, dtype=np.float32)
    windows = np.stack(list(audio_windows.offline_windows(ramp, (3, 5, 2), HubertFeatures.window_extra_samples)))
    num_f = audio.frame_count(num_samples)
    lead = 6480 - 4480  # zeros before sample 0 (spec §5.6)
    assert num_f == 3235
    assert windows.shape == (math.ceil(3235 / 5), 6480)
    assert windows[0, lead - 1] == 0 and windows[0, lead] == 0 and windows[0, lead + 1] == 1
    for frame in range(5, num_f, 5):
        early = frame in (1615, 3205, 3230)
        expected_start = 640 * frame - lead - (1 if early else 0)
        assert windows[frame // 5, 0] == expected_start, f"frame {frame}"


class _ZeroHubert:
    """A HuBERT stand-in returning zeros of the right shape."""

    name = "hubert"

    def __call__(self, *, input_values: np.ndarray) -> tuple[np.ndarray]:
        return (np.zeros(((input_values.shape[1] - 400) // 320 + 1, 1024), np.float32),)


def test_offline_windows_of_empty_audio() -> None:
    assert list(audio_windows.offline_windows(np.zeros(0, np.float32), (3, 5, 2), 80)) == []
    assert offline_features(HubertFeatures(_ZeroHubert()), np.zeros(0, np.float32)).shape == (0, 1024)


def test_offline_windows_are_built_one_at_a_time() -> None:
    """Three minutes of audio: its 900 windows are never all in memory at once."""
    clip = np.zeros(180 * audio.SAMPLE_RATE, np.float32)
    tracemalloc.start()
    try:
        count = sum(1 for _ in audio_windows.offline_windows(clip, (3, 5, 2), 80))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 900
    assert peak < 8 * 6480 * 4, f"{peak} bytes allocated at peak"  # a few windows, not 900


def test_features_from_hubert_keeps_the_valid_rows_and_averages_pairs() -> None:
    frames = np.arange(20, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    features = features_from_hubert(frames, (3, 5, 2))
    # Rows [-14, -4) = 6..15, averaged in pairs.
    np.testing.assert_array_equal(features[:, 0], [6.5, 8.5, 10.5, 12.5, 14.5])
    stacked = features_from_hubert(np.stack([frames, frames + 1]), (3, 5, 2))
    assert stacked.shape == (2, 5, 3)
    np.testing.assert_array_equal(stacked[1], features + 1)
    # right = 0 keeps the last rows (the reference's [-x:-0] slice would be empty).
    np.testing.assert_array_equal(features_from_hubert(frames, (0, 2, 0))[:, 0], [16.5, 18.5])
    with pytest.raises(ValueError, match="T >= 14"):
        features_from_hubert(frames[:13], (3, 5, 2))


def test_live_windows_tile_the_delayed_audio() -> None:
    for length in (1, 1279, 1280, 1281, 16000):
        samples = np.arange(1, length + 1, dtype=np.float32)
        chunks = np.stack(_live_windows(samples, (3, 5, 2), [1000]))
        assert chunks.shape == (math.ceil((length + 1920) / 3200), 6480)
        delayed = np.concatenate([np.zeros(1920, np.float32), samples])
        # The chunks' leading 3200-sample strides, laid end to end, are the delayed audio.
        np.testing.assert_array_equal(chunks[:, :3200].ravel()[: delayed.shape[0]], delayed)
        # Each chunk runs on into the next stride, and the last one is zero-padded.
        np.testing.assert_array_equal(chunks[:-1, 3200:], chunks[1:, :3280])
        tail = delayed[3200 * (chunks.shape[0] - 1) :]
        np.testing.assert_array_equal(chunks[-1, : tail.shape[0]], tail)
        np.testing.assert_array_equal(chunks[-1, tail.shape[0] :], 0)


def test_live_windows_reset_and_flush_start_a_new_stream() -> None:
    samples = np.arange(1, 9001, dtype=np.float32)
    fresh = np.stack(_live_windows(samples, (3, 5, 2), [len(samples)]))
    cutter = LiveWindows((3, 5, 2), HubertFeatures.window_extra_samples)
    assert cutter.push(samples[:4000]) == []  # 1920 + 4000 samples: no complete window yet
    cutter.reset()  # what StreamSession.interrupt() does: the pushed audio is dropped
    np.testing.assert_array_equal(np.stack(cutter.push(samples) + cutter.flush()), fresh)
    # flush() ended that stream and left the cutter at the start of the next one.
    np.testing.assert_array_equal(np.stack(cutter.push(samples) + cutter.flush()), fresh)


def test_live_windows_geometry() -> None:
    cutter = LiveWindows((2, 4, 1), HubertFeatures.window_extra_samples)
    assert (cutter.window_length, cutter.stride) == (4560, 4 * 640)
    # int(1615 * 0.04 * 16000) is one sample short: with no extra samples the window would not reach the next start.
    with pytest.raises(ValueError, match="shorter than its stride"):
        LiveWindows((0, 1615, 0), 0)


# --------------------------------------------------------------------------- load_audio

_TONE_HZ = 440.0


def _tone(rate: int, channels: int, seconds: float = 1.0) -> np.ndarray:
    """(n, channels) float32 440 Hz sine at half scale, same on every channel."""
    t = np.arange(int(rate * seconds)) / rate
    return np.repeat((0.5 * np.sin(2 * np.pi * _TONE_HZ * t)).astype(np.float32)[:, None], channels, 1)


def _write(path: Path, codec: str, sample_format: str, samples: np.ndarray, rate: int) -> None:
    """Encode (n, channels) samples, already in `sample_format`'s dtype, with PyAV."""
    layout = "mono" if samples.shape[1] == 1 else "stereo"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        block = stream.codec_context.frame_size or 1024
        for start in range(0, samples.shape[0], block):
            part = samples[start : start + block]
            data = np.ascontiguousarray(part.T if sample_format.endswith("p") else part.reshape(1, -1))
            frame = av.AudioFrame.from_ndarray(data, format=sample_format, layout=layout)
            frame.sample_rate = rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _encoder_available(codec: str) -> bool:
    try:
        av.codec.Codec(codec, "w")
    except (av.FFmpegError, ValueError):
        return False
    return True


def _peak_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.shape[0])))
    return float(np.argmax(spectrum)) * audio.SAMPLE_RATE / samples.shape[0]


@pytest.mark.parametrize(
    ("suffix", "codec", "sample_format", "rate", "channels"),
    [
        ("wav", "pcm_s16le", "s16", 44100, 2),
        ("wav", "pcm_s16le", "s16", 8000, 1),
        ("flac", "flac", "s16", 48000, 2),
        ("ogg", "libopus", "flt", 48000, 2),
        ("mp3", "libmp3lame", "fltp", 44100, 2),
    ],
)
def test_load_audio_formats(
    tmp_path: Path, suffix: str, codec: str, sample_format: str, rate: int, channels: int
) -> None:
    if not _encoder_available(codec):
        pytest.skip(f"PyAV's FFmpeg has no {codec} encoder")
    source = _tone(rate, channels)
    if sample_format.startswith("s16"):
        source = np.round(source * 32767).astype(np.int16)
    path = tmp_path / f"tone.{suffix}"
    _write(path, codec, sample_format, source, rate)
    loaded = audio.load_audio(path)
    assert loaded.dtype == np.float32 and loaded.ndim == 1
    expected_length = source.shape[0] * audio.SAMPLE_RATE / rate
    assert abs(loaded.shape[0] - expected_length) <= max(1.0, audio.SAMPLE_RATE / rate)
    assert abs(_peak_frequency(loaded) - _TONE_HZ) <= 1.0
    assert 0.4 < np.abs(loaded).max() < 0.6


def test_load_audio_lossless_equals_in_memory_conversion(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pcm = rng.integers(-32768, 32767, size=(4410, 2), dtype=np.int16)
    path = tmp_path / "noise.wav"
    _write(path, "pcm_s16le", "s16", pcm, 44100)
    loaded = audio.load_audio(path)
    np.testing.assert_array_equal(loaded, audio.as_mono_16k(pcm, 44100))
    assert loaded.shape == (1600,)


def _write_16k_mono_wav(path: Path, pcm: np.ndarray) -> None:
    """A 16 kHz mono wav of `pcm` (int16, or uint8 for 8-bit) via the standard library."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(pcm.dtype.itemsize)
        out.setframerate(16000)
        out.writeframes(pcm.tobytes())


def test_load_audio_16k_mono_wav_is_exact_pcm_scaling(tmp_path: Path) -> None:
    pcm16 = np.array([-32768, -1, 0, 1, 32767, 12345], np.int16)
    _write_16k_mono_wav(tmp_path / "pcm16.wav", pcm16)
    np.testing.assert_array_equal(audio.load_audio(tmp_path / "pcm16.wav"), pcm16.astype(np.float32) / 32768)
    pcm8 = np.array([0, 64, 128, 255], np.uint8)
    _write_16k_mono_wav(tmp_path / "pcm8.wav", pcm8)
    np.testing.assert_array_equal(audio.load_audio(tmp_path / "pcm8.wav"), [-1.0, -0.5, 0.0, 127 / 128])


def test_as_mono_16k_downmix_and_dtypes() -> None:
    left = np.array([0.5, -0.25, 1.0], np.float32)
    right = np.array([0.25, 0.25, -1.0], np.float32)
    np.testing.assert_array_equal(audio.as_mono_16k(np.stack([left, right], 1), 16000), (left + right) / np.float32(2))
    np.testing.assert_array_equal(audio.as_mono_16k(np.array([16384, -32768], np.int16), 16000), [0.5, -1.0])
    # librosa's length fix: ceil(n · 16000 / rate), zero-padded where soxr returns fewer.
    assert audio.as_mono_16k(np.ones(100, np.float32), 44100).shape == (37,)
    assert audio.as_mono_16k(np.ones(1, np.float32), 48000).shape == (1,)
    with pytest.raises(AudioError, match="shape"):
        audio.as_mono_16k(np.zeros((2, 2, 2), np.float32), 16000)
    with pytest.raises(AudioError, match="sample rate"):
        audio.as_mono_16k(np.zeros(4, np.float32), 0)


def test_load_audio_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.wav"
    with pytest.raises(FileNotFoundError, match="absent.wav"):
        audio.load_audio(missing)


def test_load_audio_text_file_named_wav(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 20)
    with pytest.raises(AudioError, match="notes.wav.*cannot decode|cannot decode.*notes.wav"):
        audio.load_audio(path)


def test_load_audio_zero_length_wav(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    _write_16k_mono_wav(path, np.zeros(0, np.int16))
    with pytest.raises(AudioError, match="empty.wav contains no samples"):
        audio.load_audio(path)
    (tmp_path / "zero_bytes.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="zero_bytes.wav"):
        audio.load_audio(tmp_path / "zero_bytes.wav")


def test_load_audio_file_without_audio_stream(tmp_path: Path) -> None:
    path = tmp_path / "silent_film.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(AudioError, match="silent_film.mp4 has no audio stream"):
        audio.load_audio(path)
