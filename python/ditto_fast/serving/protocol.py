"""The live-session protocol of `ditto-fast serve`: messages, limits and their checks.

This docstring is the protocol's reference. One WebSocket at `/v1/session` carries one live
session: the client sends speech, the server sends the talking-head video rendered from it.

Authentication. When the server runs with a token, the handshake must carry
`Authorization: Bearer <token>` or the query `?token=<token>` (browsers cannot set headers on a
WebSocket); otherwise the server closes it before accepting, with code 1008 (over HTTP the
client sees the handshake refused with status 403).

Client → server
---------------
Text messages are JSON objects with a "type":

- `{"type": "start", ...}` — first message, exactly once. Fields:
  - `"avatar"`: an id from `POST /v1/avatars` (or an earlier start), or
  - `"image"`: the portrait itself, base64 (standard alphabet, no `data:` prefix), at most
    `Limits.max_image_bytes` once decoded; the server registers it and reuses it by content.
  - `"avatar_options"` (object, optional): registration options (e.g. `{"crop_scale": 2.3}`),
    used with `"image"` only.
  - `"options"` (object, optional): render options for the session (e.g. `{"emo": 4}`).
  - `"chunksize"` (optional, default `[3, 5, 2]`): past, current and future frames per window.
  - `"video"` (optional, default `"fmp4"`): `"fmp4"`, `"jpeg"` or `"rgb"`, see below.
  - `"sample_rate"` (optional, default 16000): the rate of the PCM the client will send,
    `Limits.min_sample_rate`..`Limits.max_sample_rate`.
  - `"jpeg_quality"` (optional, 1-100, default 85): for `"jpeg"`.
  - `"fragment_frames"` (optional, 1-50, default 10): frames per fMP4 fragment. A fragment
    leaves the server when it is complete, so this is also the video's added latency
    (10 frames = 0.4 s); fewer frames cost more bytes (a keyframe per fragment).
- `{"type": "interrupt"}` — drop the speech queued but not yet rendered; the avatar goes idle.
- `{"type": "controls", "<name>": value, ...}` — change live controls, e.g.
  `{"type": "controls", "emo": 3}`; unknown names or bad values are errors.
- `{"type": "end"}` — no more audio: the server sends the remaining frames, then the stats,
  then closes with 1000. Any message after it is an error.

Binary messages are audio: PCM signed 16-bit little-endian mono at the start's sample rate,
an even number of bytes, at most `Limits.max_message_bytes` each (40 ms pieces are typical).
Audio may run at most `Limits.max_pending_audio_s` ahead of real time, counted from the first
audio message (an interrupt restarts the count): pace it as a microphone would. A client that
has a whole file may send it in one go if it is shorter than that.

Server → client
---------------
- `{"type": "started", "session": id, "avatar": id, "width": W, "height": H, "fps": 25,
  "video": format, "sample_rate": rate, "audio_rate": 16000, "max_pending_audio_s": s}` —
  after the start, before any video. `width`/`height` are the frames' size (for fMP4 floored
  to even numbers, as H.264 needs).
- Video, as binary messages:
  - `"fmp4"`: fragmented MP4 (H.264 + AAC of the session's audio timeline, speech and the
    silence inserted while idle). First a text message `{"type": "init", "mime_type":
    'video/mp4; codecs="avc1.64001f, mp4a.40.2"'}` (the string for
    `MediaSource.addSourceBuffer`), then binary messages of whole boxes: the first starts with
    the initialisation segment (ftyp + moov), each holds whole fragments (moof + mdat). Their
    concatenation is a playable MP4.
  - `"jpeg"` / `"rgb"`: one message per frame: a 20-byte header
    `struct "<4sIdI"` = magic (`b"DFJ1"` jpeg, `b"DFR1"` rgb), frame index (uint32), pts in
    seconds on the session's audio clock (float64, index / 25), audio sample count N (uint32),
    then the frame's audio as N int16 little-endian samples at 16 kHz (its 40 ms slice of the
    timeline, so a player can keep sound and picture in step), then the image: a JPEG file, or
    H × W × 3 bytes of RGB, rows top to bottom. `unpack_frame()` parses it.
- `{"type": "stats", ...}` — after the last frame of an ended session: the engine's session
  statistics (`first_frame_latency_s`, `real_time_factor`, `frames_emitted`, `late_frames`,
  `dropped_frames`, `idle_frames`, `audio_seconds`) plus the server's `frames_sent` and
  `slow_client_dropped_frames`.
- `{"type": "error", "message": "one line"}` — then the server closes the socket; close codes:
  1008 bad message or authentication, 1009 message too big, 1011 server or engine failure,
  1013 server busy (every session slot taken; the message starts with "busy").
  An error ends only that session.

Slow clients. The server holds at most `Limits.max_queued_video_s` seconds (and
`Limits.max_queued_video_bytes`) of encoded video per session. When a client reads slower than
that, for `"jpeg"`/`"rgb"` whole frames are dropped before encoding (the frame indices then
skip; `slow_client_dropped_frames` counts them); for `"fmp4"`, which cannot lose frames without
breaking the H.264 stream and the audio, the server stops taking frames from the engine, whose
own bounded queues then apply back-pressure: the engine pauses that session's rendering, then
its audio intake, and the server in turn stops reading the client's socket (an engine that drops
frames instead counts them in `dropped_frames`). Other sessions are not slowed. Either way the
server's memory per session stays bounded. A client that takes nothing for
`Limits.send_timeout_s` is disconnected.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FPS = 25
OUTPUT_AUDIO_RATE = 16000  # the rate of the session's audio timeline (LiveFrame.audio)
VIDEO_FORMATS = ("fmp4", "jpeg", "rgb")
DEFAULT_CHUNKSIZE = (3, 5, 2)
DEFAULT_SAMPLE_RATE = 16000
DEFAULT_JPEG_QUALITY = 85
DEFAULT_FRAGMENT_FRAMES = 10
MAX_FRAGMENT_FRAMES = 50

# The jpeg/rgb frame header: magic, frame index, pts (s), audio sample count.
FRAME_HEADER = struct.Struct("<4sIdI")
FRAME_MAGIC = {"jpeg": b"DFJ1", "rgb": b"DFR1"}

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008  # a bad message, or authentication
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_BUSY = 1013  # "try again later"


class ProtocolError(ValueError):
    """A message the protocol does not allow; its text is the one line the client is sent."""

    close_code = CLOSE_POLICY


class MessageTooBig(ProtocolError):
    close_code = CLOSE_TOO_BIG


@dataclass(frozen=True)
class Limits:
    """Every bound the service enforces, in one place (the defaults suit a LAN deployment)."""

    max_message_bytes: int = 256 << 10  # any WebSocket message but the start (2.7 s of 48 kHz PCM)
    max_image_bytes: int = 10 << 20  # an avatar image: start's "image" decoded, or an upload
    max_audio_upload_bytes: int = 64 << 20  # POST /v1/render's audio file
    min_sample_rate: int = 8000
    max_sample_rate: int = 48000
    max_pending_audio_s: float = 30.0  # audio ahead of real time (module docstring)
    max_queued_video_s: float = 2.0  # encoded video held per session for a slow client
    max_queued_video_bytes: int = 32 << 20  # the same bound in bytes (rgb frames are large)
    max_stored_avatar_bytes: int = 512 << 20  # uploaded avatar files kept for POST /v1/render
    max_concurrent_renders: int = 1  # POST /v1/render jobs at once; more get 503
    start_timeout_s: float = 30.0  # from accept to the start message
    frame_timeout_s: float = 30.0  # no frame from the engine for this long: the session failed
    send_timeout_s: float = 30.0  # one message not taken by the client for this long: dropped

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"Limits.{name} must be a positive number, got {value!r}")
        if self.min_sample_rate > self.max_sample_rate:
            raise ValueError("Limits.min_sample_rate is above Limits.max_sample_rate")

    @property
    def max_start_message_bytes(self) -> int:
        """The start message's bound: room for the largest image in base64 plus its fields."""
        return max(self.max_message_bytes, 4 * math.ceil(self.max_image_bytes / 3) + (64 << 10))

    @property
    def max_queued_frames(self) -> int:
        return max(1, round(self.max_queued_video_s * FPS))


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Start:
    avatar: str | None = None
    image: bytes | None = None
    avatar_options: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    chunksize: tuple[int, int, int] = DEFAULT_CHUNKSIZE
    video: str = "fmp4"
    sample_rate: int = DEFAULT_SAMPLE_RATE
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    fragment_frames: int = DEFAULT_FRAGMENT_FRAMES


