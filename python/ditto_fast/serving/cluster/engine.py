"""The ingress side: `ClusterEngine` has the single-machine SessionEngine's interface
(serving/interface.py), so serving/app.py serves a cluster unchanged; its sessions and renders
run on engine replicas (replica.py) reached through a Ray Serve handle and the relay (relay.py).

Thread safety: as SessionEngine's. Every method blocks (the app calls them in worker threads).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.serve.exceptions import BackPressureError

from ditto_fast.files import write_atomic
from ditto_fast.serving.avatar_cache import avatar_id as content_id
from ditto_fast.serving.engine import LiveFrame
from ditto_fast.serving.interface import EngineBusy

TOOK_EVERY_FRAMES = 5  # how often a session tells the relay how far it has read
LOST_REPLICA = ("the replica serving this session stopped ({why}): reconnect to start a new session; the "
                "cluster replaces the replica")


class ReplicaLost(RuntimeError):
    """The replica that held a session or a render is gone."""


def _is_replica_loss(exc: BaseException) -> bool:
    """A Ray failure of the replica itself, not an error of our code inside it."""
    return isinstance(exc, ray.exceptions.RayError) and not isinstance(exc, ray.exceptions.RayTaskError)


class RemoteSession:
    """A live session held by one engine replica (LiveSessionLike)."""

    def __init__(self, relay: Any, key: str, stream: Any, opened: dict[str, Any]) -> None:
        self.id: str = opened["id"]
        self.frame_size: tuple[int, int] = tuple(opened["frame_size"])
        self.replica: str = opened["replica"]
        self._relay, self._key, self._stream = relay, key, stream
        self._stats: dict[str, Any] = {"session": self.id}
        self._lost: str | None = None
        self._closed = False

    def push(self, pcm: np.ndarray, sample_rate: int = 16000) -> None:
        self._call("push", np.asarray(pcm), sample_rate)

    def interrupt(self) -> None:
        self._call("interrupt")

    def set_controls(self, **controls: Any) -> None:
        self._call("set_controls", **controls)

    def end(self) -> None:
        self._call("end")

    def frames(self, timeout: float | None = None) -> Iterator[LiveFrame]:
        """The replica's frames as they come; `timeout` is the replica's (given at open)."""
        taken = 0
        try:
            for item in self._stream:
                kind = item[0]
                if kind == "frame":
                    _, index, pts, rgb, audio = item
                    yield LiveFrame(index, pts, rgb, audio)
                    taken += 1
                    if taken % TOOK_EVERY_FRAMES == 0:
                        self._relay.took.remote(self._key, taken)
                elif kind == "stats":
                    self._stats = item[1]
                    return
                else:  # "failed"
                    raise RuntimeError(item[1])
        except Exception as exc:
            if self._closed or not _is_replica_loss(exc):
                raise
            self._lost = LOST_REPLICA.format(why=type(exc).__name__)
            self._relay.fail.remote(self._key, self._lost)  # a call waiting on the dead replica returns
            raise ReplicaLost(self._lost) from None

    def stats_dict(self) -> dict:
        return dict(self._stats)

    def close(self) -> None:
        """End the session on its replica (its slot is free once the stream is cancelled);
        idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stream.cancel()
        self._relay.fail.remote(self._key, "the session is closed")

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        if self._lost is not None:
            raise ReplicaLost(self._lost)
        kind, message = ray.get(self._relay.call.remote(self._key, name, args, kwargs))
        if kind == "value":
            raise ValueError(message)
        if kind != "ok":
            raise ReplicaLost(message) if self._lost is not None else RuntimeError(message)


class RemoteRenderer:
    """`render_to_file` of the app's POST /v1/render, on a replica: the files go there as bytes,
    the mp4 comes back whole and is written beside `out`, then renamed into place. A render
    whose replica dies is retried once on another."""

    def __init__(self, replicas: Any) -> None:
        self._replicas = replicas

    def render_to_file(self, source: str | Path, audio: str | Path, out: str | Path, *, preset: str | None = None,
                       **options: Any) -> None:
        source, audio, out = Path(source), Path(audio), Path(out)
        request = (source.read_bytes(), source.suffix, audio.read_bytes(), audio.suffix, preset, options)
        for attempt in range(2):
            try:
                kind, result = self._replicas.render.remote(*request).result()
                break
            except Exception as exc:
                if attempt == 1 or not _is_replica_loss(exc):
                    raise
        if kind != "ok":
            raise ValueError(result)
        write_atomic(out, result)


class ClusterEngine:
    """EngineLike over a deployment of EngineReplica and the application's relay."""

    def __init__(self, replicas: Any, relay: Any, *, frame_timeout: float, open_attempts: int = 6) -> None:
        """`replicas`: a DeploymentHandle of the EngineReplica deployment; `open_attempts`: how
        many replicas a session tries before it is refused as busy (the first is chosen by its
        avatar, the others by load)."""
        self._replicas, self._relay = replicas, relay
        self.frame_timeout, self.open_attempts = frame_timeout, open_attempts
        self.renderer = RemoteRenderer(replicas)

    @property
    def max_sessions(self) -> int:
        return sum(figures["max_sessions"] for figures in self.replica_figures().values())

    def add_avatar(self, source: str | Path, **options: Any) -> str:
        """Keep the file at the relay under its content id and register it on one replica now
        (ValueError: no face, unreadable)."""
        key = content_id(source, options)
        ray.get(self._relay.put_avatar.remote(key, Path(source).read_bytes(), Path(source).suffix, options))
        error = self._replicas.options(multiplexed_model_id=key).prepare.remote(key).result()
        if error is not None:
            raise ValueError(error)
        return key

    def has_avatar(self, avatar_id: str) -> bool:
        return ray.get(self._relay.has_avatar.remote(avatar_id))

    def open(self, avatar_id: str, *, chunksize: tuple[int, int, int] = (3, 5, 2), **options: Any) -> RemoteSession:
        """A session on a replica: first one that holds the avatar, then others by load; EngineBusy
        when every one tried is full."""
        refusals = []
        for attempt in range(self.open_attempts):
            key = uuid.uuid4().hex
            by_avatar = {"multiplexed_model_id": avatar_id} if attempt == 0 else {}
            handle = self._replicas.options(stream=True, **by_avatar)
            try:
                stream = handle.session.remote(key, avatar_id, tuple(chunksize), options, self.frame_timeout)
                kind, detail = next(stream)
            except BackPressureError as exc:  # the handle's queue is full: so is the cluster
                raise EngineBusy(f"busy: {exc}") from None
            if kind == "opened":
                return RemoteSession(self._relay, key, stream, detail)
            if kind == "refused":
                raise ValueError(detail)
            refusals.append(detail)
        raise EngineBusy(f"busy: every replica tried is full ({'; '.join(refusals[-2:])})")

    def replica_figures(self) -> dict[str, dict[str, Any]]:
        """Each live replica's latest figures (replica.py's `figures()`), by replica id."""
        return ray.get(self._relay.reports.remote())

    def metrics(self) -> dict:
        """The replicas' SessionEngine figures summed (latencies pooled) for /metrics."""
        reports = list(self.replica_figures().values())
        summed = {key: sum(r[key] for r in reports) for key in (
            "sessions_open", "max_sessions", "frames_rendered_total", "batches_total", "late_frames_total",
            "dropped_frames_total", "queued_windows", "pending_frames", "frames_per_second", "avatars")}
        return {**summed, "first_frame_latencies_s": [s for r in reports for s in r["first_frame_latencies_s"]],
                "replicas": len(reports)}

    def close(self) -> None:
        """Nothing to free here: the replicas belong to the Serve application."""
