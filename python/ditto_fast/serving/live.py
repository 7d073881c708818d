"""One WebSocket live session (protocol.py): the start handshake, then three concurrent parts —
the receiver (client messages → engine calls, each in a worker thread), the encoder thread
(pump.py: engine frames → messages) and the sender (messages → client) — and the cleanup that
frees the engine's slot however the session ends."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from ditto_fast.errors import one_line
from ditto_fast.runtime.heap import release_free_heap
from ditto_fast.serving.avatars import AvatarStore
from ditto_fast.serving.interface import EngineBusy, EngineLike, LiveSessionLike
from ditto_fast.serving.metrics import ServerCounters
from ditto_fast.serving.outbox import Outbox
from ditto_fast.serving.protocol import (
    CLOSE_BUSY,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    AudioBudget,
    Controls,
    End,
    Interrupt,
    Limits,
    ProtocolError,
    Start,
    error_message,
    parse_audio,
    parse_text,
    started_message,
    stats_message,
)
from ditto_fast.serving.pump import FramePump
from ditto_fast.serving.video import make_encoder

CLOSE_WAIT_S = 5.0  # for our own error and close frames: a client that reads nothing gets no more
JOIN_WAIT_S = 5.0  # for the encoder thread once its session is closed


class ClientGone(Exception):
    """The client disconnected (or stopped reading)."""


class SessionError(Exception):
    """Ends the session with an error message and a close code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class LiveConnection:
    """Runs one accepted WebSocket from its start message to its close."""

    def __init__(self, ws: WebSocket, engine: EngineLike, avatars: AvatarStore, limits: Limits,
                 counters: ServerCounters, defaults: Mapping[str, Any]) -> None:
        self.ws, self.engine, self.avatars, self.limits = ws, engine, avatars, limits
        self.counters, self.defaults = counters, dict(defaults)
        self.session: LiveSessionLike | None = None
        self.frames_sent = 0
        # The session's producer calls (push, interrupt, controls, end) run in order on a thread
        # of its own: push blocks while the session's queues are full (its client reads too
        # slowly), and a blocked push must not hold a thread of the shared pool that every
        # other session needs.
        self._calls = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ditto-fast-calls")

    async def run(self) -> None:
        try:
            start, avatar_id = await self._start()
        except SessionError as exc:
            self.counters.add("sessions_refused_total")
            await self._close(exc.code, str(exc))
            return
        except ClientGone:
            return
        self.counters.add("sessions_started_total")
        try:
            await self._stream(start, avatar_id)
        except ClientGone:
            pass
        except Exception as exc:
            self.counters.add("session_errors_total")
            error = exc if isinstance(exc, SessionError) else SessionError(one_line(exc), CLOSE_INTERNAL)
            await self._close(error.code, str(error))
        finally:
            # However the session ended (close() is idempotent): its slot is free at once.
            await _to_thread_to_the_end(self.session.close)
            self._calls.shutdown(wait=False)  # a push still blocked returns once the session is closed
            # The connection's encoder, queues and threads are gone now too (the engine already
            # trimmed when the session closed, before they were freed).
            release_free_heap()

    # -- the start --------------------------------------------------------------------------

    async def _start(self) -> tuple[Start, str]:
        try:
            message = await asyncio.wait_for(self._receive(), self.limits.start_timeout_s)
        except asyncio.TimeoutError:
            raise SessionError(f"no start message within {self.limits.start_timeout_s:g} s", CLOSE_POLICY) from None
        start = _checked(lambda: self._parse(message))
        if not isinstance(start, Start):
            raise SessionError('the first message must be {"type": "start", ...}', CLOSE_POLICY)
        avatar_id = await self._avatar(start)
        options = {**self.defaults, **start.options}
        try:
            self.session = await _open(self.engine, avatar_id, start.chunksize, options)
        except Exception as exc:
            if isinstance(exc, EngineBusy):
                code = CLOSE_BUSY
            else:
                code = CLOSE_POLICY if isinstance(exc, ValueError) else CLOSE_INTERNAL
            raise SessionError(one_line(exc), code) from None
        return start, avatar_id

    async def _avatar(self, start: Start) -> str:
        if start.image is None:
            if not await asyncio.to_thread(self.engine.has_avatar, start.avatar):
                raise SessionError(f"unknown avatar {start.avatar!r}: upload it with POST /v1/avatars, or send "
                                   '"image"', CLOSE_POLICY)
            return start.avatar
        if len(start.image) > self.limits.max_image_bytes:
            raise SessionError(f"the image is over the limit of {self.limits.max_image_bytes} bytes", CLOSE_TOO_BIG)
        try:
            return await self.avatars.add(self.engine, start.image, options=start.avatar_options)
        except (ValueError, OSError) as exc:  # no face, unreadable image, bad option
            raise SessionError(one_line(exc), CLOSE_POLICY) from None

    # -- the stream -------------------------------------------------------------------------

    async def _stream(self, start: Start, avatar_id: str) -> None:
        session = self.session
        height, width = session.frame_size
        encoder = await asyncio.to_thread(make_encoder, start, height, width)  # opens codecs
        await self._send(started_message(session.id, avatar_id, encoder.width, encoder.height, start,
                                         self.limits))
        outbox = Outbox(asyncio.get_running_loop(), self.limits.max_queued_frames,
                        self.limits.max_queued_video_bytes)
        pump = FramePump(session, encoder, outbox, self.limits.frame_timeout_s)
        pump.start()
        sender = asyncio.create_task(self._send_all(outbox))
        receiver = asyncio.create_task(self._receive_all(start))
        try:
            # The receiver ends only by an exception (error, disconnect); the sender ends when
            # the video has ended (after the client's end) or by an exception.
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if receiver.done():
                receiver.result()  # raises
            sender.result()
            if outbox.failure is not None:
                raise SessionError(f"the session failed: {one_line(outbox.failure)}", CLOSE_INTERNAL)
            stats = await asyncio.to_thread(session.stats_dict)
            await self._send(stats_message({**stats, "frames_sent": self.frames_sent,
                                            "slow_client_dropped_frames": pump.frames_dropped}))
            await self._close(CLOSE_NORMAL)
        finally:
            outbox.close()  # releases an encoder thread waiting for room
            for task in (sender, receiver):
                task.cancel()
            await _to_thread_to_the_end(session.close)  # ends its frames(), and so the encoder thread
            await _to_thread_to_the_end(pump.join, JOIN_WAIT_S)
            await asyncio.gather(sender, receiver, return_exceptions=True)
            self.counters.add("slow_client_dropped_frames_total", pump.frames_dropped)

    async def _receive_all(self, start: Start) -> None:
        budget = AudioBudget(self.limits)
        ended = False
        session = self.session
        while True:
            message = _checked(functools.partial(self._parse, await self._receive()))
            if ended:
                raise SessionError("no message may follow end", CLOSE_POLICY)
            if isinstance(message, np.ndarray):
                _checked(functools.partial(budget.add, message.size, start.sample_rate))
                call = functools.partial(session.push, message, start.sample_rate)
            elif isinstance(message, Interrupt):
                budget.reset()  # the queued speech is gone
                call = session.interrupt
            elif isinstance(message, Controls):
                call = functools.partial(session.set_controls, **message.controls)
            elif isinstance(message, End):
                ended, call = True, session.end
            else:
                raise SessionError("start may be sent only once", CLOSE_POLICY)
            try:
                await asyncio.get_running_loop().run_in_executor(self._calls, call)
            except ValueError as exc:  # bad audio or controls, as the engine sees them
                raise SessionError(one_line(exc), CLOSE_POLICY) from None
            except Exception as exc:
                raise SessionError(f"the session failed: {one_line(exc)}", CLOSE_INTERNAL) from None

    async def _send_all(self, outbox: Outbox) -> None:
        while (item := await outbox.get()) is not None:
            message, frames = item
            await self._send(message)
            self.frames_sent += frames

    # -- the socket -------------------------------------------------------------------------

    async def _receive(self) -> dict:
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise ClientGone
        return message

    def _parse(self, message: dict):
        if message.get("bytes") is not None:
            return parse_audio(message["bytes"], self.limits)
        if message.get("text") is not None:
            return parse_text(message["text"], self.limits)
        raise ProtocolError("empty message")

    async def _send(self, message: bytes | str) -> None:
        """Send one message; a client that has not taken it within the send timeout is gone."""
        send = self.ws.send_bytes(message) if isinstance(message, bytes) else self.ws.send_text(message)
        try:
            await asyncio.wait_for(send, self.limits.send_timeout_s)
        except asyncio.TimeoutError:
            raise ClientGone("the client stopped reading") from None
        except (OSError, WebSocketDisconnect, WebSocketDisconnected) as exc:
            raise ClientGone(str(exc)) from None

    async def _close(self, code: int, error: str | None = None) -> None:
        with contextlib.suppress(Exception):
            if error is not None:
                await asyncio.wait_for(self.ws.send_text(error_message(error)), CLOSE_WAIT_S)
            await asyncio.wait_for(self.ws.close(code), CLOSE_WAIT_S)


def _checked(parse):
    """`parse()`, with the protocol's errors as the session's."""
    try:
        return parse()
    except ProtocolError as exc:
        raise SessionError(str(exc), exc.close_code) from None


async def _open(engine: EngineLike, avatar_id: str, chunksize: tuple[int, int, int],
                options: dict[str, Any]) -> LiveSessionLike:
    """engine.open in a worker thread. Should this task be cancelled meanwhile (server shutdown),
    the session it still returns is closed, not leaked."""
    opening = asyncio.ensure_future(asyncio.to_thread(engine.open, avatar_id, chunksize=chunksize, **options))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(lambda done: done.exception() is None and done.result().close())
        raise


async def _to_thread_to_the_end(function, *args) -> None:
    """`function(*args)` in a worker thread, which runs to the end even when this task is
    cancelled meanwhile (the server shutting down, or a test client leaving): cleanup must
    not stop half-way."""
    await asyncio.shield(asyncio.to_thread(function, *args))
