"""Stages on their own threads, joined by bounded channels, failing as one.

Rendering is a chain (audio features → motion clips → frames → encoder) whose stages release
the GIL in their heavy parts (ONNX Runtime, NumPy, the native paste-back, x264), so running
them on separate threads overlaps their work. Bounded channels keep memory flat: a fast stage
waits for a slow one instead of running ahead.

Failure rule: the first exception in any stage is kept, every channel is closed (which wakes
every waiting stage with `StagesStopped`), the `on_stop` callbacks run (e.g. closing a frame
ring), and the consumer re-raises that exception object, so its traceback still points at
the line that failed in the stage. Later errors caused by the shutdown are not reported.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class StagesStopped(Exception):
    """Raised inside a stage when the chain is stopping (an error elsewhere, or the consumer left)."""


class Channel(Generic[T]):
    """A bounded FIFO between two stages. `put` blocks while full; iterating yields items
    until the producer calls `finish()`. Closing (by `StageGroup.stop`) wakes both sides."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"Channel: capacity must be ≥ 1, got {capacity}")
        self._items: deque[T] = deque()
        self._capacity = capacity
        self._cond = threading.Condition()
        self._finished = False
        self._closed = False

    def put(self, item: T) -> None:
        with self._cond:
            while len(self._items) >= self._capacity and not self._closed:
                self._cond.wait()
            if self._closed:
                raise StagesStopped
            self._items.append(item)
            self._cond.notify_all()

    def finish(self) -> None:
        """No more items: the consumer's loop ends after the queued ones."""
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()

    def __iter__(self) -> Iterator[T]:
        while True:
            with self._cond:
                while not self._items and not self._finished and not self._closed:
                    self._cond.wait()
                if self._closed:
                    raise StagesStopped
                if not self._items:
                    return
                item = self._items.popleft()
                self._cond.notify_all()
            yield item


class StageGroup:
    """Threads of one render; see the module docstring for the failure rule."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._channels: list[Channel] = []
        self._on_stop: list[Callable[[], None]] = []
        self._threads: list[threading.Thread] = []
        self._failure: BaseException | None = None
        self._stopped = False

    def channel(self, capacity: int) -> Channel:
        channel: Channel = Channel(capacity)
        self._channels.append(channel)
        return channel

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Run `callback` once when the group stops (errors, early exit), e.g. to close a ring."""
        self._on_stop.append(callback)

    def start(self, stage: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=self._run, args=(target,), name=f"{self._name}-{stage}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run(self, target: Callable[[], None]) -> None:
        try:
            target()
        except StagesStopped:
            pass
        except BaseException:  # noqa: BLE001 - kept and re-raised in the consumer, traceback intact
            self.fail(sys.exc_info()[1])

    def fail(self, error: BaseException) -> None:
        with self._lock:
            if self._failure is None and not self._stopped:
                self._failure = error
        self.stop()

    def stop(self) -> None:
        """Close every channel and run the stop callbacks (once); stages then wind down."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        for channel in self._channels:
            channel.close()
        for callback in self._on_stop:
            callback()

    @property
    def failure(self) -> BaseException | None:
        """The first error of any stage, once one has failed."""
        return self._failure

    def wait(self, timeout: float | None = None) -> None:
        """Wait for every stage to end (each up to `timeout` seconds)."""
        for thread in self._threads:
            thread.join(timeout)

    def join(self) -> None:
        """Wait for every stage, then raise the first failure, if any."""
        self.wait()
        if self._failure is not None:
            raise self._failure
