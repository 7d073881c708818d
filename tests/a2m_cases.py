"""Audio-to-motion golden runs (golden README §5.5: a2m_offline_*, a2m_online_*,
a2m_pipeline_offline_*) read into our types, and small random stand-ins; shared by the motion,
stitch and engine tests.

Every run's settings come from its own `params_json` (setup_kwargs, run_kwargs) and keys
(N_d, noise_seed, v_min_max_for_clip); what a run does not set takes the reference's defaults,
which are `RenderOptions`' defaults.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
from golden_stubs import GoldenFile, HubertStub, LmdmStub, StitchStub, assert_golden_equal, golden_files

from ditto_fast.avatar import MOTION_INFO_SHAPES, Avatar
from ditto_fast.options import OPTION_NAMES, RenderOptions, resolve_options
from ditto_fast.stages.audio_features import offline_features
from ditto_fast.stages.condition import AUDIO_FEATURE_DIM, ConditionHandler
from ditto_fast.stages.hubert import HubertFeatures
from ditto_fast.stages.motion import MOTION_LAYOUT, Audio2MotionOptions, GaussianNoise
from ditto_fast.stages.stitch import MotionStitch

MOTION_KEYS = [key for key, _ in MOTION_LAYOUT]  # the driving keys (motion info without kp)
SOURCE_KEYS = list(MOTION_INFO_SHAPES)  # with kp

# Every run of the offline driver (features given, or from the audio), every online run, and all of them.
OFFLINE_RUNS = golden_files("a2m_offline_[0-9]*.npz", "a2m_pipeline_offline_[0-9]*.npz")
ONLINE_RUNS = golden_files("a2m_online_[0-9]*.npz")
ALL_RUNS = golden_files("a2m_offline_[0-9]*.npz", "a2m_pipeline_offline_[0-9]*.npz", "a2m_online_[0-9]*.npz")

# run_kwargs that are not render options: the online script's HuBERT window sizes.
NOT_OPTIONS = ("chunksize",)


def setup_kwargs(case: GoldenFile) -> dict[str, Any]:
    return dict(case.json("params_json")["setup_kwargs"])


def run_kwargs(case: GoldenFile) -> dict[str, Any]:
    return dict(case.json("params_json").get("run_kwargs", {}))


def chunksize(case: GoldenFile) -> tuple[int, int, int]:
    return tuple(run_kwargs(case)["chunksize"])


def render_options(case: GoldenFile) -> RenderOptions:
    """The run's setup kwargs and run kwargs as render options, with its N_d, noise seed and clamp."""
    values = setup_kwargs(case)
    run = {k: v for k, v in run_kwargs(case).items() if k not in NOT_OPTIONS}
    if "ctrl_info" in run:
        run["ctrl_info"] = frame_keys(run["ctrl_info"])
    values.update(run)
    if values.get("fix_kp_cond_dim") is not None:
        values["fix_kp_cond_dim"] = tuple(values["fix_kp_cond_dim"])
    values["N_d"] = int(case["N_d"])
    values["seed"] = int(case["noise_seed"])  # the run seeded NumPy's generator with it (README §3.2)
    if "v_min_max_for_clip" in case:
        values["v_min_max_for_clip"] = np.array(case["v_min_max_for_clip"])
    return resolve_options(values)


def a2m_options(case: GoldenFile) -> Audio2MotionOptions:
    o = render_options(case)
    return Audio2MotionOptions(
        overlap=o.overlap_v2, smo_k_d=o.smo_k_d, fix_kp_cond=o.fix_kp_cond, fix_kp_cond_dim=o.fix_kp_cond_dim,
        sampling_timesteps=o.sampling_timesteps, online_mode=o.online_mode, v_min_max_for_clip=o.v_min_max_for_clip)


def seeded_noise(case: GoldenFile) -> GaussianNoise:
    """Our generator seeded as the run was (its draws are checked against the noise bank)."""
    return GaussianNoise(int(case["noise_seed"]))


def assert_clips_match_golden(case: GoldenFile, lmdm: LmdmStub, a2m: Any, noise_bank: GoldenFile) -> None:
    """Every LMDM clip of a run against the golden, all bit-exact: our seeded draws are the bank's
    (the step noise, then one x_T per clip), each clip's time steps, kp_cond, condition (tail, and
    the audio part by its float64 row sums) and DDIM result (README §4 allows 1e-4 for kp_cond and
    the result; the committed tests were exact, and so is this)."""
    assert int(noise_bank["noise_seed"]) == int(case["noise_seed"])
    step_lo, step_hi = case["noise_bank_step_noise_slice"]
    assert_golden_equal(a2m.sampler.step_noise, noise_bank["bank"][step_lo:step_hi], f"{case.stem} step noise")
    clips = lmdm.clips(a2m.options.sampling_timesteps)
    xt_lo, xt_hi = case["noise_bank_xT_slice"]
    assert len(clips) == int(case["n_clips"]) == xt_hi - xt_lo
    for k, calls in enumerate(clips):
        first, last = calls[0], calls[-1]
        what = f"{case.stem} clip {k}"
        assert [c["t"] for c in calls] == list(a2m.sampler.tables.time_cond)
        assert_golden_equal(first["x"], noise_bank["bank"][xt_lo + k], f"{what} x_T")
        assert_golden_equal(first["cond_frame"][0], case["clip_kp_cond"][k], f"{what} kp_cond")
        assert_golden_equal(first["cond"][0, :, AUDIO_FEATURE_DIM:], case["clip_cond_tail"][k], f"{what} cond tail")
        assert_golden_equal(first["cond"][0, :, :AUDIO_FEATURE_DIM].astype(np.float64).sum(-1),
                            case["clip_cond_aud_rowsum_f64"][k], f"{what} cond audio")
        assert_golden_equal(last["x_start"][0], case["clip_pred"][k], f"{what} pred")


