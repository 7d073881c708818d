"""The framework-free core of the LiveKit and Pipecat adapters (serving/livekit.py,
serving/pipecat.py): which frames of a live session show which speech segment, the thread that
pushes audio into the session in order, and the thread that hands the session's frames to an
asyncio loop. Neither framework is imported here, so both adapters share it whichever is installed.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import soxr

from ditto_fast.stages.audio import SAMPLE_RATE, SAMPLES_PER_FRAME, as_mono_16k

if TYPE_CHECKING:
    from ditto_fast.serving.engine import LiveFrame, LiveSession


@dataclass
class Span:
    """One segment's speech: frames `first`..`last` of the session."""

    first: int
    last: int
    closed: bool = False  # its end came: nothing more goes into it
    label: Any = None  # the adapter's, from the segment's first push
    end: Any = None  # the adapter's, given with its end


class Spans:
    """Where each segment's speech lies among the session's frame indices (thread-safe).

    Frame i of the session shows samples [640·(i − base_index), ...) of its timeline counted from
    `base_sample` (speech as pushed, and the silence the engine inserts), both read again after
    each interrupt: frame indices run on while the dropped audio stays counted on the timeline.
    A push lands where the timeline's head is; silence the engine inserts (whole frames, while
    speech lags real time) can only make a span longer, never misalign it. `epoch` changes with
    every interrupt: work of an older epoch is dropped."""

    def __init__(self, session: LiveSession) -> None:
        self._session = session
        self._lock = threading.Lock()
        self.epoch = 0
        self._spans: deque[Span] = deque()
        self._open: Span | None = None
        self._base_index = self._base_sample = 0
        self.unaligned = 0  # samples pushed since the last interrupt, modulo a frame

    def _head(self) -> int:
        return round(self._session.motion.timeline_seconds * SAMPLE_RATE)

    def _index(self, sample: int) -> int:
        return self._base_index + (sample - self._base_sample) // SAMPLES_PER_FRAME

    def begin(self, epoch: int, count: int, label: Any) -> Span | None:
        """Before pushing `count` samples: the span they extend (None: an interrupt came first)."""
        with self._lock:
            if epoch != self.epoch:
                return None
            head = self._head()
            if self._open is None:
                self._open = Span(self._index(head), self._index(head), label=label)
                self._spans.append(self._open)
            self._open.last = max(self._open.last, self._index(head + count - 1))
            self.unaligned = (self.unaligned + count) % SAMPLES_PER_FRAME
            return self._open

    def after(self, epoch: int, span: Span) -> bool:
        """After the push: also covers silence inserted meanwhile. False if an interrupt came
        during the push (which may then have placed its audio after the interrupt)."""
        with self._lock:
            if epoch != self.epoch:
                return False
            span.last = max(span.last, self._index(self._head() - 1))
            return True

    def has_open(self) -> bool:
        with self._lock:
            return self._open is not None

    def close(self, epoch: int, end: Any) -> bool:
        """The segment's end; False if no span is open (nothing pushed, or interrupted)."""
        with self._lock:
            if epoch != self.epoch or self._open is None:
                return False
            self._open.closed, self._open.end, self._open = True, end, None
            return True

    def invalidate(self) -> None:
        """An interrupt begins: every frame from now on is idle; older work is dropped."""
        with self._lock:
            self.epoch += 1
            self._spans.clear()
            self._open = None

    def rebase(self) -> None:
        """Right after `session.interrupt()`: the new timeline starts at the session's next frame."""
        with self._lock:
            self._spans.clear()
            self._open = None
            self.unaligned = 0
            self._base_index = self._session.next_index
            self._base_sample = self._head()

    def classify(self, index: int) -> tuple[list[Span], Span | None, list[Span]]:
        """For frame `index`: the spans that ended before it, the span it shows (None: an idle
        frame), the spans that end with it."""
        with self._lock:
            before = []
            while self._spans and self._spans[0].closed and self._spans[0].last < index:
                before.append(self._spans.popleft())
            span = self._spans[0] if self._spans and self._spans[0].first <= index <= self._spans[0].last else None
            after = []
            if span is not None and span.closed and span.last == index:
                after.append(self._spans.popleft())
            return before, span, after

    @property
    def pending(self) -> bool:
        with self._lock:
            return bool(self._spans)


