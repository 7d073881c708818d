"""Fragmented MP4 (H.264 + AAC) produced while a stream runs, for browsers' Media Source Extensions.

The byte stream is an initialisation segment (ftyp + moov: codec set-up, empty sample tables,
`moov/mvex`) followed by one media segment (moof + mdat) per fragment; a browser appends it to a
`SourceBuffer` as it arrives. `take()` hands out only whole top-level boxes, so a fragment is never
split across two calls, and a consumer that joins late is sent `init_segment` and then the stream
from the next fragment on (each fragment starts with a keyframe).

Fragments and latency. A fragment is one GOP: `keyframe_interval` frames (default 25 = 1 s) and
the audio muxed meanwhile. The muxer closes a fragment when the next keyframe reaches it, so a
frame reaches `take()` at most `keyframe_interval` frame periods after it was pushed, plus one
frame unless the audio is pushed ~0.2 s ahead of the video (see MAX_INTERLEAVE_DELTA_US); the
first frame of a fragment waits longest, its last one least (on average half the interval).
That bound is the price of joinable fragments: a shorter interval cuts the delay for more
keyframes, i.e. bytes (measured figures in the class docstring). libx264 runs with
tune=zerolatency (no lookahead, no B-frames, slice threads), so each frame's packet leaves the
encoder in the `push_video()` call that gave it. The AAC encoder holds about two 1024-sample
frames and `push_audio()` the last partial one, so audio reaches a fragment ~0.2 s after it was
pushed. A player plays only where both tracks are buffered, so push the speech before the frames
rendered from it (the server has it first), and audio for the whole timeline (silence where
nobody speaks). The stream starts (init segment and fragment 1) only once the AAC encoder has
given its first packet: the muxer writes the moov when every track has a sample (delay_moov).

Timestamps: frame i is presented at i / fps s, audio sample n at n / audio_rate s, both from 0.
The AAC encoder's 1024 priming samples are hidden by an edit list in the moov (delay_moov).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np

from ditto_fast.runtime.threads import resolve_threads
from ditto_fast.stages.writer import FPS, NVENC_PRESET, check_x264_options, resolve_encoder

KEYFRAME_INTERVAL = 25  # frames: one joinable fragment per second at 25 fps
AUDIO_RATE = 16000
# Speech at 16 kHz mono; FFmpeg's AAC encoder would pick 69 kb/s for one channel.
AUDIO_BIT_RATE = 48_000
AAC_FRAME = 1024  # samples per AAC-LC frame; the encoder takes whole ones (a shorter one only last)

# frag_keyframe: cut a fragment at each keyframe, so every fragment is a place to start playing.
# empty_moov: the moov carries no samples (MSE's initialisation segment).
# default_base_moof: sample offsets relative to their moof, which MSE requires.
# delay_moov: write the moov when the first fragment is cut, once the first timestamps are known,
#   so the AAC priming goes into an edit list; without it FFmpeg shifts the whole timeline by the
#   64 ms of priming and stretches frame 0 to cover the gap (measured: frame 1 at 0.104 s).
# skip_trailer: no mfra index at close; the stream stays ftyp, moov, (moof, mdat)*.
MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof+delay_moov+skip_trailer"
# PyAV muxes through av_interleaved_write_frame, which holds video packets until an audio packet
# at least as late arrives (up to 10 s): a fragment would wait on the AAC encoder's delay, or for
# audio that stops coming. At 1 µs it holds only the latest packet, until a later one arrives.
MAX_INTERLEAVE_DELTA_US = 1


class _Sink:
    """The file object the muxer writes to, from inside `mux()` and `close()`. It has no seek():
    PyAV then opens it as a stream the muxer never rewinds, so bytes once handed out are final."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


def _boxes(data: bytes | bytearray) -> Iterator[tuple[bytes, int, int]]:
    """(type, start, end) of each whole top-level ISO-BMFF box at the start of `data`; stops at the
    first box not yet complete."""
    start = 0
    while start + 8 <= len(data):
        size, header = int.from_bytes(data[start:start + 4], "big"), 8
        if size == 1:  # a 64-bit size follows the type
            if start + 16 > len(data):
                return
            size, header = int.from_bytes(data[start + 8:start + 16], "big"), 16
        # Size 0 ("to the end of the file") is the only other case below the header size;
        # a fragmenting muxer writes none.
        if size < header or start + size > len(data):
            return
        yield bytes(data[start + 4:start + 8]), start, start + size
        start += size


