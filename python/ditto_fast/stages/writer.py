"""H.264 + AAC mp4 output, written so that an interrupted render never leaves a broken file.

Frames are encoded into a hidden temporary file beside the target; only a writer closed
without error renames it into place (atomic on one filesystem). On error or Ctrl-C the
temporary file is removed and an existing file at the target is left untouched.

The reference encodes libx264 at crf 18 (preset medium), 25 fps, yuv420p, then muxes the input
audio file re-encoded to AAC with no `-shortest`; this writer does the same in one pass.
"""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from ditto_fast.errors import default_mode, one_line

FPS = 25
DEFAULT_CRF = 18
DEFAULT_PRESET = "medium"


class OutputError(OSError):
    """The output file cannot be written."""


def check_writable(path: str | Path) -> Path:
    """Fail before any work if `path` cannot become an mp4 file."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, not a file name")
    if path.suffix.lower() not in (".mp4", ".m4v", ".mov"):
        raise OutputError(f"{path}: output must be an .mp4 (or .m4v/.mov) file")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: folder {folder} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{path}: file exists and is not writable")
    return path


class VideoWriter:
    """Encode RGB uint8 frames (H, W, 3) at 25 fps, with the audio of `audio_path` muxed in."""

    def __init__(self, path: str | Path, width: int, height: int, audio_path: str | Path | None = None,
                 crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET, codec: str = "libx264") -> None:
        self.path = check_writable(path)
        if width % 2 or height % 2:
            raise ValueError(f"{self.path}: yuv420p needs even frame sizes, got {width}x{height}")
        self.frames = 0
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".partial.mp4", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        try:
            self._container = av.open(str(self._tmp), mode="w", format="mp4")
            self._video = self._container.add_stream(codec, rate=FPS)
            self._video.width, self._video.height = width, height
            self._video.pix_fmt = "yuv420p"
            # threads=0: x264 picks frame threads for the cores it has.
            self._video.options = {"crf": str(crf), "preset": preset, "threads": "0"}
            self._video.codec_context.time_base = Fraction(1, FPS)
            self._audio_source = av.open(str(audio_path)) if audio_path is not None else None
            self._audio = self._add_audio_stream() if self._audio_source is not None else None
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
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        self._container.mux(self._video.encode(frame))
        self.frames += 1

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
        """Finish the file and move it into place; returns its path."""
        try:
            self._container.mux(self._video.encode(None))
            if self._audio is not None:
                self._mux_audio()
            self._container.close()
            os.chmod(self._tmp, default_mode())
            os.replace(self._tmp, self.path)
        except Exception as exc:
            self._discard()
            raise OutputError(f"{self.path}: could not finish the video ({one_line(exc)})") from exc
        finally:
            if self._audio_source is not None:
                self._audio_source.close()
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; the target path is not touched."""
        self._discard()

    def _discard(self) -> None:
        for handle in ("_container", "_audio_source"):
            resource = getattr(self, handle, None)
            if resource is not None:
                try:
                    resource.close()
                except Exception:  # noqa: BLE001 - already failing; the file is removed below
                    pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