@dataclass(frozen=True)
class Interrupt:
    pass


@dataclass(frozen=True)
class Controls:
    controls: dict[str, Any]


@dataclass(frozen=True)
class End:
    pass


ClientMessage = Start | Interrupt | Controls | End
_START_FIELDS = {"type", "avatar", "image", "avatar_options", "options", "chunksize", "video", "sample_rate",
                 "jpeg_quality", "fragment_frames"}


def parse_text(text: str, limits: Limits) -> ClientMessage:
    """A client's text message as a typed message; ProtocolError says what is wrong with it."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_start_message_bytes:
        raise MessageTooBig(f"message of {size} bytes is over the limit of {limits.max_start_message_bytes}")
    try:
        message = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ProtocolError("text messages must be JSON objects; this one is not valid JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"text messages must be JSON objects, got {type(message).__name__}")
    kind = message.get("type")
    if kind != "start" and size > limits.max_message_bytes:
        raise MessageTooBig(f"message of {size} bytes is over the limit of {limits.max_message_bytes}")
    if kind == "start":
        return _parse_start(message, limits)
    if kind in ("interrupt", "end"):
        extra = set(message) - {"type"}
        if extra:
            raise ProtocolError(f"{kind} takes no fields, got {', '.join(sorted(extra))}")
        return Interrupt() if kind == "interrupt" else End()
    if kind == "controls":
        controls = {key: value for key, value in message.items() if key != "type"}
        if not controls:
            raise ProtocolError("controls names no control")
        return Controls(controls)
    raise ProtocolError(f"unknown message type {kind!r}: expected start, interrupt, controls or end")


def _parse_start(message: dict[str, Any], limits: Limits) -> Start:
    unknown = set(message) - _START_FIELDS
    if unknown:
        raise ProtocolError(f"start: unknown field {sorted(unknown)[0]!r}")
    if ("avatar" in message) == ("image" in message):
        raise ProtocolError("start needs exactly one of \"avatar\" (an id) and \"image\" (base64)")
    avatar = message.get("avatar")
    if avatar is not None and not (isinstance(avatar, str) and 0 < len(avatar) <= 128):
        raise ProtocolError("start: \"avatar\" must be an id string")
    image = _decode_image(message["image"], limits) if "image" in message else None
    video = message.get("video", "fmp4")
    if video not in VIDEO_FORMATS:
        raise ProtocolError(f"start: \"video\" must be one of {', '.join(VIDEO_FORMATS)}, got {video!r}")
    return Start(
        avatar=avatar, image=image, video=video,
        avatar_options=_object(message, "avatar_options"), options=_object(message, "options"),
        chunksize=_chunksize(message.get("chunksize", list(DEFAULT_CHUNKSIZE))),
        sample_rate=check_sample_rate(message.get("sample_rate", DEFAULT_SAMPLE_RATE), limits),
        jpeg_quality=_integer(message, "jpeg_quality", DEFAULT_JPEG_QUALITY, 1, 100),
        fragment_frames=_integer(message, "fragment_frames", DEFAULT_FRAGMENT_FRAMES, 1, MAX_FRAGMENT_FRAMES),
    )


def _decode_image(text: Any, limits: Limits) -> bytes:
    if not isinstance(text, str) or not text:
        raise ProtocolError("start: \"image\" must be a base64 string")
    if len(text) > 4 * math.ceil(limits.max_image_bytes / 3):
        raise MessageTooBig(f"start: the image is over the limit of {limits.max_image_bytes} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("start: \"image\" is not valid base64") from None


def _object(message: dict[str, Any], name: str) -> dict[str, Any]:
    value = message.get(name, {})
    if not isinstance(value, dict):
        raise ProtocolError(f"start: {name!r} must be an object")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(message: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = message.get(name, default)
    if not _is_int(value) or not low <= value <= high:
        raise ProtocolError(f"start: {name!r} must be an integer {low}..{high}, got {value!r}")
    return value


def _chunksize(value: Any) -> tuple[int, int, int]:
    # The engine checks the values' meaning; the shape is the protocol's.
    if not (isinstance(value, list) and len(value) == 3 and all(_is_int(v) and 0 <= v <= 1000 for v in value)):
        raise ProtocolError(f"start: \"chunksize\" must be three non-negative integers, got {value!r}")
    return tuple(value)


def check_sample_rate(rate: Any, limits: Limits) -> int:
    """`rate` as an int, if the protocol accepts it."""
    if not _is_int(rate) or not limits.min_sample_rate <= rate <= limits.max_sample_rate:
        raise ProtocolError(f"sample_rate must be an integer {limits.min_sample_rate}..{limits.max_sample_rate} Hz, "
                            f"got {rate!r}")
    return rate


def pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as the protocol's int16 little-endian PCM (clipped, rounded)."""
    return (np.clip(np.asarray(samples, np.float32), -1.0, 1.0) * 32767.0).round().astype("<i2")


