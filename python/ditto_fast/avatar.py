"""A registered source: everything the renderer needs from a portrait or a video, computed once.

An `Avatar` can be saved and loaded (`.npz`, read without pickle), so a portrait is
registered once and reused for any number of renders.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MOTION_INFO_SHAPES = {"pitch": (66,), "yaw": (66,), "roll": (66,), "t": (3,), "exp": (63,), "scale": (1,),
                      "kp": (63,)}
FORMAT_VERSION = 1


class AvatarFileError(ValueError):
    """An avatar file is missing parts, has misshapen parts, or is not an avatar file."""


@dataclass(frozen=True, eq=False)
class Avatar:
    """Per source frame i (n frames; 1 for an image):

    - `motion[k][i]` the source motion info (k in pitch/yaw/roll logits, t, exp, scale, kp),
      each (1, d) as the motion extractor returns it, after video smoothing;
    - `f_s[i]` (1, 32, 16, 64, 64) the appearance feature volume;
    - `m_c2o[i]` (3, 3) crop-to-frame matrix; `eye_open[i]` (2,), `eye_ball[i]` (6,);
    - `frames[i]` (H, W, 3) uint8, the resized source frame (the paste-back background).

    `sc` (63,) is frame 0's canonical keypoints before smoothing (the condition's `sc` part).
    """

    motion: dict[str, np.ndarray]
    f_s: np.ndarray
    m_c2o: np.ndarray
    eye_open: np.ndarray
    eye_ball: np.ndarray
    sc: np.ndarray
    frames: np.ndarray
    is_image: bool
    source: str = ""
    settings: dict = field(default_factory=dict)  # the registration options, for the record

    def __post_init__(self) -> None:
        n = self.num_frames
        expected = {
            "f_s": (self.f_s, (n, 1, 32, 16, 64, 64)),
            "m_c2o": (self.m_c2o, (n, 3, 3)),
            "eye_open": (self.eye_open, (n, 2)),
            "eye_ball": (self.eye_ball, (n, 6)),
            "sc": (self.sc, (63,)),
        }
        expected.update({f"motion.{k}": (self.motion.get(k), (n, 1, *shape))
                         for k, shape in MOTION_INFO_SHAPES.items()})
        for name, (array, shape) in expected.items():
            if not isinstance(array, np.ndarray) or array.shape != shape:
                found = "missing" if array is None else f"shape {getattr(array, 'shape', type(array).__name__)}"
                raise AvatarFileError(f"avatar part {name}: expected shape {shape}, found {found}")
        if self.frames.ndim != 4 or self.frames.shape[0] != n or self.frames.shape[3] != 3:
            raise AvatarFileError(f"avatar frames: expected ({n}, H, W, 3), found {self.frames.shape}")
        if self.is_image and n != 1:
            raise AvatarFileError(f"an image avatar has one frame, found {n}")

    @property
    def num_frames(self) -> int:
        return int(self.m_c2o.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes its arrays hold (what a cache of avatars counts)."""
        arrays = [self.f_s, self.m_c2o, self.eye_open, self.eye_ball, self.sc, self.frames, *self.motion.values()]
        return sum(array.nbytes for array in arrays)

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the output video."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    def motion_info(self, index: int) -> dict[str, np.ndarray]:
        """Source frame `index`'s motion info, as the stages take it (each value (1, d))."""
        return {k: v[index] for k, v in self.motion.items()}

    def motion_rows(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """The motion info of several source frames at once (each value (n, 1, d))."""
        return {k: v[list(indices)] for k, v in self.motion.items()}

    def save(self, path: str | Path) -> Path:
        """Write the avatar as an `.npz` (written beside the target, then renamed)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        meta = {"format_version": FORMAT_VERSION, "is_image": self.is_image, "source": self.source,
                "settings": self.settings}
        arrays = {f"motion_{k}": v for k, v in self.motion.items()}
        arrays.update(f_s=self.f_s, m_c2o=self.m_c2o, eye_open=self.eye_open, eye_ball=self.eye_ball,
                      sc=self.sc, frames=self.frames, meta=np.array(json.dumps(meta)))
        partial = path.with_name(f".{path.name}.partial.npz")
        try:
            np.savez(partial, **arrays)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Avatar:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: avatar file not found")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (ValueError, OSError) as exc:
            raise AvatarFileError(f"{path}: not an avatar file ({exc})") from None
        try:
            meta = json.loads(str(arrays.pop("meta")))
        except (KeyError, json.JSONDecodeError):
            raise AvatarFileError(f"{path}: not an avatar file (no metadata)") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise AvatarFileError(f"{path}: avatar format {meta.get('format_version')} is not "
                                  f"{FORMAT_VERSION}; register the source again")
        try:
            return cls(
                motion={k: arrays[f"motion_{k}"] for k in MOTION_INFO_SHAPES if f"motion_{k}" in arrays},
                f_s=arrays.get("f_s"), m_c2o=arrays.get("m_c2o"), eye_open=arrays.get("eye_open"),
                eye_ball=arrays.get("eye_ball"), sc=arrays.get("sc"), frames=arrays.get("frames"),
                is_image=bool(meta["is_image"]), source=meta.get("source", ""), settings=meta.get("settings", {}),
            )
        except (AvatarFileError, AttributeError) as exc:
            raise AvatarFileError(f"{path}: {exc}") from None
