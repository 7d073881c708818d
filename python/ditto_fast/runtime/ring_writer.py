"""Finished frames into `FrameRing` slots, committed in index order: the last step of the frame
renderer on every device.

`ring_writer(ring, array_kind, device)` picks the writer for where frames are made:

- `HostRingWriter` (NumPy, the CPU): the output buffer *is* the ring slot, so paste-back writes
  the frame straight into it and leaving the `frame()` block commits it. No copy at all.
- `DeviceRingWriter` (torch tensors): paste-back writes a device buffer of the writer's own
  (allocated once per job, reused); leaving the block queues one copy into a ring slot on a copy
  stream, after an event that marks the frame's work on the caller's stream, so copies overlap
  the next frames' compute (the slots are page-locked when CUDA is on, which makes the copies
  asynchronous). A slot is committed only once its copy has landed; the host blocks only when
  `max_in_flight` copies are queued, or the ring is full. Off CUDA the copy is a plain one.

At most `max_in_flight` slots are held uncommitted, and fewer than the ring has: a consumer waits
for frames in index order, so holding every free slot while waiting for another could deadlock.
Both writers call `committed(index)` after each commit (the live session's statistics).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ditto_fast._core import FrameRing, WriteSlot

Committed = Callable[[int], None]


class HostRingWriter:
    """Frames made on the host, written straight into ring slots."""

    def __init__(self, ring: FrameRing, committed: Committed | None = None) -> None:
        self.ring = ring
        self.committed = committed

    @contextmanager
    def frame(self, index: int) -> Iterator[Any]:
        """The buffer frame `index` is to be written into; committed when the block ends normally,
        given back when it raises."""
        with self.ring.acquire() as slot:  # an error before commit gives the slot back
            yield slot.array
            slot.commit(index)
        if self.committed is not None:
            self.committed(index)

    def flush(self) -> None:
        """Nothing is ever pending on the host."""

    def __enter__(self) -> HostRingWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


@dataclass
class _Copy:
    slot: WriteSlot
    index: int
    landed: Any  # DeviceEvent
    buffer: Any  # the device frame, reused once the copy has landed
    host: Any  # the slot as a tensor: the slot's memory is recycled only once no view of it is left


class DeviceRingWriter:
    """Frames made on a torch device, copied once each into ring slots. Use as a context manager:
    leaving normally waits for the copies and commits them; leaving with an error gives their
    slots back."""

    def __init__(self, ring: FrameRing, device: Any, max_in_flight: int = 2,
                 committed: Committed | None = None) -> None:
        import torch

        from ditto_fast.runtime.streams import DeviceStream

        if max_in_flight < 1:
            raise ValueError(f"DeviceRingWriter: max_in_flight must be at least 1, got {max_in_flight}")
        self._torch = torch
        self.ring = ring
        self.device = torch.device(device)
        self.committed = committed
        self.max_in_flight = max(1, min(max_in_flight, ring.slots - 1))
        self.copy_stream = DeviceStream(self.device)
        self._current = DeviceStream.current
        self._in_flight: deque[_Copy] = deque()
        self._free: list[Any] = []  # device frame buffers whose copies have landed

    @contextmanager
    def frame(self, index: int) -> Iterator[Any]:
        """A device buffer for frame `index`, produced by work queued on the current stream; when
        the block ends normally, its copy into a slot is queued."""
        self._commit_landed()
        while len(self._in_flight) >= self.max_in_flight:
            self._commit_oldest()
        buffer = self._free.pop() if self._free else self._torch.empty(
            tuple(self.ring.shape), dtype=self._torch.uint8, device=self.device)
        try:
            yield buffer
        except BaseException:
            self._free.append(buffer)
            raise
        self._queue_copy(index, buffer)

    def _queue_copy(self, index: int, buffer: Any) -> None:
        produced = self._current(self.device).record()
        slot = self.ring.acquire()
        try:
            host = self._torch.from_numpy(slot.array)
            self.copy_stream.wait(produced)
            with self.copy_stream.activate():
                host.copy_(buffer, non_blocking=True)
            landed = self.copy_stream.record()
        except BaseException:
            slot.abandon()
            raise
        self._in_flight.append(_Copy(slot, index, landed, buffer, host))
        self._commit_landed()

    def flush(self) -> None:
        """Wait for every queued copy and commit it."""
        while self._in_flight:
            self._commit_oldest()

    def abandon(self) -> None:
        """Give the slots of queued copies back uncommitted (after the copies stop touching them)."""
        while self._in_flight:
            copy = self._in_flight.popleft()
            copy.landed.synchronize()
            copy.slot.abandon()

    def _commit_oldest(self) -> None:
        copy = self._in_flight.popleft()
        copy.landed.synchronize()
        copy.slot.commit(copy.index)
        self._free.append(copy.buffer)
        if self.committed is not None:
            self.committed(copy.index)

    def _commit_landed(self) -> None:
        # In order: the consumer takes frames by index, so a later frame never overtakes an earlier one.
        while self._in_flight and self._in_flight[0].landed.query():
            self._commit_oldest()

    def __enter__(self) -> DeviceRingWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.flush()
        else:
            self.abandon()


def ring_writer(ring: FrameRing, array_kind: str, device: Any = "cpu", *, max_in_flight: int = 2,
                committed: Committed | None = None) -> HostRingWriter | DeviceRingWriter:
    """The writer for frames made as `array_kind` arrays ("numpy" or "torch") on `device`."""
    if array_kind == "numpy":
        return HostRingWriter(ring, committed)
    return DeviceRingWriter(ring, device, max_in_flight, committed)
