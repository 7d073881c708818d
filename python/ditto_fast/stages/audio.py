"""Audio stage: load audio as mono 16 kHz float32 the way the reference does (librosa), and the
reference's rule for how many 25 fps video frames a clip of audio drives.

One video frame is 640 samples, but the frame count is `ceil((n / 16000) * 25)` in double,
which is one more than `n / 640` for some multiples of 640; the reference hands that count to
every later stage, so it is reproduced on purpose. Cutting the audio into feature-encoder
windows is `audio_windows`; the features themselves come from an `audio_features` extractor.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

import av
import numpy as np
import soxr

from ditto_fast.errors import one_line

SAMPLE_RATE = 16000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640


class AudioError(ValueError):
    """An audio file or buffer cannot be turned into 16 kHz mono samples."""


# ----------------------------------------------------------------------------- loading


def load_audio(path: str | Path) -> np.ndarray:
    """Decode any audio file FFmpeg reads into float32 mono 16 kHz samples, like
    `librosa.load(path, sr=16000)` (channel average, soxr HQ resampling)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file {path} is empty (0 bytes)")
    return _decode_mono_16k(path)


def as_mono_16k(samples: np.ndarray, sample_rate: int, what: str = "audio samples") -> np.ndarray:
    """In-memory PCM (float, or signed integer scaled to [-1, 1]; shape (n,) or (n, channels))
    → float32 mono at 16 kHz, with librosa's downmix and resampling. NaN or infinite samples are
    refused (`what` names them in the error): they would turn every later stage's output into NaN."""
    samples = np.asarray(samples)
    if samples.ndim not in (1, 2):
        raise AudioError(f"audio samples must be (n,) or (n, channels), got shape {samples.shape}")
    check_sample_rate(sample_rate)
    pcm = check_finite(_pcm_to_float32(samples), what)
    # librosa averages channels-first float32 data; for any channel count that is the same
    # float32 sum-then-divide as this.
    mono = pcm if pcm.ndim == 1 else pcm.T.mean(axis=0)
    if sample_rate == SAMPLE_RATE:
        return np.ascontiguousarray(mono)
    return _resample_to_16k(mono, int(sample_rate))


