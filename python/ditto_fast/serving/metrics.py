"""`GET /metrics`: the engine's figures and the server's own counters in the Prometheus text
exposition format, version 0.0.4."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# First-frame latency, seconds: from tens of milliseconds (GPU, idle server) to seconds (CPU,
# a full engine).
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


@dataclass
class ServerCounters:
    """What the service counts itself (the engine counts the rest); updated from any thread."""

    sessions_started_total: int = 0
    sessions_refused_total: int = 0  # busy, bad start, unknown avatar
    session_errors_total: int = 0  # errors after the start (bad messages, engine failures)
    slow_client_dropped_frames_total: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, amount: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + amount)


# (metric name, type, help, key in engine.metrics())
_ENGINE_METRICS = (
    ("ditto_sessions_open", "gauge", "Live sessions open now.", "sessions_open"),
    ("ditto_frames_rendered_total", "counter", "Frames rendered by the engine.", "frames_rendered_total"),
    ("ditto_late_frames_total", "counter", "Frames made after their due time.", "late_frames_total"),
    ("ditto_dropped_frames_total", "counter", "Frames the engine made but dropped (consumer behind).",
     "dropped_frames_total"),
    ("ditto_queued_windows", "gauge", "Audio windows waiting for the motion stage, all sessions.",
     "queued_windows"),
    ("ditto_frames_per_second", "gauge", "Frames rendered per second since the engine started, all sessions.",
     "frames_per_second"),
    ("ditto_pending_frames", "gauge", "Frames of motion waiting to be rendered, all sessions.", "pending_frames"),
    ("ditto_batches_total", "counter", "Warp/decoder batches the engine ran (frames of any sessions together).",
     "batches_total"),
    ("ditto_avatars", "gauge", "Registered avatars held in the engine's cache.", "avatars"),
)
_SERVER_METRICS = (
    ("ditto_sessions_started_total", "WebSocket sessions started.", "sessions_started_total"),
    ("ditto_sessions_refused_total", "WebSocket sessions refused at the start (busy or bad start).",
     "sessions_refused_total"),
    ("ditto_session_errors_total", "WebSocket sessions ended by an error after the start.",
     "session_errors_total"),
    ("ditto_slow_client_dropped_frames_total", "Frames dropped because a jpeg/rgb client read too slowly.",
     "slow_client_dropped_frames_total"),
)


def _number(value: float) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(int(value))


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{sample} {_number(value)}" for sample, value in samples]
    return lines


def histogram(name: str, help_text: str, values: Iterable[float], buckets: Iterable[float] = LATENCY_BUCKETS
              ) -> list[str]:
    """A histogram family from the observed values: cumulative buckets, +Inf, _sum and _count."""
    observed = sorted(float(value) for value in values)
    samples = [(f'{name}_bucket{{le="{bound!r}"}}', sum(value <= bound for value in observed))
               for bound in (float(bound) for bound in buckets)]
    samples += [(f'{name}_bucket{{le="+Inf"}}', len(observed)), (f"{name}_sum", float(sum(observed))),
                (f"{name}_count", len(observed))]
    return _family(name, "histogram", help_text, samples)


def render_metrics(engine_metrics: Mapping, counters: ServerCounters, max_sessions: int) -> str:
    """The whole exposition, one family after another, ending with a newline."""
    lines: list[str] = []
    for name, kind, help_text, key in _ENGINE_METRICS:
        lines += _family(name, kind, help_text, [(name, engine_metrics.get(key, 0) or 0)])
    lines += _family("ditto_sessions_max", "gauge", "Session slots of the engine.", [("ditto_sessions_max",
                                                                                      max_sessions)])
    lines += histogram("ditto_first_frame_latency_seconds", "Session open to first frame, per session.",
                       engine_metrics.get("first_frame_latencies_s") or ())
    with counters.lock:
        values = {key: getattr(counters, key) for _, _, key in _SERVER_METRICS}
    for name, help_text, key in _SERVER_METRICS:
        lines += _family(name, "counter", help_text, [(name, values[key])])
    return "\n".join(lines) + "\n"
