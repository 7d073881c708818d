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
The online call `run_chunk` arrives with streaming support.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ditto_fast.checkpoints import CFG_DIR
from ditto_fast.engine.offline import RenderJob
from ditto_fast.networks import Backend
from ditto_fast.options import OPTION_NAMES, RenderOptions
from ditto_fast.renderer import Renderer
from ditto_fast.stages.audio import offline_features
from ditto_fast.stages.avatar import Avatar
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
        return offline_features(np.asarray(audio, np.float32), self._sdk.renderer.networks["hubert"])


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

    def setup_Nd(self, N_d: int, fade_in: int = -1, fade_out: int = -1,  # noqa: N802 - reference name
                 ctrl_info: dict | None = None) -> None:
        # As in the reference, this replaces any ctrl_info given to setup().
        self.options = self.options.replace(N_d=N_d, fade_in=fade_in, fade_out=fade_out,
                                            ctrl_info=ctrl_info if ctrl_info is not None else {})

    def close(self) -> Path:
        """Render what was queued into `tmp_output_path` (video only, like the reference)."""
        if self.avatar is None:
            raise RuntimeError("StreamSDK.close() before setup()")
        if not self.audio2motion_queue.features:
            raise RuntimeError("StreamSDK.close(): no audio features were queued")
        features = np.concatenate(self.audio2motion_queue.features)
        job = RenderJob(self.renderer.networks, self.avatar, self.options, features=features)
        height, width = job.info.frame_size
        with VideoWriter(self.tmp_output_path, width, height) as writer:
            for frame in job:
                writer.write(frame.rgb)
        return self.tmp_output_path
