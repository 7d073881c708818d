"""A bounded hand-off of outgoing messages from a session's encoder thread to the event loop.

The encoder thread must never block the event loop, and the event loop must never wait on a
thread; so the thread appends under a lock and wakes the loop with `call_soon_threadsafe`, and
the loop's sender awaits an `asyncio.Event`. The bound (frames and bytes) is what keeps a slow
client from growing the server's memory: the producer asks `has_room()` (drop policy) or waits
in `wait_for_room()` (back-pressure policy) before encoding the next frame.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque

Message = bytes | str  # binary, or a JSON text message


class Outbox:
    """Messages in order, bounded by `max_frames` frames and `max_bytes` bytes of queued video.

    A put is never refused: the producer checks for room first, so the queue exceeds its bound
    by at most one frame's messages. The message being sent is no longer counted."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_frames: int, max_bytes: int) -> None:
        self._loop, self.max_frames, self.max_bytes = loop, max_frames, max_bytes
        self._items: deque[tuple[Message, int]] = deque()
        self._frames = self._bytes = 0
        self._room = threading.Condition()
        self._ready = asyncio.Event()  # touched only on the loop's thread
        self._finished = False  # the producer is done
        self._closed = False  # the consumer is gone
        self.failure: BaseException | None = None  # why the producer stopped early
        self.peak_frames = self.peak_bytes = 0  # the most ever queued, for tests and metrics

    # -- producer side (any thread) -----------------------------------------------------------

    def has_room(self) -> bool:
        with self._room:
            return self._frames < self.max_frames and self._bytes < self.max_bytes

    def wait_for_room(self, timeout: float | None = None) -> bool:
        """Block until the queue has room; False when the consumer is gone or `timeout` passed."""
        with self._room:
            self._room.wait_for(lambda: self._closed or (self._frames < self.max_frames
                                                         and self._bytes < self.max_bytes), timeout)
            return not self._closed and self._frames < self.max_frames and self._bytes < self.max_bytes

    def put(self, message: Message, frames: int = 0) -> None:
        """Queue `message`, which carries `frames` video frames (0 for text messages)."""
        with self._room:
            if self._closed:
                return
            self._items.append((message, frames))
            self._frames += frames
            self._bytes += len(message)
            self.peak_frames = max(self.peak_frames, self._frames)
            self.peak_bytes = max(self.peak_bytes, self._bytes)
        self._wake()

    def finish(self, failure: BaseException | None = None) -> None:
        """No more messages (after those queued); `failure` says why, when the stream broke."""
        with self._room:
            self._finished, self.failure = True, failure
        self._wake()

    def _wake(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass

    # -- consumer side (the event loop) -------------------------------------------------------

    async def get(self) -> tuple[Message, int] | None:
        """The next message and the frames it carries, or None once the producer finished and
        everything was taken."""
        while True:
            with self._room:
                if self._items:
                    message, frames = self._items.popleft()
                    self._frames -= frames
                    self._bytes -= len(message)
                    self._room.notify_all()
                    return message, frames
                if self._finished:
                    return None
            # No await between the check and clear(): a wake-up scheduled after the check runs
            # after clear(), so it is never lost.
            self._ready.clear()
            await self._ready.wait()

    def close(self) -> None:
        """The consumer is gone: drop what is queued and release a waiting producer."""
        with self._room:
            self._closed = True
            self._items.clear()
            self._frames = self._bytes = 0
            self._room.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