class FragmentedMp4Encoder:
    """Encode RGB uint8 frames (H, W, 3) and mono float32 PCM into fragmented MP4 bytes.

    `crf`, `preset` and `encoder` are `stages.writer.VideoWriter`'s (defaults crf 18, preset
    medium, "auto" = NVENC where it opens, else libx264), checked by the same functions; both
    encoders run in low-latency mode with a keyframe every `keyframe_interval` frames and no
    B-frames. `threads` bounds libx264's slice threads (None or 0: x264 chooses for the cores).
    `audio_rate=None` makes a video-only stream.

    Measured at 512x512 (2-core EPYC, libx264 crf 18, a smooth moving test pattern, 48 kb/s
    audio): one `push_video()` (RGB to YUV and encode) takes 10 ms of wall time and 18 ms of CPU
    (both cores' x264 slice threads) at preset medium, 4 / 6 ms at veryfast, 2.4 / 3.3 ms at
    ultrafast. A 1 s fragment is ~100 kB of mdat plus a 343-byte moof (~0.8 Mb/s); with
    keyframe_interval=5 (0.2 s fragments) the stream is ~16 % larger.

    Threads: `push_video`, `push_audio` and `close` must come from one producer thread (they run
    the encoders and the muxer, which are not thread-safe); `take`, `init_segment` and
    `mime_type` may be read from any thread (a lock guards the bytes between the two sides).
    """

    def __init__(self, width: int, height: int, fps: int = FPS, audio_rate: int | None = AUDIO_RATE,
                 crf: int | None = None, preset: str | None = None, encoder: str = "auto",
                 keyframe_interval: int = KEYFRAME_INTERVAL, threads: int | None = None) -> None:
        crf, preset = check_x264_options(crf, preset)
        sizes = {"width": width, "height": height, "fps": fps, "keyframe_interval": keyframe_interval}
        if audio_rate is not None:
            sizes["audio_rate"] = audio_rate
        for name, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if width % 2 or height % 2:
            raise ValueError(f"yuv420p needs even frame sizes, got {width}x{height}")
        x264_threads = resolve_threads(threads) if threads else 0  # 0: x264's own choice
        self.encoder = resolve_encoder(encoder)
        self.width, self.height, self.fps = int(width), int(height), int(fps)
        self.audio_rate = None if audio_rate is None else int(audio_rate)
        self.frames = 0  # frames pushed; the next one is presented at frames / fps s
        self._audio_samples = 0  # samples given to the AAC encoder (the next frame's pts)
        self._pcm = np.zeros(0, np.float32)  # pushed samples short of a whole AAC frame
        self._closed = False
        self._sink = _Sink()
        self._ready = bytearray()  # whole boxes not yet taken
        self._lock = threading.Lock()
        self._head: bytearray | None = bytearray()  # the stream's start, until the moov is complete
        self._init: bytes | None = None

        self._container = av.open(self._sink, mode="w", format="mp4",
                                  options={"movflags": MOVFLAGS,
                                           "max_interleave_delta": str(MAX_INTERLEAVE_DELTA_US)})
        try:
            self._video = self._container.add_stream(self.encoder, rate=self.fps)
            self._video.width, self._video.height = self.width, self.height
            self._video.pix_fmt = "yuv420p"
            context = self._video.codec_context
            context.time_base = Fraction(1, self.fps)
            context.gop_size, context.max_b_frames = keyframe_interval, 0
            n = keyframe_interval
            if self.encoder == "libx264":
                # min-keyint and scenecut=0 make keyframes fall exactly every n frames (a scene
                # cut would start a short fragment). Slice threads, PyAV's default and
                # zerolatency's: the writer's frame threads would delay each packet by a frame
                # per thread.
                self._video.options = {"crf": str(crf), "preset": preset, "tune": "zerolatency",
                                       "threads": str(x264_threads),
                                       "x264-params": f"keyint={n}:min-keyint={n}:scenecut=0:bframes=0"}
                context.thread_type = "SLICE"
            else:
                # The writer's constant quality, plus NVENC's low-latency tuning: no reordering,
                # no output delay, IDR keyframes every n frames only.
                self._video.options = {"rc": "vbr", "cq": str(crf), "b": "0", "preset": NVENC_PRESET,
                                       "tune": "ll", "zerolatency": "1", "delay": "0", "no-scenecut": "1",
                                       "forced-idr": "1"}
            self._audio = None
            if self.audio_rate is not None:
                self._audio = self._container.add_stream("aac", rate=self.audio_rate)
                self._audio.layout = "mono"
                self._audio.bit_rate = AUDIO_BIT_RATE
        except Exception:
            self._container.close()
            raise

    @property
    def init_segment(self) -> bytes | None:
        """The ftyp + moov bytes, once the muxer has written them (with the first fragment)."""
        return self._init

    @property
    def mime_type(self) -> str | None:
        """The type to give `MediaSource.addSourceBuffer`, e.g. 'video/mp4; codecs="avc1.64001f,
        mp4a.40.2"', once the init segment exists."""
        if self._init is None:
            return None
        # avc1.PPCCLL is the profile, constraint and level bytes that open the avcC record. The
        # first "avcC" in the moov is that box's type: before it come headers of small numbers
        # (times are 0 in a fragmented file) and handler names.
        at = self._init.find(b"avcC") + 4
        codecs = f"avc1.{self._init[at + 1:at + 4].hex()}"
        if self._audio is not None:
            codecs += ", mp4a.40.2"  # AAC-LC, FFmpeg's AAC encoder's profile
        return f'video/mp4; codecs="{codecs}"'

    def push_video(self, rgb: np.ndarray) -> None:
        """Encode the next frame (presented at `frames / fps` s); `rgb` may be reused on return."""
        self._check_open("push_video")
        if not isinstance(rgb, np.ndarray) or rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
            raise ValueError(f"frame {self.frames} is {got}, expected uint8 ({self.height}, {self.width}, 3)")
        # One copy straight into the frame's buffer, as the writer does (from_ndarray copies twice);
        # encode() converts rgb24 to the stream's yuv420p.
        frame = av.VideoFrame(self.width, self.height, "rgb24")
        plane = frame.planes[0]
        rows = np.frombuffer(plane, np.uint8).reshape(self.height, plane.line_size)
        np.copyto(rows[:, :self.width * 3].reshape(self.height, self.width, 3), rgb)
        frame.pts = self.frames
        self._mux(self._video.encode(frame))
        self.frames += 1
        self._publish()

    def push_audio(self, pcm: np.ndarray) -> None:
        """Encode mono float32 samples at `audio_rate`, any number; they continue the samples pushed
        before (sample n is presented at n / audio_rate s). A partial AAC frame waits for more."""
        self._check_open("push_audio")
        if self._audio is None:
            raise RuntimeError("push_audio() on a video-only encoder (audio_rate=None)")
        if not isinstance(pcm, np.ndarray) or pcm.ndim != 1 or pcm.dtype != np.float32:
            got = f"{pcm.dtype} {pcm.shape}" if isinstance(pcm, np.ndarray) else type(pcm).__name__
            raise ValueError(f"audio is {got}, expected float32 (samples,) mono at {self.audio_rate} Hz")
        pending = np.concatenate((self._pcm, pcm))
        whole = len(pending) - len(pending) % AAC_FRAME
        for start in range(0, whole, AAC_FRAME):
            self._encode_audio(pending[start:start + AAC_FRAME])
        self._pcm = pending[whole:]
        self._publish()

    def take(self) -> bytes:
        """The bytes produced since the last call (b"" if none): whole boxes, in stream order."""
        with self._lock:
            data = bytes(self._ready)
            self._ready.clear()
        return data

    def close(self) -> bytes:
        """Flush the encoders, finish the stream and return the bytes not yet taken. Calling it
        again returns b"" (or what was left untaken)."""
        if self._closed:
            return self.take()
        self._closed = True
        try:
            if self._audio is not None:
                if len(self._pcm):
                    self._encode_audio(self._pcm)  # the AAC encoder accepts a short last frame
                self._mux(self._audio.encode(None))
            self._mux(self._video.encode(None))
        except BaseException:
            with contextlib.suppress(Exception):  # already failing: free the codecs at least
                self._container.close()
            raise
        self._container.close()  # writes the last fragment
        self._publish(final=True)
        return self.take()

    def _check_open(self, method: str) -> None:
        if self._closed:
            raise RuntimeError(f"{method}() after close()")

    def _encode_audio(self, samples: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(samples[None], format="fltp", layout="mono")
        # Sample positions as pts: the encoder then stamps its priming packet -1024, which the
        # muxer turns into the edit list (see MOVFLAGS).
        frame.sample_rate, frame.time_base = self.audio_rate, Fraction(1, self.audio_rate)
        frame.pts = self._audio_samples
        self._audio_samples += len(samples)
        self._mux(self._audio.encode(frame))

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            self._container.mux(packet)

    def _publish(self, final: bool = False) -> None:
        """Move the whole boxes the muxer has written into the bytes `take()` returns (all bytes
        when `final`). The muxer writes a fragment in one go, but a buffer flush may split it."""
        data = self._sink.data
        end = len(data) if final else max((box_end for _, _, box_end in _boxes(data)), default=0)
        if not end:
            return
        chunk = bytes(data[:end])
        del data[:end]
        if self._head is not None:  # the init segment is the stream's start up to the moov's end
            self._head += chunk
            moov_end = next((box_end for kind, _, box_end in _boxes(self._head) if kind == b"moov"), None)
            if moov_end is not None:
                self._init, self._head = bytes(self._head[:moov_end]), None
        with self._lock:
            self._ready += chunk
