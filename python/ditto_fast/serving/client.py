"""`ditto-fast client`: a load generator for `ditto-fast serve`.

Uploads the portrait once, then runs K concurrent live sessions that each send the same speech
in 40 ms pieces (at real-time pace, or as fast as the server's audio budget allows), write the
fMP4 they receive to `session-{k}.mp4` (the fragments concatenated are a playable MP4 with
audio), and reports per-session and aggregate latency and throughput as JSON. Every wait is
bounded by a timeout, so a stuck server fails the run instead of hanging it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ditto_fast.serving.protocol import DEFAULT_LIMITS, pcm16

SESSION_PATH = "/v1/session"
PIECE_SAMPLES = 640  # 40 ms at 16 kHz
SAMPLE_RATE = 16000
HTTP_TIMEOUT_S = 60.0  # the avatar upload registers the portrait (face detection)
STEP_TIMEOUT_S = 60.0  # any one message from the server
BUDGET_MARGIN_S = 1.0  # how far below the server's audio budget the fast mode stays


def endpoints(url: str) -> tuple[str, str]:
    """(WebSocket session URL, HTTP base URL) from `ws://host:port` (any path: /v1/session is
    used); http(s) URLs are taken too."""
    parts = urlsplit(url)
    schemes = {"ws": "http", "wss": "https", "http": "http", "https": "https"}
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(f"--url must look like ws://HOST:PORT, got {url!r}")
    http_scheme = schemes[parts.scheme]
    ws_scheme = "wss" if http_scheme == "https" else "ws"
    return (urlunsplit((ws_scheme, parts.netloc, SESSION_PATH, "", "")),
            urlunsplit((http_scheme, parts.netloc, "", "", "")))


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def upload_avatar(http_base: str, source: str | Path, token: str | None = None) -> str:
    """POST the portrait to /v1/avatars; returns its id."""
    import httpx

    source = Path(source)
    data = source.read_bytes()
    try:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as http:
            response = await http.post(f"{http_base}/v1/avatars", headers=_headers(token),
                                       files={"file": (source.name, data)})
    except httpx.HTTPError as exc:
        raise RuntimeError(f"uploading {source.name} to {http_base} failed: {exc or type(exc).__name__}") from None
    if response.status_code != 200:
        detail = response.json().get("detail") if "json" in response.headers.get("content-type", "") else None
        raise RuntimeError(f"uploading {source.name} failed: HTTP {response.status_code} {detail or response.text}")
    return response.json()["id"]


class _Session:
    """One live session of the run, and what it measured."""

    def __init__(self, index: int, pcm: np.ndarray, out: Path, realtime: bool) -> None:
        self.index, self.pcm, self.out, self.realtime = index, pcm, out, realtime
        self.first_push: float | None = None
        self.first_video: float | None = None
        self.started_at = time.perf_counter()
        self.bytes = 0
        self.server_stats: dict[str, Any] = {}
        self.error: str | None = None

    async def run(self, ws_url: str, avatar: str, token: str | None) -> None:
        from websockets.asyncio.client import connect

        # No compression: fMP4 does not compress, and the load generator should not be the
        # bottleneck. max_size: fragments of large frames.
        async with connect(ws_url, additional_headers=_headers(token), compression=None, max_size=64 << 20,
                           open_timeout=STEP_TIMEOUT_S, close_timeout=10) as ws:
            await ws.send(json.dumps({"type": "start", "avatar": avatar, "video": "fmp4",
                                      "sample_rate": SAMPLE_RATE}))
            started = json.loads(await asyncio.wait_for(ws.recv(), STEP_TIMEOUT_S))
            if started.get("type") != "started":
                raise RuntimeError(started.get("message", f"unexpected reply {started}"))
            budget = float(started.get("max_pending_audio_s", DEFAULT_LIMITS.max_pending_audio_s))
            sender = asyncio.create_task(self._send_audio(ws, budget))
            try:
                await self._receive(ws)
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)

    async def _send_audio(self, ws, budget: float) -> None:
        clock = time.perf_counter()
        self.first_push = clock
        for at in range(0, len(self.pcm), PIECE_SAMPLES):
            ahead = at / SAMPLE_RATE - (time.perf_counter() - clock)
            # Real time: no piece before its time. Fast: as fast as the server's budget allows.
            wait = ahead if self.realtime else ahead - (budget - BUDGET_MARGIN_S)
            if wait > 0:
                await asyncio.sleep(wait)
            await ws.send(self.pcm[at:at + PIECE_SAMPLES].tobytes())
        await ws.send(json.dumps({"type": "end"}))

    async def _receive(self, ws) -> None:
        with self.out.open("wb") as file:
            while True:
                message = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT_S)
                if isinstance(message, bytes):
                    if self.first_video is None:
                        self.first_video = time.perf_counter()
                    self.bytes += len(message)
                    file.write(message)
                    continue
                reply = json.loads(message)
                if reply.get("type") == "error":
                    raise RuntimeError(reply.get("message", "error"))
                if reply.get("type") == "stats":
                    self.server_stats = {key: value for key, value in reply.items() if key != "type"}
                    return

    def result(self) -> dict[str, Any]:
        stats = self.server_stats
        latency = (self.first_video - self.first_push) if self.first_video and self.first_push else None
        return {
            "session": self.index, "ok": self.error is None and bool(stats), "error": self.error,
            "mp4": str(self.out), "first_video_latency_s": latency,
            "server_first_frame_latency_s": stats.get("first_frame_latency_s"),
            "real_time_factor": stats.get("real_time_factor"), "frames_emitted": stats.get("frames_emitted"),
            "frames_sent": stats.get("frames_sent"), "late_frames": stats.get("late_frames"),
            "dropped_frames": stats.get("dropped_frames"), "idle_frames": stats.get("idle_frames"),
            "max_lateness_s": stats.get("max_lateness_s"),
            "audio_seconds": stats.get("audio_seconds"), "bytes_received": self.bytes,
            "wall_seconds": time.perf_counter() - self.started_at,
        }


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def aggregate(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures over the sessions that completed."""
    ok = [r for r in results if r["ok"]]
    latencies = [r["first_video_latency_s"] for r in ok if r["first_video_latency_s"] is not None]
    factors = [r["real_time_factor"] for r in ok if r["real_time_factor"] is not None]
    return {
        "sessions": len(results), "sessions_ok": len(ok), "sessions_failed": len(results) - len(ok),
        "first_video_latency_p50_s": _percentile(latencies, 50),
        "first_video_latency_p99_s": _percentile(latencies, 99),
        "first_video_latency_max_s": max(latencies, default=None),
        "real_time_factor_mean": float(np.mean(factors)) if factors else None,
        "real_time_factor_max": max(factors, default=None),
        "frames_sent_total": sum(r["frames_sent"] or 0 for r in ok),
        "late_frames_total": sum(r["late_frames"] or 0 for r in ok),
        "dropped_frames_total": sum(r["dropped_frames"] or 0 for r in ok),
        "bytes_received_total": sum(r["bytes_received"] for r in results),
    }


