"""Audio stage: load audio as mono 16 kHz float32, and turn it into per-video-frame HuBERT
features (1024-d, 25 fps) the way the reference's `Wav2Feat` does.

HuBERT runs at 50 Hz on 16 kHz audio, so one video frame (640 samples) gets the mean of two
HuBERT frames. The reference never runs HuBERT on the whole waveform: it cuts windows of
`left + valid + right` video frames (plus 80 samples, so that HuBERT's 400-sample receptive
field yields exactly 2 frames per video frame) and keeps only the `valid` middle frames of
each. Offline mode pads and windows the whole clip up front; online mode is fed fixed-size
chunks as they arrive. The two are deliberately different (online is 80 samples later).

Two float quirks of the reference are reproduced on purpose because they change the output:
window starts are `int((i * 0.04) * 16000)` (one sample before `640 * i` for some `i`), and
the frame count is `ceil((n / 16000) * 25)` (one more than `n / 640` for some multiples of 640).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
import numpy as np
import soxr
from numpy.lib.stride_tricks import sliding_window_view

from ditto_fast.backends.base import Network
from ditto_fast.errors import one_line

SAMPLE_RATE = 16000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
HUBERT_FRAMES_PER_VIDEO_FRAME = 2
HUBERT_DIM = 1024
# (left context, valid, right context) in video frames.
DEFAULT_CHUNKSIZE = (3, 5, 2)
# Extra samples on top of a whole number of video frames so HuBERT (receptive field 400,
# hop 320) returns exactly 2 frames per video frame.
_WINDOW_EXTRA_SAMPLES = 80

Chunksize = Sequence[int]


class AudioError(ValueError):
    """An audio file or buffer cannot be turned into 16 kHz mono samples."""


# ----------------------------------------------------------------------------- loading


def load_audio(path: str | Path) -> np.ndarray:
    """Decode any audio file FFmpeg reads into float32 mono 16 kHz samples, like
    `librosa.load(path, sr=16000)` (channel average, soxr HQ resampling)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} does not exist or is not a file")
    samples, sample_rate = _decode(path)
    if samples.shape[0] == 0:
        raise AudioError(f"audio file {path} contains no samples")
    return as_mono_16k(samples, sample_rate)


def as_mono_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """In-memory PCM (float, or signed integer scaled to [-1, 1]; shape (n,) or (n, channels))
    → float32 mono at 16 kHz, with librosa's downmix and resampling."""
    samples = np.asarray(samples)
    if samples.ndim not in (1, 2):
        raise AudioError(f"audio samples must be (n,) or (n, channels), got shape {samples.shape}")
    if not (isinstance(sample_rate, (int, np.integer)) and sample_rate > 0):
        raise AudioError(f"audio sample rate must be a positive integer, got {sample_rate!r}")
    pcm = _pcm_to_float32(samples)
    # librosa averages channels-first float32 data; for any channel count that is the same
    # float32 sum-then-divide as this.
    mono = pcm if pcm.ndim == 1 else pcm.T.mean(axis=0)
    if sample_rate == SAMPLE_RATE:
        return np.ascontiguousarray(mono)
    return _resample_to_16k(mono, int(sample_rate))


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """All samples of the first audio stream as float32 (n, channels), and the sample rate."""
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise _undecodable(path, exc) from exc
    with container:
        if not container.streams.audio:
            raise AudioError(f"audio file {path} has no audio stream")
        stream = container.streams.audio[0]
        try:
            frames = [(frame.sample_rate, _frame_samples(frame)) for frame in container.decode(stream)]
        except av.FFmpegError as exc:
            raise _undecodable(path, exc) from exc
        if not frames:
            return np.zeros((0, 1), np.float32), stream.codec_context.sample_rate
    rates = {rate for rate, _ in frames}
    channel_counts = {block.shape[1] for _, block in frames}
    if len(rates) > 1 or len(channel_counts) > 1:
        raise AudioError(
            f"audio file {path} changes sample rate or channel count mid-stream "
            f"(rates {sorted(rates)}, channels {sorted(channel_counts)})"
        )
    return np.concatenate([block for _, block in frames]), rates.pop()


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
        return samples.astype(np.float32, copy=False)
    if samples.dtype == np.uint8:
        return (samples.astype(np.float32) - np.float32(128)) / np.float32(128)
    if np.issubdtype(samples.dtype, np.signedinteger):
        full_scale = np.float32(2.0 ** (samples.dtype.itemsize * 8 - 1))
        return samples.astype(np.float32) / full_scale
    raise AudioError(f"audio samples must be float or integer PCM, got dtype {samples.dtype}")


def _resample_to_16k(mono: np.ndarray, sample_rate: int) -> np.ndarray:
    """soxr HQ resampling, then librosa's length fix: pad/trim to ceil(n * 16000 / rate)."""
    resampled = soxr.resample(mono, sample_rate, SAMPLE_RATE, quality="HQ")
    # Same float expression as librosa, so the length agrees for every n.
    target_length = int(np.ceil(mono.shape[0] * (float(SAMPLE_RATE) / sample_rate)))
    fixed = np.zeros(target_length, np.float32)
    kept = min(target_length, resampled.shape[0])
    fixed[:kept] = resampled[:kept]
    return fixed


# ------------------------------------------------------------------- window geometry


def frame_count(num_samples: int) -> int:
    """Video frames for `num_samples` of 16 kHz audio, with the reference's double rounding
    (e.g. 4480 samples = 7 frames' worth → 8)."""
    return math.ceil(num_samples / SAMPLE_RATE * FPS)


