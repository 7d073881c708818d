"""Audio stage: file loading (PyAV + soxr, librosa-compatible) and HuBERT feature windowing,
checked bit-exactly against the reference golden vectors (golden README §3.1, §5.3)."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import av
import numpy as np
import pytest
from golden_stubs import HubertStub

from ditto_fast.stages import audio
from ditto_fast.stages.audio import AudioError

# --------------------------------------------------------------------------- HuBERT stub


def _load(shared_ref: Path, name: str) -> np.lib.npyio.NpzFile:
    return np.load(shared_ref / "golden" / name, allow_pickle=False)


@pytest.fixture(scope="module")
def hubert_stub(shared_ref: Path) -> HubertStub:
    weights = _load(shared_ref, "stub_weights.npz")
    return HubertStub(weights["hubert_v1"], weights["hubert_v2"])


def test_hubert_stub_matches_its_probe(shared_ref: Path, hubert_stub: HubertStub) -> None:
    golden = _load(shared_ref, "hubert_stub.npz")
    (encoding,) = hubert_stub(input_values=golden["probe_input"][None])
    assert encoding.shape == (20, 1024)
    np.testing.assert_array_equal(encoding, golden["probe_encoding"])


# ------------------------------------------------------------------------ offline golden


def test_offline_features_match_golden_bit_exactly(shared_ref: Path, hubert_stub: HubertStub) -> None:
    golden = _load(shared_ref, "wav2feat_offline.npz")
    for i, length in enumerate(golden["lengths"]):
        samples = golden[f"len{i}_audio"]
        assert samples.shape == (length,)
        num_f = int(golden[f"len{i}_num_f"])
        assert audio.frame_count(length) == num_f, f"length {length}"
        hubert_stub.calls = 0
        features = audio.offline_features(samples, hubert_stub)
        # The golden n_windows entries were not recorded (all 0); one HuBERT call per 5 frames.
        assert hubert_stub.calls == math.ceil(num_f / 5), f"length {length}"
        assert features.dtype == np.float32
        np.testing.assert_array_equal(features, golden[f"len{i}_feat"], err_msg=f"length {length}")


def test_offline_features_long_audio_reproduces_window_start_quirk(shared_ref: Path, hubert_stub: HubertStub) -> None:
    golden = _load(shared_ref, "wav2feat_offline_long.npz")
    band_start, band_end = (int(s) for s in golden["nonzero_band_samples"])
    # The band must contain frame 1615, the first whose window starts a sample early.
    assert band_start <= 1615 * 640 < band_end
    assert audio.frame_count(golden["audio"].shape[0]) == int(golden["num_f"])
    features = audio.offline_features(golden["audio"], hubert_stub)
    np.testing.assert_array_equal(features, golden["feat"])


def test_offline_features_with_other_chunksize(shared_ref: Path, hubert_stub: HubertStub) -> None:
    golden = _load(shared_ref, "wav2feat_offline_chunksize.npz")
    chunksize = tuple(int(c) for c in golden["chunksize"])
    assert chunksize != audio.DEFAULT_CHUNKSIZE
    for i, length in enumerate(golden["lengths"]):
        expected = golden[f"len{i}_feat"]
        features = audio.offline_features(golden[f"len{i}_audio"], hubert_stub, chunksize)
        assert features.shape == (audio.frame_count(length), 1024)
        np.testing.assert_array_equal(features, expected, err_msg=f"length {length}")


# ------------------------------------------------------------------------- online golden


def test_online_chunks_and_features_match_golden(shared_ref: Path, hubert_stub: HubertStub) -> None:
    golden = _load(shared_ref, "wav2feat_online.npz")
    for case in range(int(golden["n_cases"])):
        chunksize = tuple(int(c) for c in golden[f"case{case}_chunksize"])
        chunks = audio.online_chunks(golden[f"case{case}_audio"], chunksize)
        assert chunks.shape[0] == int(golden[f"case{case}_n_chunks"]), f"case {case}"
        np.testing.assert_array_equal(chunks, golden[f"case{case}_chunks"], err_msg=f"case {case}")
        features = np.stack([audio.chunk_features(chunk, hubert_stub, chunksize) for chunk in chunks])
        np.testing.assert_array_equal(features, golden[f"case{case}_chunk_feats"], err_msg=f"case {case}")


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
    assert audio.window_length((3, 5, 2)) == 6480
    assert audio.window_length((2, 4, 1)) == 4560


def test_offline_windows_start_one_sample_early_at_the_spec_frames() -> None:
    # A ramp makes every window's first value name the source sample it starts at.
    num_samples = 3235 * 640
    ramp = np.arange(num_samples, dtype=np.float32)
    windows, num_f = audio.offline_windows(ramp)
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
    windows, num_f = audio.offline_windows(np.zeros(0, np.float32))
    assert num_f == 0 and windows.shape == (0, 6480)
    assert audio.offline_features(np.zeros(0, np.float32), _ZeroHubert()).shape == (0, 1024)


def test_features_from_hubert_keeps_the_valid_rows_and_averages_pairs() -> None:
    frames = np.arange(20, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    features = audio.features_from_hubert(frames, (3, 5, 2))
    # Rows [-14, -4) = 6..15, averaged in pairs.
    np.testing.assert_array_equal(features[:, 0], [6.5, 8.5, 10.5, 12.5, 14.5])
    stacked = audio.features_from_hubert(np.stack([frames, frames + 1]), (3, 5, 2))
    assert stacked.shape == (2, 5, 3)
    np.testing.assert_array_equal(stacked[1], features + 1)
    # right = 0 keeps the last rows (the reference's [-x:-0] slice would be empty).
    np.testing.assert_array_equal(audio.features_from_hubert(frames, (0, 2, 0))[:, 0], [16.5, 18.5])
    with pytest.raises(ValueError, match="T >= 14"):
        audio.features_from_hubert(frames[:13], (3, 5, 2))


def test_online_chunks_tile_the_delayed_audio() -> None:
    for length in (1, 1279, 1280, 1281, 16000):
        samples = np.arange(1, length + 1, dtype=np.float32)
        chunks = audio.online_chunks(samples, (3, 5, 2))
        assert chunks.shape == (math.ceil((length + 1920) / 3200), 6480)
        delayed = np.concatenate([np.zeros(1920, np.float32), samples])
        # The chunks' leading 3200-sample strides, laid end to end, are the delayed audio.
        np.testing.assert_array_equal(chunks[:, :3200].ravel()[: delayed.shape[0]], delayed)
        # Each chunk runs on into the next stride, and the last one is zero-padded.
        np.testing.assert_array_equal(chunks[:-1, 3200:], chunks[1:, :3280])
        tail = delayed[3200 * (chunks.shape[0] - 1) :]
        np.testing.assert_array_equal(chunks[-1, : tail.shape[0]], tail)
        np.testing.assert_array_equal(chunks[-1, tail.shape[0] :], 0)


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