class FrameBridge:
    """`session.frames()` (blocking) on a daemon thread → the event loop, at most `depth`
    converted frames waiting: a semaphore, so the loop never waits on the thread."""

    _END = object()

    def __init__(self, session: LiveSession, loop: asyncio.AbstractEventLoop, depth: int,
                 convert: Callable[[LiveFrame], Any]) -> None:
        self._session, self._loop, self._convert = session, loop, convert
        self._queue: asyncio.Queue = asyncio.Queue()
        self._slots = threading.Semaphore(depth)
        self._stop = threading.Event()
        threading.Thread(target=self._run, name=f"ditto-fast-frames-{session.id}", daemon=True).start()

    def _run(self) -> None:
        try:
            for frame in self._session.frames():
                item = self._convert(frame)  # here, not on the loop: a frame's bytes are big
                while not self._slots.acquire(timeout=0.1):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                self._post(item)
            self._post(self._END)
        except Exception as exc:  # noqa: BLE001 - handed to the loop; a closed session just ends
            self._post(self._END if self._stop.is_set() or self._session.closed else exc)

    def _post(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody listens any more
            self._stop.set()

    async def get(self) -> Any:
        """The next converted frame; None once the frames ended; raises what stopped them."""
        item = await self._queue.get()
        if item is self._END:
            return None
        if isinstance(item, BaseException):
            raise item
        self._slots.release()
        return item

    def stop(self) -> None:
        self._stop.set()


class Driver:
    """The session's producer side for an async adapter, and the map from its frames to segments.

    `push`/`end_segment` run on one pusher thread in order (they block on the session's
    back-pressure); `interrupt` runs on the loop's default executor, so that it can unblock a push
    in progress; the coroutines themselves never block the loop."""

    def __init__(self, session: LiveSession) -> None:
        self.session = session
        self._spans = Spans(session)
        self._pusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ditto-fast-push-{session.id}")
        self._interrupt_lock = threading.Lock()
        self._interrupting: asyncio.Future | None = None
        self._resampler: tuple[int, int, soxr.ResampleStream] | None = None  # (rate, epoch, stream), pusher's
        self._bridge: FrameBridge | None = None

    async def _after_interrupt(self) -> int:
        if self._interrupting is not None and not self._interrupting.done():
            await asyncio.shield(self._interrupting)  # audio pushed after an interrupt follows it
        return self._spans.epoch

    async def push(self, pcm: np.ndarray, sample_rate: int, label: Any = None) -> None:
        """Speech: int16 or float (n,) or (n, channels), any rate; `label` tags its segment."""
        epoch = await self._after_interrupt()
        await asyncio.get_running_loop().run_in_executor(self._pusher, self._push, epoch, pcm, sample_rate, label)

    async def end_segment(self, end: Any = None) -> bool:
        """The segment's end (`end` is handed back with its last frame); False if there was no
        segment to end (nothing pushed since the last end or interrupt)."""
        epoch = await self._after_interrupt()
        return await asyncio.get_running_loop().run_in_executor(self._pusher, self._end_segment, epoch, end)

    async def interrupt(self) -> None:
        """From now on every frame is idle; the session drops its queued speech."""
        self._spans.invalidate()
        self._interrupting = asyncio.get_running_loop().run_in_executor(None, self._interrupt)
        await asyncio.shield(self._interrupting)

    def classify(self, index: int) -> tuple[list[Span], Span | None, list[Span]]:
        return self._spans.classify(index)

    @property
    def pending(self) -> bool:
        """Whether a segment's frames are still to come."""
        return self._spans.pending

    def frames(self, loop: asyncio.AbstractEventLoop, depth: int, convert: Callable[[LiveFrame], Any]) -> FrameBridge:
        self._bridge = FrameBridge(self.session, loop, depth, convert)
        return self._bridge

    async def close(self) -> None:
        """Stop the frame thread and close the session (idempotent)."""
        if self._bridge is not None:
            self._bridge.stop()
        await asyncio.get_running_loop().run_in_executor(None, self.session.close)
        self._pusher.shutdown(wait=False, cancel_futures=True)

    # -- the pusher thread -------------------------------------------------------------------------

    def _push(self, epoch: int, pcm: np.ndarray, sample_rate: int, label: Any) -> None:
        if epoch != self._spans.epoch:
            return  # queued before an interrupt
        mono = as_mono_16k(pcm, SAMPLE_RATE)  # downmix and scale only
        if sample_rate != SAMPLE_RATE:
            # Resampled here rather than in the session, so that a segment's tail is flushed at its
            # end (the session's resampler would hold it back until the next segment's audio).
            if self._resampler is None or self._resampler[:2] != (sample_rate, epoch):
                self._resampler = (sample_rate, epoch, soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, np.float32,
                                                                           "HQ"))
            mono = self._resampler[2].resample_chunk(mono)
        self._place(epoch, mono, label)

    def _end_segment(self, epoch: int, end: Any) -> bool:
        tail = np.zeros(0, np.float32)
        if self._resampler is not None:
            if self._resampler[1] == epoch:
                tail = self._resampler[2].resample_chunk(tail, last=True)
            self._resampler = None
        if not self._spans.has_open():
            return False
        # Padded to a whole frame, so that the next segment starts on a frame of its own.
        padding = -(self._spans.unaligned + len(tail)) % SAMPLES_PER_FRAME
        self._place(epoch, np.concatenate([tail, np.zeros(padding, np.float32)]), None)
        return self._spans.close(epoch, end)

    def _place(self, epoch: int, samples: np.ndarray, label: Any) -> None:
        if not len(samples):
            return
        span = self._spans.begin(epoch, len(samples), label)
        if span is None:
            return
        try:
            self.session.push(samples, SAMPLE_RATE)
        except RuntimeError:
            if self.session.closed:
                return
            raise
        if not self._spans.after(epoch, span):
            # An interrupt came during this push: had its audio landed after the interrupt, the
            # idle avatar would speak it, so interrupt once more (newer pushes wait for this one).
            self._interrupt()

    def _interrupt(self) -> None:
        with self._interrupt_lock:
            if self.session.closed:
                return
            self.session.interrupt()
            self._spans.rebase()


def to_int16(audio: np.ndarray) -> bytes:
    return np.clip(np.rint(audio * 32768.0), -32768, 32767).astype(np.int16).tobytes()
