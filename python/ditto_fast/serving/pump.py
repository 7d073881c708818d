"""The per-session encoder thread: takes frames from the engine, encodes them and queues the
messages for the event loop, applying the slow-client policy (protocol.py) on the way."""

from __future__ import annotations

import contextlib
import threading

from ditto_fast.serving.interface import LiveSessionLike
from ditto_fast.serving.outbox import Outbox
from ditto_fast.serving.video import FrameEncoder


class FramePump(threading.Thread):
    """Runs until the session's frames end, the engine fails, or the client is gone (the outbox
    closed). The outbox is finished in every case, with the failure if there was one."""

    def __init__(self, session: LiveSessionLike, encoder: FrameEncoder, outbox: Outbox,
                 frame_timeout: float) -> None:
        super().__init__(name=f"ditto-fast-pump-{session.id}", daemon=True)
        self.session, self.encoder, self.outbox = session, encoder, outbox
        self.frame_timeout = frame_timeout
        self.frames_encoded = 0
        self.frames_dropped = 0  # dropped here for a slow client (jpeg/rgb only)

    def run(self) -> None:
        failure: BaseException | None = None
        try:
            if self._take_frames():
                self._queue(self.encoder.finish())
        except BaseException as exc:  # handed to the event loop, which reports it to the client
            failure = exc
        finally:
            if failure is not None or self.outbox.closed:
                with contextlib.suppress(Exception):  # free the codecs; the stream is broken anyway
                    self.encoder.finish()
            self.outbox.finish(failure)

    def _take_frames(self) -> bool:
        """Encode frames until the stream ends (True) or the client is gone (False)."""
        for frame in self.session.frames(timeout=self.frame_timeout):
            if self.outbox.closed:
                return False
            if self.encoder.drops_when_full:
                if not self.outbox.has_room():
                    self.frames_dropped += 1  # dropped before the encoding work
                    continue
            elif not self.outbox.wait_for_room():
                # Not taking the next frame is the back-pressure: the engine's bounded queue
                # fills and the engine accounts for what it drops.
                return False
            self._queue(self.encoder.encode(frame))
            self.frames_encoded += 1
        return True

    def _queue(self, messages) -> None:
        for message, frames in messages:
            self.outbox.put(message, frames)