def parse_audio(data: bytes, limits: Limits) -> np.ndarray:
    """A binary message as int16 samples (a view of `data`)."""
    if len(data) > limits.max_message_bytes:
        raise MessageTooBig(f"audio message of {len(data)} bytes is over the limit of {limits.max_message_bytes}")
    if not data or len(data) % 2:
        raise ProtocolError(f"audio messages are int16 PCM: an even, non-zero byte count, got {len(data)}")
    return np.frombuffer(data, "<i2")


class AudioBudget:
    """How far a session's audio runs ahead of real time (module docstring): the bound keeps one
    client from queueing unlimited speech in the engine."""

    def __init__(self, limits: Limits, clock=time.monotonic) -> None:
        self.limit, self.clock = limits.max_pending_audio_s, clock
        self.reset()

    def reset(self) -> None:
        self.started: float | None = None
        self.seconds = 0.0

    def add(self, samples: int, sample_rate: int) -> None:
        now = self.clock()
        if self.started is None:
            self.started = now
        ahead = self.seconds + samples / sample_rate - (now - self.started)
        if ahead > self.limit:
            raise ProtocolError(f"audio is {ahead:.1f} s ahead of real time, over the limit of {self.limit:g} s: "
                                "send it at the pace it plays")
        self.seconds += samples / sample_rate


