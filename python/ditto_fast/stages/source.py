"""Source loading (images and videos): read and size limit (DITTO_SPEC §5.1); the ping-pong
frame order is in `stages.frame_index`.

The loaded RGB frames are both the detector's input and the paste-back backgrounds, so the
size rule below also fixes the output video's frame size.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import cv2
import numpy as np

from ditto_fast.errors import one_line

# pipeline/frames.py (being rewritten elsewhere) still imports the frame order from here.

DEFAULT_MAX_SIZE = 1920
# Frame sides are floored to a multiple of this (the H.264 writer needs even sizes).
SIZE_DIVISION = 2


def check_resize(h: int, w: int, max_dim: int, division: int = SIZE_DIVISION) -> tuple[int, int, bool]:
    """(new_h, new_w, resized) for an h×w frame: the long side capped at `max_dim` (≤ 0: no cap),
    then both sides floored to a multiple of `division`."""
    new_h, new_w = h, w
    if max_dim > 0 and max(h, w) > max_dim:
        # Python's round (half to even) on the float ratio, as the reference.
        if h > w:
            new_h, new_w = max_dim, int(round(w * max_dim / h))
        else:
            new_h, new_w = int(round(h * max_dim / w)), max_dim
    new_h -= new_h % division
    new_w -= new_w % division
    return new_h, new_w, (new_h, new_w) != (h, w)


def resize_to_limit(frame: np.ndarray, max_size: int = DEFAULT_MAX_SIZE) -> np.ndarray:
    """`frame` resized (cv2 bilinear) to the size `check_resize` gives, or unchanged."""
    h, w = frame.shape[:2]
    new_h, new_w, resized = check_resize(h, w, max_size)
    if new_h == 0 or new_w == 0:
        raise ValueError(f"a {h}x{w} frame is too small: it would be resized to {new_h}x{new_w}")
    return cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR) if resized else frame


def load_image(path: str | os.PathLike[str], max_size: int = DEFAULT_MAX_SIZE) -> np.ndarray:
    """An image file (jpg, png, webp, ...) as RGB uint8 (h, w, 3), size-limited by `resize_to_limit`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not a readable image")
    try:
        return resize_to_limit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), max_size)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def load_video(path: str | os.PathLike[str], max_size: int = DEFAULT_MAX_SIZE,
               max_frames: int = -1) -> list[np.ndarray]:
    """A video's frames as RGB uint8, at most `max_frames` (all when <= 0); the first frame's
    size rule applies to every frame, as in the reference."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video file")
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: neither an image nor a video with a picture stream")
            for frame in container.decode(video=0):
                rgb = frame.to_ndarray(format="rgb24")
                if frames and rgb.shape != frames[0].shape:
                    rgb = cv2.resize(rgb, frames[0].shape[1::-1], interpolation=cv2.INTER_LINEAR)
                frames.append(rgb if frames else resize_to_limit(rgb, max_size))
                if 0 < max_frames <= len(frames):
                    break
    except av.EOFError:
        pass  # a stream cut short: the frames decoded so far (none: the error below)
    except av.FFmpegError as exc:  # its message repeats the errno and the file name; strerror is the news
        raise ValueError(f"{path}: not a readable image or video ({exc.strerror or one_line(exc)})") from None
    if not frames:
        raise ValueError(f"{path}: the video has no frames")
    return frames


def load_source(path: str | os.PathLike[str], max_size: int = DEFAULT_MAX_SIZE,
                max_frames: int = -1) -> tuple[list[np.ndarray], bool]:
    """(frames, is_image): an image file gives one frame; anything else is read as a video."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such source file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the source file is empty (0 bytes)")
    if cv2.haveImageReader(str(path)):
        return [load_image(path, max_size)], True
    return load_video(path, max_size, max_frames), False
