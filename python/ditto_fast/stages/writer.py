"""H.264 + AAC mp4 output, encoded on its own thread, written so that an interrupted render never
leaves a broken file.

Frames are encoded into a temporary file in the system temp folder (`tempfile.gettempdir()`,
which honours TMPDIR); only a writer closed without error moves it to the target: renamed when
both are on one filesystem, else copied into a hidden temporary file beside the target and that
renamed, so the target path only ever holds a complete file. On error or Ctrl-C the temporary
files are removed and an existing file at the target is left untouched; a process killed outright
(SIGKILL) leaves at most the file in the temp folder, never a partial mp4 at or beside the target.

`write()` copies the frame into an encoder frame and returns, so the caller may reuse its
buffer (a ring slot) at once; a thread takes the frames from a small bounded queue, converts
them to yuv420p and runs libx264 and the muxer, all of which release the GIL. A full queue
blocks `write()`: memory stays bounded when the encoder is the slow end. An error on the
encoder thread is raised once, unchanged, by the next `write()` or by `close()`.

The reference encodes libx264 at crf 18 (preset medium), 25 fps, yuv420p, then muxes the input
audio file re-encoded to AAC with no `-shortest`; this writer does the same in one pass.

Encoder: "auto" (the default) uses NVIDIA's NVENC (`h264_nvenc`) when the driver offers it and
libx264 otherwise; at 2 MP libx264 costs 40–80 ms of CPU per frame, which real-time
high-resolution output cannot afford, while NVENC runs on the GPU's own encoder block. NVENC
gets constant-quality VBR at the same quality number (`cq` = crf) with preset p5; the x264
preset applies to libx264 only. Whether NVENC opens is probed once per process.

Default: crf 18, preset medium, the reference's settings, kept after measuring the faster presets
(bench/test_encoder_bench.py; 2-core EPYC, 1432x1432 moving content, CPU time of all x264 threads
per frame): medium ~70 ms, veryfast ~32 ms, ultrafast ~18 ms. At crf 18 veryfast's file came out
18 % smaller but 1.3 dB lower in luma PSNR, ultrafast's 3.3x larger; medium gives the reference's
quality and size. At 25 fps it needs about two cores' worth of x264, which a GPU host (16 cores
on the project's test machines) has to spare beside the renderer, the encoder having its own
thread. Where the CPU is the slow end, pass preset="veryfast" (CLI: --x264-preset veryfast).
"""

from __future__ import annotations

import errno
import functools
import os
import queue
import shutil
import tempfile
import threading
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from ditto_fast.errors import default_mode, one_line
from ditto_fast.runtime.threads import resolve_threads

FPS = 25
DEFAULT_CRF = 18
DEFAULT_PRESET = "medium"
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
CRF_RANGE = range(0, 52)  # x264's constant-quality scale for 8-bit video
# Frames waiting for the encoder (6 MB each at 1432x1432). A few absorb the encoder's uneven pace
# (x264 returns in bursts with frame threads and B-frames; it holds its lookahead on top of these);
# 1 to 8 made no measurable difference on a 2-core machine.
QUEUED_FRAMES = 4


ENCODERS = ("auto", "libx264", "h264_nvenc")
NVENC_PRESET = "p5"  # NVENC's p1 (fastest) .. p7 (best): p5 is the quality end of real-time


def nvenc_available() -> bool:
    """Whether `h264_nvenc` opens here: FFmpeg built with it, an NVIDIA driver and a free
    encoder session (probed once per process, with a tiny frame)."""
    return _nvenc_probe()


@functools.cache
def _nvenc_probe() -> bool:
    try:
        context = av.CodecContext.create("h264_nvenc", "w")
        context.width, context.height, context.pix_fmt = 256, 256, "yuv420p"
        context.time_base = Fraction(1, FPS)
        context.open()
    except (av.FFmpegError, ValueError, OSError):
        return False
    return True


def resolve_encoder(encoder: str = "auto") -> str:
    """The H.264 encoder `encoder` names: "auto" → h264_nvenc when it opens, else libx264."""
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; choose from {', '.join(ENCODERS)}")
    if encoder == "auto":
        return "h264_nvenc" if nvenc_available() else "libx264"
    if encoder == "h264_nvenc" and not nvenc_available():
        raise OutputError("h264_nvenc cannot be opened here (no NVIDIA driver, or FFmpeg without NVENC); "
                          "use encoder libx264 or auto")
    return encoder


class OutputError(OSError):
    """The output file cannot be written."""