# ----------------------------------------------------------------------------- server messages


def started_message(session: str, avatar: str, width: int, height: int, start: Start, limits: Limits) -> str:
    return json.dumps({"type": "started", "session": session, "avatar": avatar, "width": width, "height": height,
                       "fps": FPS, "video": start.video, "sample_rate": start.sample_rate,
                       "audio_rate": OUTPUT_AUDIO_RATE, "max_pending_audio_s": limits.max_pending_audio_s})


def init_message(mime_type: str) -> str:
    return json.dumps({"type": "init", "mime_type": mime_type})


def error_message(message: str) -> str:
    return json.dumps({"type": "error", "message": message})


def stats_message(stats: dict[str, Any]) -> str:
    return json.dumps({"type": "stats", **stats}, default=_jsonable)


def _jsonable(value: Any) -> Any:
    # Engine statistics may hold NumPy scalars or tuples.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def pack_frame(video: str, index: int, pts: float, audio: np.ndarray, image: bytes) -> bytes:
    """A jpeg/rgb frame message: header, int16 audio, image bytes (module docstring)."""
    pcm = np.asarray(audio, "<i2")
    return FRAME_HEADER.pack(FRAME_MAGIC[video], index, pts, pcm.size) + pcm.tobytes() + image


@dataclass(frozen=True)
class FrameMessage:
    video: str
    index: int
    pts: float
    audio: np.ndarray  # int16 at 16 kHz
    image: bytes  # a JPEG file, or H × W × 3 RGB bytes


def unpack_frame(data: bytes) -> FrameMessage:
    """Parse a jpeg/rgb frame message (clients' half of `pack_frame`)."""
    if len(data) < FRAME_HEADER.size:
        raise ValueError(f"a frame message is at least {FRAME_HEADER.size} bytes, got {len(data)}")
    magic, index, pts, samples = FRAME_HEADER.unpack_from(data)
    video = next((name for name, value in FRAME_MAGIC.items() if value == magic), None)
    if video is None:
        raise ValueError(f"not a frame message: magic {magic!r}")
    image_at = FRAME_HEADER.size + 2 * samples
    if len(data) < image_at:
        raise ValueError(f"frame {index}: {samples} audio samples announced, message too short")
    audio = np.frombuffer(data, "<i2", count=samples, offset=FRAME_HEADER.size)
    return FrameMessage(video, index, pts, audio, data[image_at:])
