"""How the reference cuts 16 kHz audio into feature-encoder windows (DITTO_SPEC §5.6).

The encoder never sees the whole waveform: it gets windows of `left + valid + right` video
frames (`chunksize`), plus the few samples the encoder needs to return whole frames for all of
them, and only the `valid` middle frames of each window are kept. The offline and online rules
place the windows differently, on purpose: online windows start 80 samples later.

* Offline: the whole clip is known. Window k starts at video frame `k·valid`, `left` frames of
  silence (and the encoder's extra samples) before frame 0; the clip is zero-padded at both ends.
  Window starts carry the reference's float quirk: `int((i * 0.04) * 16000)`, one sample before
  `640 * i` for some `i` (1615, 3205, 3230, ...).
* Online: audio arrives in pieces. The stream starts with `left` frames of silence; a window
  starts every `valid · 640` samples (plain integers, no quirk) and is handed on once complete;
  at the end of the stream every start before the end of the audio gets a zero-padded window.

Both build one window at a time, so memory stays that of the audio itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from ditto_fast.options import check_chunksize
from ditto_fast.stages.audio import SAMPLE_RATE, SAMPLES_PER_FRAME, check_audio, frame_count

# (left context, valid, right context) in video frames.
DEFAULT_CHUNKSIZE = (3, 5, 2)

Chunksize = Sequence[int]


def frames_to_samples(frames: int) -> int:
    """`int((frames * 0.04) * 16000)` in IEEE double, truncated: the reference's conversion,
    which is one sample short of `640 * frames` for some counts (1615, 3205, 3230, ...)."""
    return int(frames * 0.04 * SAMPLE_RATE)


def window_length(chunksize: Chunksize, extra_samples: int) -> int:
    """Samples per window: the chunk's frames plus the encoder's `extra_samples`
    (6480 for (3, 5, 2) and HuBERT's 80)."""
    return frames_to_samples(sum(check_chunksize(chunksize))) + extra_samples


def offline_windows(audio: np.ndarray, chunksize: Chunksize, extra_samples: int) -> Iterator[np.ndarray]:
    """The offline clip's windows in order, each a fresh (window_length,) float32 array.

    There are ceil(frame_count / valid) of them; window k covers video frames k·valid ..
    k·valid + valid − 1 of the clip's `frame_count(len(audio))` frames.
    """
    _, valid, right = check_chunksize(chunksize)
    audio = check_audio(audio)
    length = window_length(chunksize, extra_samples)
    # Zeros in front of sample 0: 2000 for (3, 5, 2) and HuBERT.
    lead = length - frames_to_samples(valid + right)
    for first_frame in range(0, frame_count(audio.shape[0]), valid):
        start = frames_to_samples(first_frame) - lead  # in the clip's samples; negative in the lead
        window = np.zeros(length, np.float32)
        piece = audio[max(start, 0):start + length]
        offset = max(-start, 0)
        window[offset:offset + piece.shape[0]] = piece
        yield window


class LiveWindows:
    """The online rule as a live cutter: `push` samples as they arrive and get the windows they
    complete; `flush` at the end of the stream for the zero-padded last ones.

    Holds at most one window's worth of samples (plus the last push). Not thread-safe: the
    caller serialises `push`, `flush` and `reset`.
    """

    def __init__(self, chunksize: Chunksize, extra_samples: int) -> None:
        left, valid, _ = check_chunksize(chunksize)
        self.window_length = window_length(chunksize, extra_samples)
        self.stride = valid * SAMPLES_PER_FRAME  # samples between window starts
        if self.window_length < self.stride:
            # The stride would skip audio that no window covers.
            raise ValueError(f"LiveWindows: a window of {self.window_length} samples is shorter than its "
                             f"stride of {self.stride} samples")
        self._lead = left * SAMPLES_PER_FRAME
        self.reset()

    def reset(self) -> None:
        """Back to the start of a stream: the `left` frames of leading silence, no audio."""
        # Samples from the next window's start on.
        self._buffer = np.zeros(self._lead, np.float32)

    def push(self, samples: np.ndarray) -> list[np.ndarray]:
        """Add 16 kHz mono samples; returns the windows they complete, each a fresh array."""
        self._buffer = np.concatenate([self._buffer, check_audio(samples)])
        windows = []
        while self._buffer.shape[0] >= self.window_length:
            windows.append(self._buffer[:self.window_length].copy())
            self._buffer = self._buffer[self.stride:]
        return windows

    def flush(self) -> list[np.ndarray]:
        """End of stream: a window at every remaining start before the end of the audio, zero-padded
        past it (the leading silence counts as audio). Then the cutter is `reset`."""
        windows = []
        for start in range(0, self._buffer.shape[0], self.stride):
            window = np.zeros(self.window_length, np.float32)
            piece = self._buffer[start:start + self.window_length]
            window[:piece.shape[0]] = piece
            windows.append(window)
        self.reset()
        return windows