def condition_handler(case: GoldenFile) -> ConditionHandler:
    o = render_options(case)
    return ConditionHandler(case["src_sc"], case["src_eye_open"], case["src_eye_ball"], emo=o.emo,
                            eye_f0_mode=o.eye_f0_mode)


def driving_features(case: GoldenFile, hubert: HubertStub) -> np.ndarray:
    """The run's HuBERT features: given as two outer products (a2m_offline_*), else the stub
    HuBERT of its audio (README §5.5)."""
    if "aud_c1" in case:
        return case["aud_c1"][:, None] * case["aud_r1"][None, :] + case["aud_c2"][:, None] * case["aud_r2"][None, :]
    return offline_features(HubertFeatures(hubert), case["audio"])


def source_motion(case: GoldenFile, prefix: str, index: int = 0) -> dict[str, np.ndarray]:
    """Frame `index` of a stacked motion dict (each value (1, d))."""
    return case.group(prefix, MOTION_KEYS, index)


def frame_keys(ctrl_info: Any) -> Any:
    """README §2 stores int frame ids as strings: back to ints (a list of controls stays a list)."""
    if isinstance(ctrl_info, Mapping):
        return {int(frame): ctrl for frame, ctrl in ctrl_info.items()}
    return ctrl_info


def setup_stitch(network: Any, options: RenderOptions, x_s_info: Mapping[str, np.ndarray], is_image: bool,
                 ch_x_s_info: Mapping[str, np.ndarray] | None = None) -> MotionStitch:
    """A MotionStitch set up as the reference's StreamSDK does it: `setup` with the setup options
    (those MotionStitch.setup takes, by name), then `setup_Nd(N_d, fade_in, fade_out, ctrl_info)`."""
    names = set(inspect.signature(MotionStitch.setup).parameters) & set(OPTION_NAMES) - {"N_d"}
    stitch = MotionStitch(network)
    setup = {name: getattr(options, name) for name in names}
    stitch.setup(x_s_info, is_image=is_image, ch_x_s_info=ch_x_s_info, **setup)
    stitch.setup_frames(options.N_d, options.fade_in, options.fade_out, options.ctrl_info)
    return stitch


def golden_avatar(case: GoldenFile) -> Avatar:
    """The run's synthetic source_info as an Avatar: the smoothed motion (what registration keeps),
    the unsmoothed frame-0 `sc`, and f_s[i] filled with i so the warp stub can tell the source frame."""
    n = case["src_M_c2o"].shape[0]
    f_s = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None, None, None], (n, 1, 32, 16, 64, 64))
    return Avatar(
        motion=case.group("smoothed_src_x_s_info_", SOURCE_KEYS), f_s=f_s, m_c2o=np.array(case["src_M_c2o"]),
        eye_open=np.array(case["src_eye_open"]), eye_ball=np.array(case["src_eye_ball"]),
        sc=np.array(case["src_sc"]), frames=np.array(case["src_frames"]), is_image=bool(case["src_is_image"]),
    )


class RecordingWarp:
    """README §3.5 warp stub (zeros): records the stitched keypoints that reach it and which source
    frame's f_s it was given (golden_avatar fills each frame's volume with its index)."""

    def __init__(self) -> None:
        self.x_s: list[np.ndarray] = []
        self.x_d: list[np.ndarray] = []
        self.source_frame: list[int] = []

    def __call__(self, *, feature_3d, kp_source, kp_driving):
        self.x_s.append(np.array(kp_source))
        self.x_d.append(np.array(kp_driving))
        self.source_frame.append(int(np.asarray(feature_3d).flat[0]))
        return (np.zeros((1, 256, 64, 64), np.float32),)


def zero_decoder(*, feature):
    """README §3.5 decoder stub."""
    return (np.zeros((1, 3, 512, 512), np.float32),)


def golden_networks(weights: Mapping[str, np.ndarray], warp: RecordingWarp) -> dict[str, Any]:
    return {"hubert": HubertStub(weights["hubert_v1"], weights["hubert_v2"]), "lmdm": LmdmStub(weights),
            "stitch_network": StitchStub(weights), "warp_network": warp, "decoder": zero_decoder}


def same_ctrl(got: Mapping, expected: Mapping) -> bool:
    """Per-frame controls equal (values may be arrays)."""
    if got.keys() != expected.keys():
        return False
    return all(np.array_equal(got[k], expected[k]) if isinstance(expected[k], np.ndarray) else got[k] == expected[k]
               for k in expected)


# -- random stand-ins (no golden data) ---------------------------------------------------------------

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
