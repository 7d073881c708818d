"""Audio-to-motion golden cases (golden README §5.5) and small random stand-ins, shared by the
offline and online motion tests."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from golden_stubs import LmdmStub

from ditto_fast.stages.motion import MOTION_LAYOUT, Audio2MotionOptions

MOTION_KEYS = [key for key, _ in MOTION_LAYOUT]


def golden_case(shared_ref: pathlib.Path, name: str) -> np.lib.npyio.NpzFile:
    path = shared_ref / "golden" / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return np.load(path)


def decode_emo(value: object) -> object:
    """Golden JSON (README §2) stores tuples as {"__tuple__": [...]}."""
    if isinstance(value, dict):
        return tuple(value["__tuple__"])
    if isinstance(value, list):
        return [decode_emo(v) for v in value]
    return value


def a2m_options(case: np.lib.npyio.NpzFile) -> Audio2MotionOptions:
    """The case's setup kwargs; absent ones take the reference defaults (the options' defaults)."""
    kw = json.loads(str(case["params_json"]))["setup_kwargs"]
    defaults = Audio2MotionOptions()
    dims = kw.get("fix_kp_cond_dim")
    return Audio2MotionOptions(
        overlap=kw.get("overlap_v2", defaults.overlap), smo_k_d=kw.get("smo_k_d", defaults.smo_k_d),
        fix_kp_cond=kw.get("fix_kp_cond", defaults.fix_kp_cond),
        fix_kp_cond_dim=None if dims is None else tuple(dims),
        sampling_timesteps=kw["sampling_timesteps"], online_mode=kw["online_mode"],
        v_min_max_for_clip=case["v_min_max_for_clip"] if "v_min_max_for_clip" in case.files else None)


def source_motion(case: np.lib.npyio.NpzFile, prefix: str) -> dict[str, np.ndarray]:
    return {key: case[f"{prefix}{key}"][0] for key in MOTION_KEYS}


def max_dev(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def random_lmdm_stub(seed: int = 7) -> LmdmStub:
    rng = np.random.default_rng(seed)
    shapes = dict(Wx=(265, 16), Wf=(265, 16), Wc=(1103, 16), wt=(16,), bh=(16,), Wo=(16, 265))
    weights = {f"lmdm_{k}": (rng.standard_normal(s) * 0.05).astype(np.float32) for k, s in shapes.items()}
    alphas = np.linspace(0.9999, 0.01, 1000).astype(np.float32)
    weights["lmdm_sqrt_recip1m_alphas_cumprod"] = np.sqrt(1 / (1 - alphas)).astype(np.float32)
    weights["lmdm_sqrt_recipm1_alphas_cumprod"] = np.sqrt(1 / alphas - 1).astype(np.float32)
    return LmdmStub(weights)


def random_source_motion() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {key: rng.standard_normal(shape).astype(np.float32) for key, shape in MOTION_LAYOUT}
