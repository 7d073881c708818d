"""Shared helpers of the golden tests (golden README = tests/data/reference/golden/README.md).

- Where the golden vectors live, and pytest parameters made from what is there: one per file of
  a kind (`golden_files`) or one per numbered case inside the files (`golden_cases`), with the
  file stem (and case key) as the id. When the folder or the kind is absent the one parameter is
  a skip that says why.
- `GoldenFile`: a loaded file (cached, arrays read-only so no test or stage can alter it), with
  the README §2 JSON decoding.
- `assert_golden_equal`, the default comparison: bit-exact, as the project claims and as the
  committed tests were; `assert_close` and README §4 tolerances only where a test had a tolerance
  before or a comparison does not match exactly (the stitched keypoints).
- The stub networks of README §3.
"""

from __future__ import annotations

import functools
import json
import pathlib
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from conftest import REFERENCE

GOLDEN = REFERENCE / "golden"

# -- comparisons ------------------------------------------------------------------------------------
# Bit-exact unless a test had a tolerance before (or a comparison cannot be exact): then the
# stricter of that tolerance and README §4's. Only the tolerances still in use are defined here.

STITCH_ATOL = 1e-5  # motion-stitch x_s, x_d, x_d_pre_stitch, stitch_x_d (torch vs NumPy float32 stub)
BLAZE_ATOL = 1e-3  # BlazeFace detections, ROI (px of the 128 input / of the crop)
ROI_ANGLE_ATOL = 1e-4  # rad
MESH_ATOL = 1e-5  # FaceMesh lmk478 (normalised), eye_open, eye_ball
IMAGE_MAX_DIFF, IMAGE_MEAN_DIFF = 8, 0.25  # the FaceMesh ROI warp, made with our own perspective matrix


def assert_golden_equal(got: Any, want: np.ndarray, what: str = "") -> None:
    """Bit-exact: the same shape and the same values (the default for golden comparisons; numpy's
    message gives the largest deviation)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs {want.shape}"
    np.testing.assert_array_equal(got, want, err_msg=what)


def assert_close(got: Any, want: np.ndarray, atol: float, what: str = "") -> None:
    """Within `atol` (no relative term), compared in float64; only where a tolerance is kept."""
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=0, atol=atol,
                               err_msg=what)


# -- which golden files there are --------------------------------------------------------------------

def _natural_key(path: pathlib.Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def golden_paths(pattern: str) -> list[pathlib.Path]:
    """The golden files matching a glob pattern, in natural order (cond_2 before cond_10)."""
    return sorted(GOLDEN.glob(pattern), key=_natural_key) if GOLDEN.is_dir() else []


def _absent(pattern: str, arity: int) -> list:
    why = f"golden folder {GOLDEN} is absent" if not GOLDEN.is_dir() else f"no golden file {pattern} in {GOLDEN}"
    return [pytest.param(*([None] * arity), id=f"absent:{pattern}", marks=pytest.mark.skip(reason=why))]


def golden_files(*patterns: str) -> list:
    """pytest parameters: the path of every golden file matching any of the patterns (id: its stem)."""
    paths = [path for pattern in patterns for path in golden_paths(pattern)]
    return [pytest.param(path, id=path.stem) for path in paths] or _absent(" | ".join(patterns), 1)


def key_indices(keys: Sequence[str], prefix: str) -> list[int]:
    """The case numbers i of keys named `{prefix}{i}_…` (e.g. case0_img, case1_img → [0, 1])."""
    found = {int(m.group(1)) for key in keys if (m := re.match(rf"{re.escape(prefix)}(\d+)_", key))}
    return sorted(found)


def golden_cases(pattern: str, prefix: str) -> list:
    """pytest parameters (path, i): every numbered case `{prefix}{i}_…` of every file matching
    `pattern` (id: `stem-{prefix}{i}`). Only the archives' key lists are read here."""
    params = []
    for path in golden_paths(pattern):
        with np.load(path, allow_pickle=False) as npz:
            indices = key_indices(npz.files, prefix)
        params += [pytest.param(path, i, id=f"{path.stem}-{prefix}{i}") for i in indices]
    return params or _absent(f"{pattern} [{prefix}N_*]", 2)