def check_target(path: str | Path, inputs: tuple[str | Path, ...] = ()) -> Path:
    """Fail before any work if a file cannot be written at `path`: a folder, a missing or
    unwritable folder (tried by creating and removing a file in it), a file that is not writable,
    or one of `inputs` (which the new file would replace)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, not a file name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{path}: folder {folder} does not exist")
    try:  # os.access says yes to root on a read-only filesystem; creating a file tells
        fd, probe = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=".probe", dir=folder)
    except OSError as exc:
        raise OutputError(f"{path}: folder {folder} is not writable ({exc.strerror or one_line(exc)})") from None
    os.close(fd)
    os.unlink(probe)
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{path}: file exists and is not writable")
    for given in inputs:
        if path.exists() and Path(given).exists() and os.path.samefile(path, given):
            raise OutputError(f"{path}: is also an input ({given}); choose another output file")
    return path


def check_writable(path: str | Path, inputs: tuple[str | Path, ...] = ()) -> Path:
    """Fail before any work if `path` cannot become an mp4 file (see `check_target`)."""
    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".m4v", ".mov") and not path.is_dir():
        raise OutputError(f"{path}: output must be an .mp4 (or .m4v/.mov) file")
    return check_target(path, inputs)


def check_x264_options(crf: int | None = None, preset: str | None = None) -> tuple[int, str]:
    """(crf, preset) for libx264, None meaning DEFAULT_CRF / DEFAULT_PRESET; ValueError when
    either is not one x264 accepts."""
    crf = DEFAULT_CRF if crf is None else crf
    preset = DEFAULT_PRESET if preset is None else preset
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or crf not in CRF_RANGE:
        raise ValueError(f"x264 crf must be an integer from {CRF_RANGE.start} to {CRF_RANGE.stop - 1}, got {crf!r}")
    if preset not in X264_PRESETS:
        raise ValueError(f"unknown x264 preset {preset!r}; choose from {', '.join(X264_PRESETS)}")
    return int(crf), preset


class VideoWriter:
    """Encode RGB uint8 frames (H, W, 3) at 25 fps, with the audio of `audio_path` muxed in.

    `crf` (None: DEFAULT_CRF) is the quality number of either encoder, `preset` (None:
    DEFAULT_PRESET) libx264's; `encoder` is "auto", "libx264" or "h264_nvenc" (see the module
    docstring; `self.encoder` says which one runs). `threads` is libx264's frame threads, the
    thread budget (runtime/threads.py); None or 0 lets x264 choose for the cores it may use.
    Use it as a context manager, or end it with `close()` or `abort()`: either stops the
    encoder thread."""

    def __init__(self, path: str | Path, width: int, height: int, audio_path: str | Path | None = None,
                 crf: int | None = None, preset: str | None = None, encoder: str = "auto",
                 queued_frames: int = QUEUED_FRAMES, threads: int | None = None) -> None:
        self.path = check_writable(path, inputs=() if audio_path is None else (audio_path,))
        crf, preset = check_x264_options(crf, preset)
        # 0 is x264's "auto" (1.5 frame threads per core), which the budget's None/0 keeps.
        x264_threads = 0 if threads is None or threads == 0 else resolve_threads(threads)
        self.encoder = resolve_encoder(encoder)
        if width % 2 or height % 2:
            raise ValueError(f"{self.path}: yuv420p needs even frame sizes, got {width}x{height}")
        self.width, self.height = width, height
        self.frames = 0
        self._queue: queue.Queue[av.VideoFrame | None] = queue.Queue(maxsize=queued_frames)
        self._cancelled = threading.Event()
        self._failure: BaseException | None = None
        self._failure_raised = False
        self._encoder: threading.Thread | None = None
        self._end_queued = False
        fd, tmp = tempfile.mkstemp(prefix=f"ditto_fast_{self.path.stem[:100]}.", suffix=".partial.mp4")
        os.close(fd)
        self._tmp = Path(tmp)
        try:
            self._container = av.open(str(self._tmp), mode="w", format="mp4")
            self._video = self._container.add_stream(self.encoder, rate=FPS)
            self._video.width, self._video.height = width, height
            self._video.pix_fmt = "yuv420p"
            if self.encoder == "libx264":
                # PyAV asks codecs for slice threads unless told otherwise; x264's frame threads
                # (ffmpeg's choice, as in the reference) compress better and scale further
                # across cores.
                self._video.options = {"crf": str(crf), "preset": preset, "threads": str(x264_threads)}
                self._video.codec_context.thread_type = "FRAME"
            else:
                self._video.options = {"rc": "vbr", "cq": str(crf), "b": "0", "preset": NVENC_PRESET}
            self._video.codec_context.time_base = Fraction(1, FPS)
            self._audio_source = av.open(str(audio_path)) if audio_path is not None else None
            self._audio = self._add_audio_stream() if self._audio_source is not None else None
            self._encoder = threading.Thread(target=self._encode_queued, name="ditto-fast-encoder", daemon=True)
            self._encoder.start()
        except Exception:
            self._discard()
            raise

    def _add_audio_stream(self):
        source = self._audio_source.streams.audio
        if not source:
            raise ValueError(f"{self._audio_source.name}: has no audio stream to mux")
        rate = source[0].codec_context.sample_rate
        stream = self._container.add_stream("aac", rate=rate)
        stream.layout = "stereo" if source[0].codec_context.layout.nb_channels > 1 else "mono"
        return stream

    def write(self, rgb: np.ndarray) -> None:
        """Queue one frame; `rgb` is copied before this returns. Blocks while the queue is full."""
        self._raise_encoder_failure()
        if self._end_queued:  # nothing would take the frame from the queue
            raise OutputError(f"{self.path}: write() after close() or abort()")
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"{self.path}: frame {self.frames} is {rgb.dtype} {rgb.shape}, expected uint8 "
                             f"({self.height}, {self.width}, 3)")
        frame = self._copy_to_frame(rgb)
        frame.pts = self.frames
        self._queue.put(frame)
        self.frames += 1

    def _copy_to_frame(self, rgb: np.ndarray) -> av.VideoFrame:
        # One copy straight into the frame's buffer: VideoFrame.from_ndarray copies twice (through
        # bytes), about 5x slower at 1432x1432, and this copy is what the caller waits for.
        frame = av.VideoFrame(self.width, self.height, "rgb24")
        plane = frame.planes[0]
        rows = np.frombuffer(plane, np.uint8).reshape(self.height, plane.line_size)
        np.copyto(rows[:, :self.width * 3].reshape(self.height, self.width, 3), rgb)
        return frame

    def _encode_queued(self) -> None:
        """The encoder thread: encode and mux frames until the end marker (None). After an error
        or `abort()` it only drains the queue, so that a blocked `write()` always returns."""
        while (frame := self._queue.get()) is not None:
            if self._failure is not None or self._cancelled.is_set():
                continue
            try:
                self.encode_frame(frame)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._failure = exc

    def encode_frame(self, frame: av.VideoFrame | None) -> None:
        """Encode and mux one frame (None: flush the encoder). Runs on the encoder thread, never
        called by users; it is the documented seam where a test injects an encoder fault."""
        # encode() converts rgb24 to the stream's yuv420p (swscale) before libx264 sees it.
        self._container.mux(self._video.encode(frame))

    def _raise_encoder_failure(self) -> None:
        if self._failure is None:
            return
        if self._failure_raised:
            raise OutputError(f"{self.path}: the encoder failed earlier ({one_line(self._failure)})")
        self._failure_raised = True
        raise self._failure

    def _stop_encoder(self, cancel: bool) -> None:
        """End the encoder thread; with `cancel`, frames still queued are dropped, not encoded.
        Safe to call again after an interruption (Ctrl-C) cut a previous call short."""
        if self._encoder is None:
            return
        if cancel:
            self._cancelled.set()
        if not self._end_queued:
            self._queue.put(None)
            self._end_queued = True
        self._encoder.join()
        self._encoder = None

    def _mux_audio(self) -> None:
        # The whole input audio, re-encoded to AAC, like the reference's ffmpeg mux.
        # Frames carry their sample position as pts: the AAC encoder then marks its priming
        # samples with negative timestamps and the muxer writes an edit list that hides them,
        # so the track is as long as the input (not 1024 samples longer).
        resampler = av.AudioResampler(format="fltp", layout=self._audio.layout, rate=self._audio.rate)
        position = 0

        def encode(frames) -> None:
            nonlocal position
            for converted in frames:
                converted.pts, converted.time_base = position, Fraction(1, self._audio.rate)
                position += converted.samples
                self._container.mux(self._audio.encode(converted))

        for frame in self._audio_source.decode(audio=0):
            frame.pts = None
            encode(resampler.resample(frame))
        encode(resampler.resample(None))
        self._container.mux(self._audio.encode(None))

    def close(self) -> Path:
        """Wait for the encoder, finish the file and move it into place; returns its path.

        An encoder error not yet raised by `write()` is raised here, unchanged."""
        try:
            self._stop_encoder(cancel=False)
            self._raise_encoder_failure()
        except BaseException:
            self._discard()
            raise
        try:
            self.encode_frame(None)  # flush: x264 still holds its lookahead and B-frames
            if self._audio is not None:
                self._mux_audio()
            self._container.close()
            self._move_into_place()
        except Exception as exc:
            self._discard()
            raise OutputError(f"{self.path}: could not finish the video ({one_line(exc)})") from exc
        except BaseException:  # Ctrl-C while finishing: still no temporary file left behind
            self._discard()
            raise
        finally:
            if self._audio_source is not None:
                self._audio_source.close()
        return self.path

    def _move_into_place(self) -> None:
        """The finished temporary file to the target: a rename, or across filesystems a copy into
        a hidden file beside the target and a rename of that (the target is never partial)."""
        os.chmod(self._tmp, default_mode())
        try:
            os.replace(self._tmp, self.path)
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
        fd, beside = tempfile.mkstemp(prefix=f".{self.path.name[:100]}.", suffix=".partial.mp4",
                                   dir=self.path.parent)
        os.close(fd)
        try:
            shutil.copyfile(self._tmp, beside)
            os.chmod(beside, default_mode())
            os.replace(beside, self.path)
        finally:
            Path(beside).unlink(missing_ok=True)
        self._tmp.unlink()

    def abort(self) -> None:
        """Drop everything written so far; the target path is not touched."""
        self._discard()

    def _discard(self) -> None:
        try:
            # The encoder thread uses the container: it must stop before the container closes.
            self._stop_encoder(cancel=True)
            for handle in ("_container", "_audio_source"):
                resource = getattr(self, handle, None)
                if resource is not None:
                    try:
                        resource.close()
                    except Exception:  # noqa: BLE001 - already failing; the file is removed below
                        pass
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
