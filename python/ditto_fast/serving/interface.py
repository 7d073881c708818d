"""What the network service needs from a session engine (`serving.engine.SessionEngine`), as
structural types: the app takes any object with these methods, so tests plug in a fake one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class EngineBusy(RuntimeError):
    """The engine holds its limit of sessions: try later or elsewhere. Defined here, with the
    interface, so that the service and any engine (the real one, a test's fake) share the class."""


class LiveFrameLike(Protocol):
    index: int
    pts: float  # index / 25, on the session's audio clock
    rgb: np.ndarray  # (H, W, 3) uint8, the receiver's own copy
    audio: np.ndarray  # (640,) float32 at 16 kHz: this frame's slice of the audio timeline


class LiveSessionLike(Protocol):
    id: str
    frame_size: tuple[int, int]  # (H, W)

    def push(self, pcm: np.ndarray, sample_rate: int = 16000) -> None: ...
    def interrupt(self) -> None: ...
    def set_controls(self, **controls: Any) -> None: ...
    def end(self) -> None: ...
    def frames(self, timeout: float | None = None) -> Iterator[LiveFrameLike]: ...
    def stats_dict(self) -> dict: ...
    def close(self) -> None: ...


class EngineLike(Protocol):
    max_sessions: int
    renderer: Any  # a ditto_fast.Renderer: POST /v1/render uses its render_to_file

    def add_avatar(self, source: str | Path, **options: Any) -> str: ...
    def has_avatar(self, avatar_id: str) -> bool: ...
    def open(self, avatar_id: str, *, chunksize: tuple[int, int, int] = (3, 5, 2),
             **options: Any) -> LiveSessionLike: ...
    def metrics(self) -> dict: ...
    def close(self) -> None: ...