def golden_json_keys(name: str, key: str) -> list:
    """pytest parameters: the top-level keys of JSON key `key` of golden file `name`."""
    path = GOLDEN / name
    if not path.is_file():
        return _absent(name, 1)
    with np.load(path, allow_pickle=False) as npz:
        labels = list(json.loads(str(npz[key])))
    return [pytest.param(label, id=label) for label in labels] or _absent(f"{name}:{key}", 1)


# -- reading one ---------------------------------------------------------------------------------------

def decode_golden_json(value: Any) -> Any:
    """Undo README §2's JSON encoding: tuples and ndarrays come back as themselves (frame-id keys
    stay strings)."""
    if isinstance(value, dict):
        if "__tuple__" in value:
            return tuple(decode_golden_json(v) for v in value["__tuple__"])
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=value["dtype"]).reshape(value["shape"])
        return {k: decode_golden_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_golden_json(v) for v in value]
    return value


# Keys read from each loaded golden file during the session (`pytest --golden-keys` reports the rest).
KEYS_READ: dict[pathlib.Path, set[str]] = {}


class GoldenFile(Mapping):
    """One golden `.npz`, loaded whole; every array is read-only. Records the keys it is asked for."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.stem = path.stem
        with np.load(path, allow_pickle=False) as npz:
            self.arrays = {key: npz[key] for key in npz.files}
        for array in self.arrays.values():
            array.flags.writeable = False
        self.keys_read = KEYS_READ.setdefault(path, set())

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            array = self.arrays[key]
        except KeyError:
            raise KeyError(f"{self.path.name} has no key {key!r}") from None
        self.keys_read.add(key)
        return array

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    def __len__(self) -> int:
        return len(self.arrays)

    def json(self, key: str) -> Any:
        return decode_golden_json(json.loads(str(self[key])))

    def indices(self, prefix: str) -> list[int]:
        return key_indices(list(self.arrays), prefix)

    def group(self, prefix: str, keys: Sequence[str], index: int | None = None) -> dict[str, np.ndarray]:
        """{key: a writable copy of self[prefix + key] (row `index` of it if given)} for the keys present."""
        return {key: np.array(self[prefix + key] if index is None else self[prefix + key][index])
                for key in keys if prefix + key in self.arrays}


@functools.cache
def _load(path: pathlib.Path) -> GoldenFile:
    return GoldenFile(path)


def load_golden(path: pathlib.Path | str | None) -> GoldenFile:
    """A golden file by path or by name in the golden folder (cached); skips when it is absent."""
    path = GOLDEN / path if isinstance(path, str) else path
    if path is None or not path.is_file():
        pytest.skip(f"golden file {path} is absent")
    return _load(path)


# -- README §3 stub networks ------------------------------------------------------------------------------

class FixedOutputNetwork:
    """README §3.4: returns `outputs` on every call, or `outputs[i]` on call i when `per_call`;
    records every call's inputs in `calls`. With `model` (a contract name) the input names are
    checked against the I/O contract."""

    def __init__(self, outputs: tuple[np.ndarray, ...] | Sequence[tuple[np.ndarray, ...]],
                 per_call: bool = False, model: str | None = None) -> None:
        self.outputs = outputs
        self.per_call = per_call
        self.name = model
        self.calls: list[dict[str, np.ndarray]] = []

    def __call__(self, **arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        if self.name is not None:
            from ditto_fast.contract import MODELS

            expected = sorted(t.name for t in MODELS[self.name].inputs)
            assert sorted(arrays) == expected, f"{self.name} called with {sorted(arrays)}, contract {expected}"
        self.calls.append({k: np.array(v, copy=True) for k, v in arrays.items()})
        if self.per_call:
            return tuple(self.outputs[len(self.calls) - 1])
        return tuple(self.outputs)

    def only_input(self) -> np.ndarray:
        assert len(self.calls) == 1, f"{self.name} called {len(self.calls)} times"
        (array,) = self.calls[0].values()
        return array


def detector_outputs(golden: Mapping[str, np.ndarray], prefix: str) -> tuple[np.ndarray, ...]:
    """SCRFD raw outputs in contract order: scores, boxes, kps for strides 8, 16, 32."""
    return tuple(golden[f"{prefix}{kind}_s{stride}"] for kind in ("scores", "boxes", "kps")
                 for stride in (8, 16, 32))


class HubertStub:
    """Golden README §3.1: per 400-sample frame (hop 320), float64 mean m and population
    variance q; encoding_out[j] = float32(m·v1 + q·v2). Counts its calls."""

    name = "hubert"

    def __init__(self, v1: np.ndarray, v2: np.ndarray) -> None:
        self.v1 = v1.astype(np.float64)
        self.v2 = v2.astype(np.float64)
        self.calls = 0

    def __call__(self, *, input_values: np.ndarray) -> tuple[np.ndarray]:
        assert input_values.dtype == np.float32 and input_values.shape[0] == 1
        self.calls += 1
        frames = sliding_window_view(input_values[0].astype(np.float64), 400)[::320]
        mean = frames.mean(axis=1)
        variance = ((frames - mean[:, None]) ** 2).mean(axis=1)
        return ((mean[:, None] * self.v1 + variance[:, None] * self.v2).astype(np.float32),)


class LmdmStub:
    """Golden README §3.2 LMDM stub; records every call so tests can inspect each clip."""

    def __init__(self, weights: Mapping[str, np.ndarray]) -> None:
        f64 = {k: np.asarray(weights[f"lmdm_{k}"], dtype=np.float64) for k in ("Wx", "Wf", "Wc", "wt", "bh", "Wo")}
        self.Wx, self.Wf, self.Wc = f64["Wx"], f64["Wf"], f64["Wc"]
        self.wt, self.bh, self.Wo = f64["wt"], f64["bh"], f64["Wo"]
        self.a = np.asarray(weights["lmdm_sqrt_recip1m_alphas_cumprod"], dtype=np.float32)
        self.b = np.asarray(weights["lmdm_sqrt_recipm1_alphas_cumprod"], dtype=np.float32)
        self.calls: list[dict[str, np.ndarray]] = []

    def __call__(self, *, x: np.ndarray, cond_frame: np.ndarray, cond: np.ndarray,
                 time_cond: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert x.dtype == cond_frame.dtype == cond.dtype == np.float32 and time_cond.dtype == np.int64
        t = int(time_cond[0])
        frame = cond_frame.astype(np.float64)
        h = np.tanh(x.astype(np.float64) @ self.Wx + cond.astype(np.float64) @ self.Wc
                    + (frame @ self.Wf)[:, None, :] + (time_cond[0] / 1000) * self.wt + self.bh)
        x_start = (0.9 * frame[:, None, :] + h @ self.Wo).astype(np.float32)
        pred_noise = self.a[t] * x - x_start / self.b[t]
        self.calls.append(dict(x=x.copy(), cond_frame=cond_frame.copy(), cond=cond.copy(), t=t, x_start=x_start))
        return pred_noise, x_start

    def clips(self, num_steps: int) -> list[list[dict[str, np.ndarray]]]:
        assert len(self.calls) % num_steps == 0
        return [self.calls[k:k + num_steps] for k in range(0, len(self.calls), num_steps)]


class StitchStub:
    """Golden README §3.3 stitching MLP (126→128→128→64→65, ReLU); records what it was handed."""

    def __init__(self, weights: Mapping[str, np.ndarray]) -> None:
        self.layers = [(weights[f"stitch_W{i}"], weights[f"stitch_b{i}"]) for i in range(4)]
        self.kp_driving: list[np.ndarray] = []

    def __call__(self, *, kp_source: np.ndarray, kp_driving: np.ndarray) -> tuple[np.ndarray]:
        assert kp_source.shape == kp_driving.shape == (1, 21, 3)
        assert kp_source.dtype == kp_driving.dtype == np.float32
        self.kp_driving.append(kp_driving.copy())
        h = np.concatenate([kp_source.reshape(1, 63), kp_driving.reshape(1, 63)], axis=1)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w.T + b
            if i < 3:
                h = np.maximum(h, 0)
        out = kp_driving + h[:, :63].reshape(1, 21, 3)
        out[..., :2] += h[:, None, 63:65]
        return (out.astype(np.float32),)
