"""One session-engine replica of the cluster: a Renderer and a SessionEngine over it, serving
live sessions as streaming calls, offline renders, and avatars as multiplexed models.

Streams of a live session (`session()`), item by item:
    ("busy", message) | ("refused", message)          the only item, when it does not open
    ("opened", {"id", "frame_size", "replica"})      then
    ("frame", index, pts, rgb, audio) ...             then
    ("stats", stats_dict) | ("failed", message)      the last item
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import ray
from ray import serve

from ditto_fast.errors import one_line
from ditto_fast.serving.cluster.relay import CALL_NAMES
from ditto_fast.serving.interface import EngineBusy

CALL_POLL_S = 1.0  # a session's call loop asks the relay for its next call this often at least
REPORT_EVERY_S = 2.0  # figures to the relay (for /metrics and autoscaling tests)
STREAM_WINDOW_FRAMES = 25  # frames a replica streams ahead of what the ingress has taken (1 s)
MAX_AVATARS_PER_REPLICA = 64  # multiplexed models kept by Ray; the engine's cache bounds the bytes


class EngineReplica:
    """The deployment's class (app.py wraps it with `serve.deployment`)."""

    def __init__(self, relay_name: str, namespace: str, renderer_options: dict[str, Any],
                 max_sessions: int | None, max_batch: int) -> None:
        from ditto_fast.renderer import Renderer
        from ditto_fast.serving.engine import SessionEngine

        self.relay = ray.get_actor(relay_name, namespace=namespace)
        self.renderer = Renderer(**renderer_options)
        self.engine = SessionEngine(self.renderer, max_sessions=max_sessions, max_batch=max_batch)
        if max_sessions is None:  # admission from what this replica sustains, as ditto-fast serve
            self.engine.max_sessions = self.engine.measure_capacity().sessions
        replica_id = serve.get_replica_context().replica_id
        self.replica, self.actor_name = replica_id.unique_id, replica_id.to_full_id_str()  # actor in "serve"
        self.registrations: Counter[str] = Counter()  # avatar id → times registered here (at most 1)
        self._closed = threading.Event()
        self._reporter = threading.Thread(target=self._report, name="ditto-fast-report", daemon=True)
        self._reporter.start()

    # -- avatars ---------------------------------------------------------------------------------

    @serve.multiplexed(max_num_models_per_replica=MAX_AVATARS_PER_REPLICA)
    async def avatar(self, avatar_id: str) -> str:
        """Make `avatar_id` (an id the relay holds) registered here; ValueError if unknown or
        unusable (no face, ...). The id is the single-machine engine's own (same bytes, same
        options: the same hash), so the engine's cache also catches a model Ray evicted."""
        if self.engine.has_avatar(avatar_id):
            return avatar_id
        stored = await self.relay.avatar.remote(avatar_id)
        if stored is None:
            raise ValueError(f"unknown avatar {avatar_id!r}: upload it with POST /v1/avatars first")
        data, suffix, options = stored
        with tempfile.TemporaryDirectory(prefix="ditto_fast_avatar_") as scratch:
            path = Path(scratch) / f"avatar{suffix}"
            path.write_bytes(data)
            registered = await asyncio.to_thread(self.engine.add_avatar, path, **options)
        if registered != avatar_id:  # the ingress hashed other bytes or options than these
            raise ValueError(f"avatar {avatar_id!r} does not match its file")
        self.registrations[avatar_id] += 1
        return avatar_id

    async def prepare(self, avatar_id: str) -> str | None:
        """Register an uploaded avatar now (the upload's answer says whether it has a face):
        None, or the one-line error."""
        try:
            await self.avatar(avatar_id)
        except (ValueError, OSError) as exc:
            return one_line(exc)
        return None

    # -- live sessions ---------------------------------------------------------------------------

    async def session(self, key: str, avatar_id: str, chunksize: tuple[int, int, int], options: dict[str, Any],
                      frame_timeout: float):
        """One live session, streamed (the module docstring); `key` names its calls and credit
        at the relay."""
        try:
            await self.avatar(avatar_id)
            session = await asyncio.to_thread(self.engine.open, avatar_id, chunksize=tuple(chunksize), **options)
        except EngineBusy as exc:
            yield "busy", f"{exc} on replica {self.replica}"
            return
        except (ValueError, OSError) as exc:
            yield "refused", one_line(exc)
            return
        calls = asyncio.ensure_future(self._serve_calls(key, session))
        try:
            yield "opened", {"id": session.id, "frame_size": tuple(session.frame_size), "replica": self.replica}
            frames, sent = session.frames(timeout=frame_timeout), 0
            while (frame := await asyncio.to_thread(next, frames, None)) is not None:
                if sent >= STREAM_WINDOW_FRAMES and not await self.relay.wait_taken.remote(
                        key, sent - STREAM_WINDOW_FRAMES + 1, frame_timeout):
                    return  # the reader is gone or stopped reading: the session ends here
                yield "frame", frame.index, frame.pts, frame.rgb, frame.audio
                sent += 1
            yield "stats", session.stats_dict()
        except Exception as exc:  # the engine failed this session (not a cancellation)
            yield "failed", one_line(exc)
        finally:
            calls.cancel()
            await asyncio.to_thread(session.close)  # frees the slot; ends a frames() still waiting

    async def _serve_calls(self, key: str, session: Any) -> None:
        """Run the session's calls from the relay in order, answering each."""
        while True:
            call = await self.relay.next_call.remote(key, CALL_POLL_S)
            if call is None:
                continue
            number, name, args, kwargs = call
            kind, message = "ok", ""
            try:
                if name not in CALL_NAMES:
                    raise RuntimeError(f"no session call named {name!r}")
                await asyncio.to_thread(getattr(session, name), *args, **kwargs)
            except ValueError as exc:
                kind, message = "value", one_line(exc)
            except Exception as exc:
                kind, message = "error", one_line(exc)
            await self.relay.answer.remote(key, number, kind, message)

    # -- offline renders -------------------------------------------------------------------------

    async def render(self, source: bytes, source_suffix: str, audio: bytes, audio_suffix: str,
                     preset: str | None, options: dict[str, Any]) -> tuple[str, bytes | str]:
        """An offline render of the files' bytes: ("ok", mp4 bytes) or ("value", message) for a
        bad input (no face, unreadable audio, bad option)."""
        with tempfile.TemporaryDirectory(prefix="ditto_fast_render_") as scratch:
            folder = Path(scratch)
            source_path, audio_path = folder / f"source{source_suffix}", folder / f"audio{audio_suffix}"
            source_path.write_bytes(source)
            audio_path.write_bytes(audio)
            out = folder / "render.mp4"
            try:
                await asyncio.to_thread(self.renderer.render_to_file, source_path, audio_path, out, preset=preset,
                                        **options)
            except (ValueError, OSError) as exc:
                return "value", one_line(exc)
            return "ok", out.read_bytes()

    # -- figures and shutdown --------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        return {**self.engine.metrics(), "replica": self.replica, "actor_name": self.actor_name, "pid": os.getpid(),
                "registrations": dict(self.registrations)}

    def _report(self) -> None:
        while True:
            try:
                self.relay.report.remote(self.replica, self.figures())
            except Exception:  # the relay is gone (the application shutting down): nothing to tell
                return
            if self._closed.wait(REPORT_EVERY_S):
                return

    def check_health(self) -> None:
        """Ray Serve's health check: a closed engine is a dead replica."""
        if self._closed.is_set():
            raise RuntimeError("the engine is closed")

    def __del__(self) -> None:
        # Ray Serve calls this after the graceful shutdown's wait for ongoing sessions.
        self._closed.set()
        self.engine.close()