def _decode_mono_16k(path: Path) -> np.ndarray:
    """The first audio stream as float32 mono 16 kHz, as `as_mono_16k` makes it, decoded and
    resampled block by block: only the 16 kHz result is held, never the file's samples at their
    own rate and channel count (a streaming soxr gives the one-shot call's output bit for bit,
    and the per-sample downmix does not depend on the block)."""
    what = f"audio file {path}"
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise _undecodable(path, exc) from exc
    with container:
        if not container.streams.audio:
            raise AudioError(f"{what} has no audio stream")
        stream = container.streams.audio[0]
        layout: tuple[int, int] | None = None  # (rate, channels) of the first frame
        resampler = None
        output = _GrowingSamples(_expected_samples(container, stream))
        received = 0
        try:
            for frame in container.decode(stream):
                block = check_finite(_frame_samples(frame), what)
                if layout is None:
                    layout = (frame.sample_rate, block.shape[1])
                    check_sample_rate(layout[0])
                    if layout[0] != SAMPLE_RATE:
                        resampler = soxr.ResampleStream(layout[0], SAMPLE_RATE, 1, dtype="float32", quality="HQ")
                elif (frame.sample_rate, block.shape[1]) != layout:
                    raise AudioError(f"{what} changes sample rate or channel count mid-stream (from {layout[0]} Hz, "
                                     f"{layout[1]} channels to {frame.sample_rate} Hz, {block.shape[1]})")
                mono = block.T.mean(axis=0)  # librosa's downmix, sample by sample
                received += len(mono)
                output.append(mono if resampler is None else resampler.resample_chunk(mono))
        except av.FFmpegError as exc:
            raise _undecodable(path, exc) from exc
    if received == 0:
        raise AudioError(f"{what} contains no samples")
    if resampler is None:
        return output.samples()
    output.append(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    return output.samples(_resampled_length(received, layout[0]))


def _expected_samples(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> int:
    """16 kHz samples the stream should decode to, from its header (0 when it does not say)."""
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / av.time_base
    else:
        return 0
    return max(0, math.ceil(seconds * SAMPLE_RATE)) + SAMPLE_RATE // 10  # a little slack for rounding


class _GrowingSamples:
    """float32 samples appended block by block into one buffer sized from the header's duration,
    so that decoding holds the samples about once (a list of blocks and their concatenation would
    hold them twice); it grows by a quarter when the header was short."""

    def __init__(self, expected: int) -> None:
        self._buffer = np.empty(max(expected, SAMPLE_RATE), np.float32)
        self._used = 0

    def append(self, block: np.ndarray) -> None:
        end = self._used + len(block)
        if end > len(self._buffer):
            grown = np.empty(max(end, len(self._buffer) + len(self._buffer) // 4), np.float32)
            grown[:self._used] = self._buffer[:self._used]
            self._buffer = grown
        self._buffer[self._used:end] = block
        self._used = end

    def samples(self, length: int | None = None) -> np.ndarray:
        """The samples appended, cut or zero-padded to `length` (librosa's length fix) when given:
        a view when the buffer is nearly full, else a right-sized copy."""
        length = self._used if length is None else length
        if length > self._used:
            self.append(np.zeros(length - self._used, np.float32))
        if length >= len(self._buffer) - SAMPLE_RATE:
            return self._buffer[:length]
        return self._buffer[:length].copy()


def _undecodable(path: Path, exc: av.FFmpegError) -> AudioError:
    # FFmpeg's message embeds the errno and the file name again; its strerror is the useful part.
    return AudioError(f"cannot decode audio file {path}: {exc.strerror or one_line(exc)}")


def _frame_samples(frame: av.AudioFrame) -> np.ndarray:
    """One decoded frame as float32 (n, channels)."""
    data = frame.to_ndarray()
    channels = frame.layout.nb_channels
    # Planar frames come as (channels, n); packed ones as (1, n * channels), interleaved.
    interleaved = data.T if frame.format.is_planar else data.reshape(-1, channels)
    return _pcm_to_float32(interleaved)


def _pcm_to_float32(samples: np.ndarray) -> np.ndarray:
    """Float PCM cast to float32; integer PCM scaled by a power of two (exact, as libsndfile)."""
    if np.issubdtype(samples.dtype, np.floating):
        with np.errstate(over="ignore"):  # beyond float32's range: inf, which check_finite refuses
            return samples.astype(np.float32, copy=False)
    if samples.dtype == np.uint8:
        return (samples.astype(np.float32) - np.float32(128)) / np.float32(128)
    if np.issubdtype(samples.dtype, np.signedinteger):
        full_scale = np.float32(2.0 ** (samples.dtype.itemsize * 8 - 1))
        return samples.astype(np.float32) / full_scale
    raise AudioError(f"audio samples must be float or integer PCM, got dtype {samples.dtype}")


def _resample_to_16k(mono: np.ndarray, sample_rate: int) -> np.ndarray:
    """soxr HQ resampling, then librosa's length fix: pad/trim to `_resampled_length`."""
    resampled = soxr.resample(mono, sample_rate, SAMPLE_RATE, quality="HQ")
    target_length = _resampled_length(mono.shape[0], sample_rate)
    fixed = np.zeros(target_length, np.float32)
    kept = min(target_length, resampled.shape[0])
    fixed[:kept] = resampled[:kept]
    return fixed


def _resampled_length(input_samples: int, sample_rate: int) -> int:
    """librosa's length of `input_samples` at `sample_rate` resampled to 16 kHz: ceil(n · 16000 /
    rate), in its float expression, so that the length agrees for every n."""
    return int(np.ceil(input_samples * (float(SAMPLE_RATE) / sample_rate)))


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Float samples in [-1, 1] (clipped) as a 16-bit mono wav file."""
    path = Path(path)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return path


def check_sample_rate(sample_rate: int) -> int:
    """`sample_rate` unchanged, or AudioError when it is not a positive integer (no bool)."""
    if isinstance(sample_rate, bool) or not (isinstance(sample_rate, (int, np.integer)) and sample_rate > 0):
        raise AudioError(f"audio sample rate must be a positive integer, got {sample_rate!r}")
    return sample_rate


def check_finite(samples: np.ndarray, what: str = "audio samples") -> np.ndarray:
    """`samples` unchanged, or AudioError when one is NaN or infinite."""
    if not np.isfinite(samples).all():
        raise AudioError(f"{what}: NaN or infinite values (samples must be finite)")
    return samples


def check_audio(audio: np.ndarray) -> np.ndarray:
    """1-D samples as float32 (no copy when they already are); AudioError otherwise."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise AudioError(f"audio must be 1-D mono samples, got shape {audio.shape}")
    return audio.astype(np.float32, copy=False)


# ------------------------------------------------------------------------- frame count


def frame_count(num_samples: int) -> int:
    """Video frames for `num_samples` of 16 kHz audio, with the reference's double rounding
    (e.g. 4480 samples = 7 frames' worth → 8)."""
    return math.ceil(num_samples / SAMPLE_RATE * FPS)
