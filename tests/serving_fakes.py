"""A fake session engine with `serving.engine.SessionEngine`'s interface, for the service's tests
(in-process and in a server subprocess): one solid-colour frame per 640 samples pushed (16 kHz),
the frame's audio slice attached, no networks.

Its frame queue is bounded like the real engine's: when the consumer falls behind, the oldest
frame is dropped and counted, so a test can see the back-pressure reach the engine."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from ditto_fast.serving.interface import EngineBusy

SAMPLES_PER_FRAME = 640
CONTROLS = {"emo", "delta_pitch"}
OPTIONS = {"emo", "seed", "sampling_timesteps"}


class NoFaceError(ValueError):
    pass


class LiveFrame(NamedTuple):
    index: int
    pts: float
    rgb: np.ndarray
    audio: np.ndarray


class FakeSession:
    def __init__(self, engine: FakeEngine, session_id: str, frame_size: tuple[int, int], queue_frames: int) -> None:
        self.engine, self.id, self.frame_size = engine, session_id, frame_size
        self._queue: deque[LiveFrame] = deque()
        self._queue_frames = queue_frames
        self._pending = np.zeros(0, np.float32)
        self._cond = threading.Condition()
        self._next_index = 0
        self._ended = self._closed = False
        self._first_push: float | None = None
        self.first_frame_latency: float | None = None
        self.frames_emitted = self.dropped = self.interrupts = 0
        self.audio_seconds = 0.0
        self.controls: dict = {}

    def push(self, pcm: np.ndarray, sample_rate: int = 16000) -> None:
        pcm = np.asarray(pcm)
        if pcm.ndim != 1 or pcm.dtype not in (np.float32, np.int16):
            raise ValueError(f"pcm must be float32 or int16 mono, got {pcm.dtype} {pcm.shape}")
        samples = pcm.astype(np.float32) / 32768.0 if pcm.dtype == np.int16 else pcm
        if sample_rate != 16000:  # nearest-sample resampling is enough for a fake
            positions = np.arange(int(len(samples) * 16000 / sample_rate)) * sample_rate // 16000
            samples = samples[positions]
        with self._cond:
            if self._ended or self._closed:
                raise ValueError("push() after end() or close()")
            if self._first_push is None:
                self._first_push = time.perf_counter()
            self.audio_seconds += len(samples) / 16000
            self._pending = np.concatenate((self._pending, samples))
            while len(self._pending) >= SAMPLES_PER_FRAME:
                self._emit(self._pending[:SAMPLES_PER_FRAME])
                self._pending = self._pending[SAMPLES_PER_FRAME:]

    def _emit(self, audio: np.ndarray) -> None:
        index = self._next_index
        self._next_index += 1
        colour = (index * 7 % 256, 128, 255 - index * 3 % 256)
        rgb = np.empty((*self.frame_size, 3), np.uint8)
        rgb[:] = colour
        if len(self._queue) >= self._queue_frames:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(LiveFrame(index, index / 25, rgb, audio.astype(np.float32)))
        self.frames_emitted += 1
        if self.first_frame_latency is None:
            self.first_frame_latency = time.perf_counter() - self._first_push
        self.engine.frames_rendered += 1
        self._cond.notify_all()

    def interrupt(self) -> None:
        with self._cond:
            self._pending = np.zeros(0, np.float32)
            self.interrupts += 1

    def set_controls(self, **controls) -> None:
        unknown = set(controls) - CONTROLS
        if unknown:
            raise ValueError(f"unknown control {sorted(unknown)[0]!r}")
        self.controls.update(controls)

    def end(self) -> None:
        with self._cond:
            if len(self._pending):
                self._emit(np.pad(self._pending, (0, SAMPLES_PER_FRAME - len(self._pending))))
                self._pending = np.zeros(0, np.float32)
            self._ended = True
            self._cond.notify_all()

    def frames(self, timeout: float | None = None):
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: self._queue or self._ended or self._closed, timeout):
                    raise TimeoutError(f"no frame within {timeout} s")
                if self._closed or not self._queue:
                    return
                frame = self._queue.popleft()
            yield frame

    def stats_dict(self) -> dict:
        return {"first_frame_latency_s": self.first_frame_latency, "real_time_factor": 0.01,
                "frames_emitted": self.frames_emitted, "late_frames": 0, "dropped_frames": self.dropped,
                "idle_frames": 0, "audio_seconds": self.audio_seconds}

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self.engine._release(self)


class FakeRenderer:
    """`render_to_file` writes a few recognisable bytes, and records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def render_to_file(self, source, audio, out, *, preset=None, **options):
        if not Path(audio).is_file() or not Path(source).is_file():
            raise FileNotFoundError("render_to_file: missing input")
        if cv2.imread(str(source)) is None:
            raise NoFaceError(f"{source}: no face found")
        self.calls.append((Path(source), Path(audio), preset, options))
        Path(out).write_bytes(b"fake-mp4:" + Path(audio).read_bytes()[:16])


class FakeEngine:
    """Admission, avatars by content hash, and metrics as SessionEngine has them."""

    def __init__(self, max_sessions: int = 4, frame_size: tuple[int, int] = (64, 48), queue_frames: int = 250) -> None:
        self.max_sessions, self.frame_size, self.queue_frames = max_sessions, frame_size, queue_frames
        self.renderer = FakeRenderer()
        self.avatars: dict[str, tuple[int, int]] = {}
        self.sessions: dict[str, FakeSession] = {}
        self.opened: list[FakeSession] = []
        self.frames_rendered = 0
        self._lock = threading.Lock()
        self.closed = False

    def add_avatar(self, source, **options) -> str:
        unknown = set(options) - {"crop_scale"}
        if unknown:
            raise ValueError(f"unknown option {sorted(unknown)[0]!r}")
        data = Path(source).read_bytes()
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise NoFaceError(f"{Path(source).name}: no face found")
        avatar_id = hashlib.sha256(data).hexdigest()[:16]
        self.avatars[avatar_id] = image.shape[:2]
        return avatar_id

    def has_avatar(self, avatar_id: str) -> bool:
        return avatar_id in self.avatars

    def open(self, avatar_id: str, *, chunksize=(3, 5, 2), **options) -> FakeSession:
        if avatar_id not in self.avatars:
            raise ValueError(f"unknown avatar id {avatar_id!r}")
        unknown = set(options) - OPTIONS
        if unknown:
            raise ValueError(f"unknown option {sorted(unknown)[0]!r}")
        with self._lock:
            if len(self.sessions) >= self.max_sessions:
                raise EngineBusy(f"busy: {len(self.sessions)} of {self.max_sessions} sessions open")
            session = FakeSession(self, f"s{len(self.opened)}", self.frame_size, self.queue_frames)
            self.sessions[session.id] = session
            self.opened.append(session)
        return session

    def _release(self, session: FakeSession) -> None:
        with self._lock:
            self.sessions.pop(session.id, None)

    def metrics(self) -> dict:
        with self._lock:
            sessions = list(self.opened)
        latencies = [s.first_frame_latency for s in sessions if s.first_frame_latency is not None]
        return {"sessions_open": len(self.sessions), "frames_rendered_total": self.frames_rendered,
                "late_frames_total": 0, "dropped_frames_total": sum(s.dropped for s in sessions),
                "first_frame_latencies_s": latencies, "queued_windows": 0, "frames_per_second": 12.5}

    def close(self) -> None:
        self.closed = True
        for session in list(self.sessions.values()):
            session.close()


def portrait_png(size: int = 32) -> bytes:
    """A small PNG the fake engine accepts as a portrait."""
    image = np.full((size, size, 3), 200, np.uint8)
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()
