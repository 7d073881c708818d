"""HuBERT as the audio feature extractor: the reference's `Wav2Feat` (DITTO_SPEC §4.7, §5.6).

HuBERT runs at 50 Hz on 16 kHz audio (receptive field 400 samples, hop 320), so a window of n
video frames plus 80 samples yields exactly 2n HuBERT frames, and a video frame's feature is the
mean of its two. Of a window's frames only the `valid` ones before the last `right` are kept.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ditto_fast.backends.base import Network
from ditto_fast.options import check_chunksize
from ditto_fast.stages.audio import check_audio, frame_count
from ditto_fast.stages.audio_windows import DEFAULT_CHUNKSIZE, Chunksize, offline_windows

HUBERT_DIM = 1024
HUBERT_FRAMES_PER_VIDEO_FRAME = 2


class HubertFeatures:
    """An `AudioFeatureExtractor` around a HuBERT network (input `input_values` (1, N), output
    `encoding_out` (T, 1024), no batch axis)."""

    dim = HUBERT_DIM
    # The "+80" of the reference's 6480-sample window: with 400-sample frames at hop 320, n video
    # frames of samples alone would give 2n − 1 HuBERT frames.
    window_extra_samples = 80

    def __init__(self, network: Network) -> None:
        self.network = network

    def chunk(self, window: np.ndarray, chunksize: Chunksize = DEFAULT_CHUNKSIZE) -> np.ndarray:
        """(valid, 1024) features of one window, as the reference's `Wav2Feat.__call__`."""
        window = check_audio(window)
        encoding = self.network(input_values=window.reshape(1, -1))[0]
        return features_from_hubert(encoding, chunksize)

    def offline_blocks(self, audio: np.ndarray, chunksize: Chunksize = DEFAULT_CHUNKSIZE) -> Iterator[np.ndarray]:
        """The reference's offline `wav2feat`, one window at a time: (valid, 1024) blocks, the last
        one cut at the clip's frame count, so that later stages can start before the whole clip
        is encoded."""
        remaining = frame_count(len(audio))
        for window in offline_windows(audio, chunksize, self.window_extra_samples):
            block = self.chunk(window, chunksize)[:remaining]
            remaining -= len(block)
            yield block


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
