"""The audio feature extractor behind the motion stages, as a protocol, so that another encoder
(WavLM, say) is one module.

LMDM is conditioned on one feature row per 25 fps video frame. An extractor turns windows cut by
the reference's rules (`audio_windows`) into those rows: offline for a whole clip, online one live
window at a time. Which encoder a set of networks provides is decided in `feature_extractor` alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

import numpy as np

from ditto_fast.backends.base import Network
from ditto_fast.stages.audio_windows import DEFAULT_CHUNKSIZE, Chunksize
from ditto_fast.stages.hubert import HubertFeatures


class AudioFeatureExtractor(Protocol):
    """16 kHz mono float32 audio → (frames, dim) float32 features, one row per video frame."""

    dim: int  # width of a feature row
    # Samples a window has on top of its video frames, so that the encoder gives every one of
    # those frames whole outputs (`audio_windows.window_length`).
    window_extra_samples: int

    def chunk(self, window: np.ndarray, chunksize: Chunksize = DEFAULT_CHUNKSIZE) -> np.ndarray:
        """(valid, dim) features of one window of `window_length(chunksize, window_extra_samples)`
        samples: its `valid` middle frames (the online path)."""
        ...

    def offline_blocks(self, audio: np.ndarray, chunksize: Chunksize = DEFAULT_CHUNKSIZE) -> Iterator[np.ndarray]:
        """A whole clip's features as the reference's offline rule gives them, in order, in blocks of
        at most `valid` rows, `audio.frame_count(len(audio))` rows in all."""
        ...


def feature_extractor(networks: Mapping[str, Network]) -> AudioFeatureExtractor:
    """The extractor the loaded networks provide: HuBERT, the only encoder with weights today."""
    return HubertFeatures(networks["hubert"])


def offline_features(extractor: AudioFeatureExtractor, audio: np.ndarray,
                     chunksize: Chunksize = DEFAULT_CHUNKSIZE) -> np.ndarray:
    """(frame_count(len(audio)), dim) features of a whole clip, as the reference's offline `wav2feat`."""
    blocks = list(extractor.offline_blocks(audio, chunksize))
    return np.concatenate(blocks) if blocks else np.zeros((0, extractor.dim), np.float32)