async def run_clients_async(url: str, source: str | Path, audio: str | Path, sessions: int, out_dir: str | Path,
                            stats_json: str | Path | None = None, token: str | None = None,
                            realtime: bool = True) -> dict[str, Any]:
    """`run_clients` inside a running event loop."""
    from ditto_fast.stages.audio import frame_count, load_audio

    if sessions < 1:
        raise ValueError(f"sessions must be at least 1, got {sessions}")
    ws_url, http_base = endpoints(url)
    samples = load_audio(audio)
    pcm = pcm16(samples)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    avatar = await upload_avatar(http_base, source, token)
    audio_s = len(pcm) / SAMPLE_RATE
    # Real time takes the audio's length; fast mode at worst the same. The rest is start-up and
    # the engine's latency, generously.
    deadline = audio_s + 120.0
    runs = [_Session(k, pcm, out_dir / f"session-{k}.mp4", realtime) for k in range(sessions)]

    async def bounded(run: _Session) -> None:
        try:
            await asyncio.wait_for(run.run(ws_url, avatar, token), deadline)
        except asyncio.TimeoutError:
            run.error = f"timed out ({deadline:.0f} s)"
        except Exception as exc:  # one failed session is a figure of the run, not its end
            run.error = f"{type(exc).__name__}: {exc}".splitlines()[0]

    await asyncio.gather(*(bounded(run) for run in runs))
    results = [run.result() for run in runs]
    report = {"url": ws_url, "avatar": avatar, "audio_seconds": audio_s, "expected_frames": frame_count(len(pcm)),
              "realtime": realtime, "aggregate": aggregate(results), "sessions": results}
    if stats_json:
        Path(stats_json).write_text(json.dumps(report, indent=2) + "\n")
    return report


def run_clients(url: str, source: str | Path, audio: str | Path, sessions: int, out_dir: str | Path,
                stats_json: str | Path | None = None, token: str | None = None, realtime: bool = True
                ) -> dict[str, Any]:
    """Run `sessions` concurrent live sessions against the server at `url` (ws://host:port);
    returns the report also written to `stats_json`: per session its first-video latency (first
    audio sent → first video bytes received), the server's final stats (real-time factor, frame
    counts) and its mp4 in `out_dir`, plus aggregates (p50/p99 latency)."""
    return asyncio.run(run_clients_async(url, source, audio, sessions, out_dir, stats_json, token, realtime))
