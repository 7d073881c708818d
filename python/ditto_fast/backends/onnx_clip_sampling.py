"""Clip sampling (backends/clip_sampling.py) for LMDM from the hoisted ONNX graphs ditto_fast exports.

`ditto-fast export-onnx` writes two graphs beside `lmdm_v0.4_hubert.onnx`:

- `lmdm_v0.4_hubert_hoisted_prepare.onnx`: (cond_frame, cond, time_cond (S,)) → the clip's caches
  (stacked per-layer cross-attention keys/values, FiLM modulations of every step, ...);
- `lmdm_v0.4_hubert_hoisted_step.onnx`: (x, time_cond, step, the caches) → (pred_noise, x_start).

The caches stay in onnxruntime values between the steps of a clip, so each step hands over only
x and the step index. Official trees have no such files; their LMDM runs the plain graph.

Both graphs carry the SHA-256 of the plain graph they were exported with (model metadata), so a
pair left beside another LMDM (say, an official graph copied over the exported one) is refused
instead of silently sampling with other weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

PREPARE_INPUTS = ("cond_frame", "cond", "time_cond")
STEP_OWN_INPUTS = ("x", "time_cond", "step")  # the step graph's other inputs are the prepare graph's outputs
STEP_OUTPUTS = ("pred_noise", "x_start")
PLAIN_GRAPH_KEY = "ditto_fast.plain_graph_sha256"  # model metadata of both hoisted graphs


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 16 MiB chunks (LMDM graphs are ~200 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class HoistedLmdmFiles:
    """Where the "prepare clip" and "guided step" graphs of one plain LMDM graph live."""

    prepare: Path
    step: Path

    @classmethod
    def beside(cls, lmdm_onnx: str | Path) -> HoistedLmdmFiles:
        """The hoisted graphs' paths for the plain LMDM graph `lmdm_onnx` (same folder and stem)."""
        lmdm_onnx = Path(lmdm_onnx)
        stem = lmdm_onnx.name.removesuffix(".onnx")
        return cls(*(lmdm_onnx.with_name(f"{stem}_hoisted_{graph}.onnx") for graph in ("prepare", "step")))


@dataclass(frozen=True)
class OnnxClip:
    """One prepared clip: the step graph's inputs other than x and the step index."""

    feeds: dict[str, ort.OrtValue]
    steps: int


def _names(nodes) -> list[str]:
    return [node.name for node in nodes]


class OnnxClipSampling:
    """The two hoisted LMDM graphs in onnxruntime sessions, offering clip sampling."""

    def __init__(self, files: HoistedLmdmFiles, open_session: Callable[[Path], ort.InferenceSession],
                 plain_graph_sha256: str) -> None:
        """open_session: path → session, with the same options and providers as the plain LMDM's;
        plain_graph_sha256: that of the plain LMDM graph the pair must have been exported with."""
        self.files = files
        self._prepare = open_session(files.prepare)
        self._step = open_session(files.step)
        for path, session in ((files.prepare, self._prepare), (files.step, self._step)):
            if session.get_modelmeta().custom_metadata_map.get(PLAIN_GRAPH_KEY) != plain_graph_sha256:
                raise ValueError(f"{path}: not exported with the LMDM graph beside it (its {PLAIN_GRAPH_KEY} "
                                 "differs); re-run `ditto-fast export-onnx`, or delete the hoisted graphs")
        self._cache_names = _names(self._prepare.get_outputs())
        _expect_names(files.prepare, "inputs", _names(self._prepare.get_inputs()), PREPARE_INPUTS)
        _expect_names(files.step, "inputs", _names(self._step.get_inputs()), (*STEP_OWN_INPUTS, *self._cache_names))
        _expect_names(files.step, "outputs", _names(self._step.get_outputs()), STEP_OUTPUTS)

    @classmethod
    def beside(cls, lmdm_onnx: str | Path,
               open_session: Callable[[Path], ort.InferenceSession]) -> OnnxClipSampling | None:
        """The hoisted graphs next to `lmdm_onnx`, or None when it has none (official trees)."""
        files = HoistedLmdmFiles.beside(lmdm_onnx)
        present = [path.is_file() for path in (files.prepare, files.step)]
        if not any(present):
            return None
        if not all(present):
            found, missing = (files.prepare, files.step) if present[0] else (files.step, files.prepare)
            raise FileNotFoundError(f"{missing}: missing, but {found.name} is there; the hoisted LMDM needs both "
                                    "(re-run `ditto-fast export-onnx`, or delete the other file)")
        return cls(files, open_session, file_sha256(Path(lmdm_onnx)))

    def prepare_clip(self, kp_cond: np.ndarray, cond: np.ndarray, time_table: np.ndarray) -> OnnxClip:
        time_cond = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(time_table, dtype=np.int64))
        inputs = {"cond_frame": _value(kp_cond), "cond": _value(cond), "time_cond": time_cond}
        caches = self._prepare.run_with_ort_values(self._cache_names, inputs)
        return OnnxClip({"time_cond": time_cond, **dict(zip(self._cache_names, caches))}, len(time_table))

    def guided_step(self, x: np.ndarray, clip: OnnxClip, step: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= step < clip.steps:
            raise IndexError(f"{self.files.step}: step {step} is outside the clip's time table of {clip.steps} steps")
        inputs = {**clip.feeds, "x": _value(x), "step": _value(np.array(step, dtype=np.int64))}
        pred_noise, x_start = self._step.run_with_ort_values(STEP_OUTPUTS, inputs)
        return pred_noise.numpy(), x_start.numpy()

    def __repr__(self) -> str:
        return f"OnnxClipSampling({str(self.files.prepare)!r}, {str(self.files.step)!r})"


def _value(array: np.ndarray) -> ort.OrtValue:
    return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))


def _expect_names(path: Path, what: str, found: list[str], expected: tuple[str, ...]) -> None:
    if sorted(found) != sorted(expected):
        raise ValueError(f"{path}: hoisted LMDM graph {what} are {sorted(found)}, expected {sorted(expected)}")
