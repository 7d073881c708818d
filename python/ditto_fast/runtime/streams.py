"""Streams and events that also work off CUDA, so pipeline code has one path for every device.

On CUDA they wrap `torch.cuda.Stream` / `torch.cuda.Event`. Elsewhere torch runs each operation
before returning, so a stream is just "now": activating it changes nothing, waits return at
once, and an event is complete as soon as it is recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def _is_cuda(device: torch.device) -> bool:
    return device.type == "cuda"


class DeviceStream:
    """A stream of its own on a CUDA device (a stand-in elsewhere); `cuda_stream` wraps an existing one."""

    def __init__(self, device: torch.device | str, cuda_stream: torch.cuda.Stream | None = None) -> None:
        self.device = torch.device(device)
        if not _is_cuda(self.device):
            self.cuda_stream = None
        else:
            self.cuda_stream = torch.cuda.Stream(self.device) if cuda_stream is None else cuda_stream

    @classmethod
    def current(cls, device: torch.device | str) -> DeviceStream:
        """The stream work on `device` is queued on right now (in this thread)."""
        device = torch.device(device)
        return cls(device, torch.cuda.current_stream(device) if _is_cuda(device) else None)

    @contextmanager
    def activate(self) -> Iterator[DeviceStream]:
        """Queue the work of the `with` block on this stream."""
        if self.cuda_stream is None:
            yield self
            return
        with torch.cuda.stream(self.cuda_stream):
            yield self

    def record(self) -> DeviceEvent:
        """An event that completes once the work queued on this stream so far has run."""
        return DeviceEvent(self.device).record(self)

    def wait(self, event: DeviceEvent) -> None:
        """Later work on this stream waits for `event` (the host does not wait)."""
        if self.cuda_stream is not None and event.cuda_event is not None:
            self.cuda_stream.wait_event(event.cuda_event)

    def wait_for_current(self) -> None:
        """Later work on this stream waits for what is queued on the current stream so far."""
        self.wait(DeviceStream.current(self.device).record())

    def synchronize(self) -> None:
        if self.cuda_stream is not None:
            self.cuda_stream.synchronize()


class DeviceEvent:
    """A point in a stream's work (a CUDA event; elsewhere one that is complete once recorded)."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.cuda_event = torch.cuda.Event() if _is_cuda(self.device) else None
        self._recorded = False

    def record(self, stream: DeviceStream | None = None) -> DeviceEvent:
        """Mark the work queued so far on `stream` (the current stream when None); returns self."""
        if self.cuda_event is not None:
            stream = stream or DeviceStream.current(self.device)
            self.cuda_event.record(stream.cuda_stream)
        self._recorded = True
        return self

    def query(self) -> bool:
        """Whether the marked work has run (never waits)."""
        if not self._recorded:
            raise RuntimeError("DeviceEvent: query() before record()")
        return self.cuda_event is None or self.cuda_event.query()

    def synchronize(self) -> None:
        """Wait on the host until the marked work has run."""
        if not self._recorded:
            raise RuntimeError("DeviceEvent: synchronize() before record()")
        if self.cuda_event is not None:
            self.cuda_event.synchronize()
