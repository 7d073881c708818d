"""The public API: `Renderer` registers portraits and renders speech into talking-head video.

    from ditto_fast import Renderer
    r = Renderer("checkpoints/synthetic-tiny")
    avatar = r.register("portrait.jpg")
    r.render_to_file(avatar, "speech.wav", "out.mp4", emo=4, seed=0)

Thread safety: one Renderer may be shared by threads; its networks load once. Each `render()`
job runs its own producer thread and must be iterated by one consumer.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ditto_fast.avatar import Avatar
from ditto_fast.backends.registry import Backend, NetworkSet
from ditto_fast.checkpoints import default_tree, find_tree
from ditto_fast.config import load_config
from ditto_fast.engine.offline import RenderInfo, RenderJob
from ditto_fast.engine.online import DEFAULT_CHUNKSIZE, StreamSession
from ditto_fast.options import RenderOptions, resolve_options
from ditto_fast.runtime.threads import resolve_threads
from ditto_fast.stages.audio import SAMPLE_RATE, AudioError, check_finite, load_audio, write_wav
from ditto_fast.stages.register import register
from ditto_fast.stages.writer import VideoWriter, check_writable, check_x264_options, resolve_encoder

Source = Avatar | str | Path
Audio = str | Path | np.ndarray  # a file, or float32 mono samples at 16 kHz


@dataclass(frozen=True)
class RenderResult:
    path: Path
    frames: int
    seconds: float  # wall-clock time of the whole render
    info: RenderInfo

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        return f"{self.path}: {self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} frames/s)"


class Renderer:
    """Loads a checkpoint tree once; registers sources and renders audio with them."""

    def __init__(self, checkpoints: str | Path | None = None, backend: Backend = "auto",
                 device: str = "cpu", cfg: str | Path | None = None,
                 cfg_overrides: Mapping[str, Mapping[str, Any]] | None = None, frame_batch: int = 1,
                 threads: int | None = None) -> None:
        """`cfg`: a config pickle whose `default_kwargs` replace the tree's (the reference's
        `cfg_pkl`); `cfg_overrides`: entries written into its sections, as the reference's
        `StreamSDK(**kwargs)`. Model files always come from the tree. `frame_batch`: frames per
        warp/decoder call, offline and live (pipeline/frames.py; capped at what the network files
        take: the official ONNX files take one); with the torch backend frames stay on the device
        from warp to paste-back (CUDA graphs on a GPU). `threads`: the thread budget of
        onnxruntime, the CPU paste-back and the encoder (runtime/threads.py; None: the cores this
        process may use, and x264's own choice)."""
        if frame_batch < 1:
            raise ValueError(f"frame_batch must be at least 1, got {frame_batch}")
        self.threads = resolve_threads(threads)  # checked before any work
        self._encoder_threads = threads
        # None: the shipped synthetic-tiny tree, wherever the current directory is; a relative
        # path the caller gives is relative to it, as any path.
        self.checkpoints = default_tree() if checkpoints is None else Path(checkpoints)
        tree = find_tree(self.checkpoints)
        self.networks = NetworkSet(tree, backend, device, threads=self.threads)
        self.frame_batch = frame_batch
        self.synthetic = tree.synthetic
        if cfg is None and not cfg_overrides:
            config = self.networks.config
        else:
            config = load_config(cfg or self.networks.config.path, tree.root, cfg_overrides)
        self.default_kwargs = config.default_kwargs

    @property
    def backend(self) -> str:
        return self.networks.backend

    def options(self, preset: str | None = None, **overrides: Any) -> RenderOptions:
        """Resolved options: `overrides` over the preset over the config's defaults."""
        return resolve_options(overrides, self.default_kwargs, preset)

    def online_options(self, preset: str | None = None, **overrides: Any) -> RenderOptions:
        """Resolved options of a live stream: `overrides` over the preset over the online config's
        defaults, in online mode."""
        return resolve_options({**overrides, "online_mode": True}, self.online_defaults, preset)

    def register(self, source: str | Path, **options: Any) -> Avatar:
        """Detect, crop and encode a portrait (or every frame of a video) once."""
        return register(source, self.networks, self.options(**options))

    def render(self, source: Source, audio: Audio, *, preset: str | None = None, **options: Any) -> RenderJob:
        """A lazy render of `audio` spoken by `source`; iterate it for frames (see RenderJob)."""
        resolved = self.options(preset, **options)
        avatar = source if isinstance(source, Avatar) else register(source, self.networks, resolved)
        return RenderJob(self.networks, avatar, resolved, audio=_samples(audio), frame_batch=self.frame_batch,
                         paste_threads=self.threads)

    def stream(self, source: Source, *, chunksize: tuple[int, int, int] = DEFAULT_CHUNKSIZE,
               preset: str | None = None, end_with_audio: bool = True, **options: Any) -> StreamSession:
        """A live stream: `push()` audio, take `frames()` as soon as they exist, `end()`.

        Defaults come from the tree's online config (online_mode, overlap); see StreamSession
        for back-pressure, `interrupt()` and `stats`. The stream ends with its audio
        (ceil(seconds × 25) frames); `end_with_audio=False` keeps the reference's online length,
        which runs on a little past the audio."""
        resolved = self.online_options(preset, **options)
        avatar = source if isinstance(source, Avatar) else register(source, self.networks, resolved)
        return StreamSession(self.networks, avatar, resolved, chunksize, frame_batch=self.frame_batch,
                             paste_threads=self.threads, encoder_threads=self._encoder_threads,
                             end_with_audio=end_with_audio)

    @cached_property
    def online_defaults(self) -> dict[str, Any]:
        """The online config's default_kwargs (the offline ones when the tree has none), read
        once per Renderer."""
        try:
            return self.networks.tree.load_config("online").default_kwargs
        except FileNotFoundError:
            return self.default_kwargs

    def render_to_file(self, source: Source, audio: Audio, out: str | Path, *, preset: str | None = None,
                       progress: Callable[[int, int], None] | None = None, crf: int | None = None,
                       x264_preset: str | None = None, encoder: str = "auto", **options: Any) -> RenderResult:
        """Render into an mp4 (H.264 + the input audio as AAC). The file appears only when the
        render finished: on any error or interruption nothing is left at `out`. `crf` and
        `x264_preset` are the encoder's (None: the writer's defaults), `encoder` "auto" (NVENC when
        the driver offers it, else libx264), "libx264" or "h264_nvenc"; see stages/writer.py."""
        out = check_writable(out, inputs=tuple(x for x in (source, audio) if isinstance(x, (str, Path))))  # first
        crf, x264_preset = check_x264_options(crf, x264_preset)
        encoder = resolve_encoder(encoder)
        started = time.perf_counter()
        job = self.render(source, audio, preset=preset, **options)
        if progress is not None:
            progress(0, job.info.num_frames)  # before the audio features and the first clip's motion
        height, width = job.info.frame_size
        in_memory = isinstance(audio, np.ndarray)  # muxed from a wav written for it, in a folder of its own
        with tempfile.TemporaryDirectory(prefix="ditto_fast_") if in_memory else contextlib.nullcontext() as scratch:
            audio_path = write_wav(Path(scratch) / "a.wav", audio) if in_memory else audio
            with VideoWriter(out, width, height, audio_path=audio_path, crf=crf, preset=x264_preset,
                             threads=self._encoder_threads,
                             encoder=encoder) as writer:
                for frame in job:
                    writer.write(frame.rgb)
                    if progress is not None:
                        progress(frame.index + 1, job.info.num_frames)
        return RenderResult(out, writer.frames, time.perf_counter() - started, job.info)


def _samples(audio: Audio) -> np.ndarray:
    if isinstance(audio, np.ndarray):
        if audio.ndim != 1 or audio.dtype != np.float32:
            raise AudioError(f"audio arrays must be float32 mono at {SAMPLE_RATE} Hz, got {audio.dtype} "
                             f"{audio.shape}")
        if audio.size == 0:
            raise AudioError("the audio array contains no samples")
        return check_finite(audio, "the audio array's samples")
    return load_audio(audio)
