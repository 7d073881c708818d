"""Finished frames from the device into `FrameRing` slots: one copy per frame, committed in order.

On CUDA each copy runs on a copy stream of its own, after an event that marks the frame's
producing work on the caller's stream, so copies overlap the next frames' compute; the ring's
slots are page-locked when CUDA is on, which makes the copies truly asynchronous. A slot is
committed once its copy has landed. Off CUDA the copy is a plain one and commits at once.

At most `max_in_flight` slots are held uncommitted, and fewer than the ring has: a consumer waits
for frames in index order, so holding every free slot while waiting for another could deadlock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from ditto_fast._core import FrameRing, WriteSlot
from ditto_fast.gpu.streams import DeviceEvent, DeviceStream


@dataclass
class _Copy:
    slot: WriteSlot
    index: int
    landed: DeviceEvent
    # Kept alive until the copy has landed: the device frame's memory must not be reused before,
    # and the slot's memory is recycled only once no view of it is left.
    frame: torch.Tensor
    host: torch.Tensor


class RingWriter:
    """Copies (H, W, C) uint8 device frames into ring slots. Use as a context manager: leaving
    normally waits for the copies and commits them; leaving with an error gives their slots back."""

    def __init__(self, ring: FrameRing, device: torch.device | str, max_in_flight: int = 2) -> None:
        if max_in_flight < 1:
            raise ValueError(f"RingWriter: max_in_flight must be at least 1, got {max_in_flight}")
        self.ring = ring
        self.device = torch.device(device)
        self.max_in_flight = max(1, min(max_in_flight, ring.slots - 1))
        self.copy_stream = DeviceStream(self.device)
        self._in_flight: deque[_Copy] = deque()

    def write(self, index: int, frame: torch.Tensor) -> None:
        """Queue frame `index`, produced by work queued on the current stream, for the ring."""
        if frame.dtype != torch.uint8 or tuple(frame.shape) != tuple(self.ring.shape):
            raise ValueError(f"RingWriter: frame {index} is {tuple(frame.shape)} {frame.dtype}; the ring holds "
                             f"{tuple(self.ring.shape)} uint8 frames")
        self._commit_landed()
        while len(self._in_flight) >= self.max_in_flight:
            self._commit_oldest()
        produced = DeviceStream.current(self.device).record()
        slot = self.ring.acquire()
        try:
            host = torch.from_numpy(slot.array)
            self.copy_stream.wait(produced)
            with self.copy_stream.activate():
                host.copy_(frame, non_blocking=True)
            landed = self.copy_stream.record()
        except BaseException:
            slot.abandon()
            raise
        self._in_flight.append(_Copy(slot, index, landed, frame, host))
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

    def _commit_landed(self) -> None:
        # In order: the consumer takes frames by index, so a later frame never overtakes an earlier one.
        while self._in_flight and self._in_flight[0].landed.query():
            self._commit_oldest()

    def __enter__(self) -> RingWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.flush()
        else:
            self.abandon()
