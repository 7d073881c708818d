"""Turning a session's frames into the messages of its video format (protocol.py): fMP4
fragments, JPEG frames or raw RGB frames.

Each encoder runs on the session's encoder thread only. `drops_when_full` is the slow-client
policy of the format: single frames can be dropped from jpeg/rgb, never from an H.264 stream.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from ditto_fast.serving.interface import LiveFrameLike
from ditto_fast.serving.outbox import Message
from ditto_fast.serving.protocol import FPS, OUTPUT_AUDIO_RATE, Start, init_message, pack_frame, pcm16

# Live fMP4 encoding, one encoder per session: a single x264 thread, so N sessions use N cores
# rather than N × cores threads, and preset veryfast, about half the CPU time of the writer's
# medium (measured ~9 vs ~19 ms per 512x512 frame, one thread, worst-case noise content).
LIVE_FMP4_OPTIONS = {"threads": 1, "preset": "veryfast"}


class FrameEncoder(Protocol):
    drops_when_full: bool
    width: int
    height: int

    def encode(self, frame: LiveFrameLike) -> list[tuple[Message, int]]:
        """Messages for this frame (possibly none yet), each with the frames it carries."""

    def finish(self) -> list[tuple[Message, int]]:
        """The messages still held at the end of the stream."""


class Fmp4Frames:
    """H.264 + AAC fragments; frames are announced by a text "init" message with the MIME type."""

    drops_when_full = False

    def __init__(self, height: int, width: int, fragment_frames: int) -> None:
        from ditto_fast.serving.fmp4 import FragmentedMp4Encoder

        # H.264 in yuv420p needs even sides: drop an odd last row or column.
        self.height, self.width = height - height % 2, width - width % 2
        self._encoder = FragmentedMp4Encoder(self.width, self.height, fps=FPS, audio_rate=OUTPUT_AUDIO_RATE,
                                             keyframe_interval=fragment_frames, **LIVE_FMP4_OPTIONS)
        self._held = 0  # frames pushed but not yet in a message
        self._announced = False

    def encode(self, frame: LiveFrameLike) -> list[tuple[Message, int]]:
        # Audio first: a player plays only where both tracks are buffered (fmp4.py).
        self._encoder.push_audio(np.asarray(frame.audio, np.float32))
        self._encoder.push_video(np.ascontiguousarray(frame.rgb[:self.height, :self.width]))
        self._held += 1
        return self._messages(self._encoder.take())

    def finish(self) -> list[tuple[Message, int]]:
        return self._messages(self._encoder.close())

    def _messages(self, data: bytes) -> list[tuple[Message, int]]:
        if not data:
            return []
        messages: list[tuple[Message, int]] = []
        if not self._announced:
            self._announced = True
            messages.append((init_message(self._encoder.mime_type or ""), 0))
        messages.append((data, self._held))
        self._held = 0
        return messages


class JpegFrames:
    drops_when_full = True

    def __init__(self, height: int, width: int, quality: int) -> None:
        self.height, self.width = height, width
        self._params = [cv2.IMWRITE_JPEG_QUALITY, quality]

    def encode(self, frame: LiveFrameLike) -> list[tuple[Message, int]]:
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR), self._params)
        if not ok:
            raise RuntimeError(f"frame {frame.index}: JPEG encoding failed")
        return [(pack_frame("jpeg", frame.index, frame.pts, pcm16(frame.audio), jpeg.tobytes()), 1)]

    def finish(self) -> list[tuple[Message, int]]:
        return []


class RgbFrames:
    drops_when_full = True

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width

    def encode(self, frame: LiveFrameLike) -> list[tuple[Message, int]]:
        rgb = np.ascontiguousarray(frame.rgb, np.uint8)
        return [(pack_frame("rgb", frame.index, frame.pts, pcm16(frame.audio), rgb.tobytes()), 1)]

    def finish(self) -> list[tuple[Message, int]]:
        return []


def make_encoder(start: Start, height: int, width: int) -> FrameEncoder:
    """The encoder of the start message's video format, for frames of `height` × `width`."""
    if start.video == "fmp4":
        return Fmp4Frames(height, width, start.fragment_frames)
    if start.video == "jpeg":
        return JpegFrames(height, width, start.jpeg_quality)
    return RgbFrames(height, width)
