"""The figures of a live stream (a StreamSession, or a session of the engine): latency,
throughput, late and dropped frames. The motion side (engine/live_motion.py) writes the audio
and motion figures, the frames side the rest.

Timing: each frame is due on a player's clock that starts with the first frame, at 25 fps; a
frame made more than half a frame after that is counted late (a pause in the audio shows as
late frames, as it would as a freeze in a player). Frames made but never taken (the stream
closed first) count as dropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ditto_fast.stages.audio import FPS
from ditto_fast.stages.audio_windows import DEFAULT_CHUNKSIZE

LATE_MARGIN_S = 0.5 / FPS  # a frame is late when it misses its due time by more than half a frame


@dataclass
class StreamStats:
    """Latency and throughput of a stream, in seconds of wall time. `as_dict()` is what
    `ditto-fast stream --stats-json` writes."""

    chunksize: tuple[int, int, int] = DEFAULT_CHUNKSIZE
    overlap_v2: int = 0
    first_frame_latency: float | None = None  # clock start (first push; a session's open) → first frame ready
    chunk_latencies: list[float] = field(default_factory=list)  # window complete → its frames ready
    frames_emitted: int = 0  # frames made and handed to the ring
    frames_taken: int = 0  # frames the consumer took
    late_frames: int = 0  # frames made after their due time (module docstring)
    dropped_frames: int = 0  # frames made but never taken: the session closed first
    audio_seconds: float = 0.0  # real audio pushed
    idle_seconds: float = 0.0  # silence inserted while no speech arrived (live sessions of the engine)
    motion_seconds: float = 0.0  # compute time of the motion stage (HuBERT, LMDM)
    frames_seconds: float = 0.0  # compute time of the frames stage (stitch, warp, decode, paste-back)
    max_lateness: float = 0.0  # seconds the latest frame missed its due time by
    # The player's clock: (first frame's index, when it was ready), set by the first frame.
    _first_frame: tuple[int, float] | None = field(default=None, repr=False)

    @property
    def real_time_factor(self) -> float | None:
        """Compute time per second of audio of the busier stage: the stages overlap, so the
        stream keeps up with real time while this stays below 1."""
        busiest = max(self.motion_seconds, self.frames_seconds)
        return busiest / self.audio_seconds if self.audio_seconds else None

    def count_frame(self, index: int, clock_start: float | None) -> None:
        """Frame `index` is ready now: the first one starts the player's clock (and, given
        `clock_start`, gives the first-frame latency); later ones are late past their due time."""
        now = time.perf_counter()
        self.frames_emitted += 1
        if self._first_frame is None:
            self._first_frame = (index, now)
            if clock_start is not None:
                self.first_frame_latency = now - clock_start
            return
        first_index, first_ready = self._first_frame
        lateness = now - (first_ready + (index - first_index) / FPS)
        if lateness > LATE_MARGIN_S:
            self.late_frames += 1
        self.max_lateness = max(self.max_lateness, lateness)

    def as_dict(self) -> dict:
        chunks = self.chunk_latencies
        return {
            "chunksize": list(self.chunksize),
            "overlap_v2": self.overlap_v2,
            "first_frame_latency_s": self.first_frame_latency,
            "chunk_latency_mean_s": float(np.mean(chunks)) if chunks else None,
            "chunk_latency_max_s": float(np.max(chunks)) if chunks else None,
            "frames_emitted": self.frames_emitted,
            "frames_taken": self.frames_taken,
            "late_frames": self.late_frames,
            "dropped_frames": self.dropped_frames,
            "max_lateness_s": self.max_lateness,
            "audio_seconds": self.audio_seconds,
            "idle_seconds": self.idle_seconds,
            "motion_seconds": self.motion_seconds,
            "frames_seconds": self.frames_seconds,
            "real_time_factor": self.real_time_factor,
        }