def _frames_to_samples(frames: int | np.ndarray) -> np.ndarray:
    """`int((frames * 0.04) * 16000)` in IEEE double, truncated: the reference's conversion,
    which is one sample short of `640 * frames` for some counts (1615, 3205, 3230, ...)."""
    return (np.asarray(frames, dtype=np.float64) * 0.04 * SAMPLE_RATE).astype(np.int64)


def window_length(chunksize: Chunksize = DEFAULT_CHUNKSIZE) -> int:
    """Samples per HuBERT window: 6480 for (3, 5, 2)."""
    return int(_frames_to_samples(sum(chunksize))) + _WINDOW_EXTRA_SAMPLES


def check_chunksize(chunksize: Chunksize) -> tuple[int, int, int]:
    """(left, valid, right) as ints; ValueError unless non-negative with valid >= 1."""
    if len(chunksize) != 3 or any(int(c) != c or c < 0 for c in chunksize) or chunksize[1] < 1:
        raise ValueError(f"chunksize must be (left, valid, right) non-negative ints with valid >= 1, got {chunksize!r}")
    left, valid, right = (int(c) for c in chunksize)
    return left, valid, right


def _check_audio(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise AudioError(f"audio must be 1-D mono samples, got shape {audio.shape}")
    return audio.astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- offline


def offline_windows(audio: np.ndarray, chunksize: Chunksize = DEFAULT_CHUNKSIZE) -> tuple[np.ndarray, int]:
    """All HuBERT input windows of an offline clip, computed up front so they can be batched.

    Returns (windows (n_windows, window_length) float32, num_f). Window k covers video frames
    5k .. 5k+4 (for valid = 5); the clip is zero-padded so that the first window has `left`
    frames of silence before frame 0.
    """
    _, valid, right = check_chunksize(chunksize)
    audio = _check_audio(audio)
    num_f = frame_count(audio.shape[0])
    split_len = window_length(chunksize)
    lead = split_len - int(_frames_to_samples(valid + right))
    padded = np.concatenate([np.zeros(lead, np.float32), audio, np.zeros(split_len, np.float32)])
    starts = _frames_to_samples(np.arange(0, num_f, valid))
    windows = padded[starts[:, None] + np.arange(split_len)]
    return windows, num_f


def features_from_hubert(encodings: np.ndarray, chunksize: Chunksize = DEFAULT_CHUNKSIZE) -> np.ndarray:
    """HuBERT output of one window (T, D) — or a stack (..., T, D) — → its `valid` video-frame
    features (..., valid, D): the 2·valid frames just before the last 2·right, pair-averaged."""
    _, valid, right = check_chunksize(chunksize)
    encodings = np.asarray(encodings)
    needed = (valid + right) * HUBERT_FRAMES_PER_VIDEO_FRAME
    if encodings.ndim < 2 or encodings.shape[-2] < needed:
        raise ValueError(
            f"hubert encoding_out must be (T, D) with T >= {needed} for chunksize {tuple(chunksize)}, "
            f"got shape {encodings.shape}"
        )
    frames = encodings.shape[-2]
    # Positive bounds: the reference's negative slice [-(v+r)*2 : -r*2] would be empty for r = 0.
    stop = frames - right * HUBERT_FRAMES_PER_VIDEO_FRAME
    kept = encodings[..., stop - valid * HUBERT_FRAMES_PER_VIDEO_FRAME : stop, :]
    pairs = kept.reshape(*kept.shape[:-2], valid, HUBERT_FRAMES_PER_VIDEO_FRAME, kept.shape[-1])
    return pairs.mean(axis=-2)


def offline_feature_blocks(audio: np.ndarray, hubert: Network,
                           chunksize: Chunksize = DEFAULT_CHUNKSIZE) -> Iterator[np.ndarray]:
    """The offline features window by window: (valid, D) blocks, the last one cut at the
    clip's frame count, so that later stages can start before the whole clip is encoded."""
    windows, num_f = offline_windows(audio, chunksize)
    done = 0
    for window in windows:
        block = chunk_features(window, hubert, chunksize)[:num_f - done]
        done += len(block)
        yield block


def offline_features(audio: np.ndarray, hubert: Network, chunksize: Chunksize = DEFAULT_CHUNKSIZE) -> np.ndarray:
    """(num_f, D) HuBERT features of a whole clip, as the reference's offline `wav2feat`."""
    blocks = list(offline_feature_blocks(audio, hubert, chunksize))
    return np.concatenate(blocks) if blocks else np.zeros((0, HUBERT_DIM), np.float32)


# ------------------------------------------------------------------------------ online


def online_chunks(audio: np.ndarray, chunksize: Chunksize = DEFAULT_CHUNKSIZE) -> np.ndarray:
    """The chunks the reference's online driver feeds to `run_chunk`: `left` frames of silence
    prepended, windows of `window_length` every `valid` frames, the last one zero-padded."""
    left, valid, _ = check_chunksize(chunksize)
    audio = _check_audio(audio)
    split_len = window_length(chunksize)
    stride = valid * SAMPLES_PER_FRAME
    lead = left * SAMPLES_PER_FRAME
    total = lead + audio.shape[0]
    n_chunks = -(-total // stride)
    if n_chunks == 0:
        return np.zeros((0, split_len), np.float32)
    buffer = np.zeros((n_chunks - 1) * stride + split_len, np.float32)
    buffer[lead:total] = audio
    return sliding_window_view(buffer, split_len)[::stride].copy()


def chunk_features(chunk: np.ndarray, hubert: Network, chunksize: Chunksize = DEFAULT_CHUNKSIZE) -> np.ndarray:
    """(valid, D) features of one window, as the reference's `Wav2Feat.__call__`."""
    chunk = _check_audio(chunk)
    encoding = hubert(input_values=chunk.reshape(1, -1))[0]
    return features_from_hubert(encoding, chunksize)
