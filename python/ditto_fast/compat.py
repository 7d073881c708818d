"""`StreamSDK` with the reference's call shapes, so existing Ditto scripts run unchanged.

The reference's offline script does:

    SDK = StreamSDK(cfg_pkl, data_root)
    SDK.setup(source_path, output_path, **setup_kwargs)
    SDK.setup_Nd(N_d=num_f, fade_in=..., fade_out=..., ctrl_info=...)
    aud_feat = SDK.wav2feat.wav2feat(audio)        # audio: float32 16 kHz
    SDK.audio2motion_queue.put(aud_feat)
    SDK.close()                                     # writes SDK.tmp_output_path (video only)
    # then muxes the audio itself with ffmpeg into output_path

This class does the same with ditto_fast's engine: `close()` renders everything queued into
`tmp_output_path`, video only, exactly where the reference writes it, for the script's own mux.
In online mode (the online config, or `online_mode=True` in setup) the script instead calls
`run_chunk(window, chunksize)` per audio window; `close()` then ends the stream.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ditto_fast.avatar import Avatar
from ditto_fast.backends.registry import Backend
from ditto_fast.checkpoints import CFG_DIR
from ditto_fast.engine.offline import RenderJob
from ditto_fast.engine.online import StreamSession
from ditto_fast.options import OPTION_NAMES, RenderOptions
from ditto_fast.renderer import Renderer
from ditto_fast.stages.audio_features import feature_extractor, offline_features
from ditto_fast.stages.audio_windows import DEFAULT_CHUNKSIZE
from ditto_fast.stages.register import register
from ditto_fast.stages.writer import VideoWriter, check_writable


def tree_root_for(data_root: str | Path) -> Path:
    """The checkpoint tree a reference `data_root` (e.g. `checkpoints/ditto_trt_Ampere_Plus`)
    belongs to: the folder itself when it is a tree, else its parent."""
    data_root = Path(data_root)
    return data_root if (data_root / CFG_DIR).is_dir() else data_root.parent


class _Wav2Feat:
    def __init__(self, sdk: StreamSDK) -> None:
        self._sdk = sdk

    def wav2feat(self, audio: np.ndarray, sr: int = 16000) -> np.ndarray:
        if sr != 16000:
            raise ValueError(f"wav2feat: audio must be 16 kHz here (got sr={sr}); load it with sr=16000")
        return offline_features(feature_extractor(self._sdk.renderer.networks), np.asarray(audio, np.float32))


class _FeatureQueue:
    """The reference's audio2motion queue, offline use: one `put` of all features."""

    def __init__(self) -> None:
        self.features: list[np.ndarray] = []

    def put(self, item: np.ndarray | None) -> None:
        if item is not None:
            self.features.append(np.asarray(item, np.float32))


class StreamSDK:
    def __init__(self, cfg_pkl: str | Path, data_root: str | Path, backend: Backend = "auto",
                 **cfg_overrides: Any) -> None:
        """`cfg_overrides`: the reference's `StreamSDK(**kwargs)`, written into the config's
        sections (e.g. `default_kwargs={"overlap_v2": 10}`)."""
        self.renderer = Renderer(tree_root_for(data_root), backend=backend, cfg=cfg_pkl,
                                 cfg_overrides=cfg_overrides)
        self.default_kwargs = self.renderer.default_kwargs
        self.wav2feat = _Wav2Feat(self)
        self.audio2motion_queue = _FeatureQueue()
        self.avatar: Avatar | None = None

    @property
    def online_mode(self) -> bool:
        return bool(self.options.online_mode) if self.avatar is not None else False

    def setup(self, source_path: str | Path, output_path: str | Path, **kwargs: Any) -> None:
        self.output_path = Path(output_path)
        self.tmp_output_path = check_writable(f"{output_path}.tmp.mp4")
        unknown = sorted(set(kwargs) - set(OPTION_NAMES))
        if unknown:  # the reference reads the keys it knows and ignores the rest
            warnings.warn(f"StreamSDK.setup ignores unknown options {unknown}", stacklevel=2)
        self.options: RenderOptions = self.renderer.options(
            **{k: v for k, v in kwargs.items() if k in OPTION_NAMES})
        self.avatar = register(source_path, self.renderer.networks, self.options)
        self.audio2motion_queue = _FeatureQueue()
        self._stream: StreamSession | None = None
        self._stream_writer: threading.Thread | None = None

    def run_chunk(self, audio_chunk: np.ndarray, chunksize: tuple[int, int, int] = DEFAULT_CHUNKSIZE) -> None:
        """Online mode: one audio window as the reference script cuts it (past context included)."""
        if self.avatar is None:
            raise RuntimeError("StreamSDK.run_chunk() before setup()")
        if self._stream is None:
            self._stream = StreamSession(self.renderer.networks, self.avatar,
                                         self.options, tuple(chunksize))
            self._stream_writer = threading.Thread(
                target=self._stream.write_mp4, args=(self.tmp_output_path,), name="ditto-fast-sdk-writer")
            self._stream_writer.start()
        self._stream.push_window(audio_chunk)

    def setup_Nd(self, N_d: int, fade_in: int = -1, fade_out: int = -1,  # noqa: N802 - reference name
                 ctrl_info: dict | None = None) -> None:
        # As in the reference, this replaces any ctrl_info given to setup().
        self.options = self.options.replace(N_d=N_d, fade_in=fade_in, fade_out=fade_out,
                                            ctrl_info=ctrl_info if ctrl_info is not None else {})

    def close(self) -> Path:
        """Render what was queued into `tmp_output_path` (video only, like the reference)."""
        if self.avatar is None:
            raise RuntimeError("StreamSDK.close() before setup()")
        if self._stream is not None:  # online: end the stream and let the writer finish
            self._stream.end(flush=False)
            self._stream_writer.join()
            self._stream.close()
            return self.tmp_output_path
        if not self.audio2motion_queue.features:
            raise RuntimeError("StreamSDK.close(): no audio features were queued")
        features = np.concatenate(self.audio2motion_queue.features)
        job = RenderJob(self.renderer.networks, self.avatar, self.options, features=features)
        height, width = job.info.frame_size
        with VideoWriter(self.tmp_output_path, width, height) as writer:
            for frame in job:
                writer.write(frame.rgb)
        return self.tmp_output_path
