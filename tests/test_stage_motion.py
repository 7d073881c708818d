"""Audio-to-motion (DITTO_SPEC §5.8–§5.10) against the reference's golden runs with the LMDM stub.

The stub is golden README §3.2 (float64 body, float32 noise formula); the noise comes from the
golden noise bank, injected in the reference's draw order.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from a2m_cases import (
    MOTION_KEYS,
    a2m_options,
    decode_emo,
    golden_case,
    max_dev,
    random_lmdm_stub,
    random_source_motion,
    source_motion,
)
from golden_stubs import LmdmStub

from ditto_fast.stages.condition import AUDIO_FEATURE_DIM, ConditionHandler
from ditto_fast.stages.motion import (
    CLIP_SHAPE,
    MOTION_DIM,
    MOTION_LAYOUT,
    Audio2Motion,
    Audio2MotionOptions,
    DDIMSampler,
    GaussianNoise,
    bins_to_degrees,
    motion_dict_to_vector,
    motion_vector_to_dict,
    smooth_pose,
)

OFFLINE_CASES = [f"a2m_offline_{k}.npz" for k in range(8)]
ONLINE_CASES = [f"a2m_online_{k}.npz" for k in range(3)]


@pytest.fixture(scope="module")
def weights(shared_ref: pathlib.Path) -> dict[str, np.ndarray]:
    return dict(golden_case(shared_ref, "stub_weights.npz"))


@pytest.fixture(scope="module")
def noise_bank(shared_ref: pathlib.Path) -> np.ndarray:
    return golden_case(shared_ref, "a2m_noise_bank.npz")["bank"]


@pytest.mark.parametrize("name", OFFLINE_CASES)
def test_offline_audio2motion_matches_golden(shared_ref: pathlib.Path, weights: dict, noise_bank: np.ndarray,
                                             name: str) -> None:
    case = golden_case(shared_ref, name)
    params = json.loads(str(case["params_json"]))
    options = a2m_options(case)
    steps, num_clips = options.sampling_timesteps, int(case["n_clips"])

    aud = case["aud_c1"][:, None] * case["aud_r1"][None, :] + case["aud_c2"][:, None] * case["aud_r2"][None, :]
    handler = ConditionHandler(case["src_sc"], case["src_eye_open"], case["src_eye_ball"],
                               emo=decode_emo(params["setup_kwargs"]["emo"]))
    cond_all = handler(aud, 0)
    assert len(cond_all) == int(case["N"])

    lmdm = LmdmStub(weights)
    a2m = Audio2Motion(lmdm, source_motion(case, "smoothed_src_x_s_info_"), options,
                       GaussianNoise(bank=noise_bank))
    step_lo, step_hi = case["noise_bank_step_noise_slice"]
    np.testing.assert_array_equal(a2m.sampler.step_noise, noise_bank[step_lo:step_hi])
    res = a2m.generate_offline(cond_all)

    clips = lmdm.clips(steps)
    assert len(clips) == num_clips
    xt_lo, _ = case["noise_bank_xT_slice"]
    for k, calls in enumerate(clips):
        first, last = calls[0], calls[-1]
        assert [c["t"] for c in calls] == list(a2m.sampler.tables.time_cond)
        np.testing.assert_array_equal(first["x"], noise_bank[xt_lo + k], err_msg=f"{name} clip {k} x_T")
        np.testing.assert_array_equal(first["cond_frame"][0], case["clip_kp_cond"][k],
                                      err_msg=f"{name} clip {k} kp_cond")
        np.testing.assert_array_equal(first["cond"][0, :, AUDIO_FEATURE_DIM:], case["clip_cond_tail"][k])
        np.testing.assert_allclose(first["cond"][0, :, :AUDIO_FEATURE_DIM].astype(np.float64).sum(-1),
                                   case["clip_cond_aud_rowsum_f64"][k], rtol=1e-12, atol=0)
        np.testing.assert_array_equal(last["x_start"][0], case["clip_pred"][k], err_msg=f"{name} clip {k} pred "
                                      f"(max dev {max_dev(last['x_start'][0], case['clip_pred'][k]):.3g})")

    np.testing.assert_array_equal(res, case["res_final"],
                                  err_msg=f"{name} res_final (max dev {max_dev(res, case['res_final']):.3g})")

    frames = a2m.to_frame_dicts(res)
    assert len(frames) == int(case["n_emitted"])
    for key, shape in MOTION_LAYOUT:
        stacked = np.stack([frame[key] for frame in frames])
        assert stacked.shape[1:] == shape and stacked.dtype == np.float32
        np.testing.assert_array_equal(stacked, case[f"emit_xd_{key}"], err_msg=f"{name} emitted {key}")


class _ReplaySampler:
    """Stands in for the DDIM sampler: returns the golden clip results in order."""

    def __init__(self, preds: np.ndarray) -> None:
        self.preds = iter(preds)

    def sample(self, lmdm: object, kp_cond: np.ndarray, cond: np.ndarray, x_T: np.ndarray) -> np.ndarray:
        return next(self.preds)[None]


@pytest.mark.parametrize("name", ONLINE_CASES)
def test_online_fusion_chain_matches_golden(shared_ref: pathlib.Path, weights: dict, name: str) -> None:
    """Online cross-fade (F = min(O, V)), smoothing and kp_cond chain, given the golden clip results.

    The online driver itself is not part of this module. Its `cvt_fmt` inputs are rebuilt here
    from the golden slice lengths: the whole first clip (for d0), then each later clip's slice
    starting where the previous one ended (first at 80 − F).
    """
    case = golden_case(shared_ref, name)
    options = a2m_options(case)
    assert options.online_mode
    a2m = Audio2Motion(LmdmStub(weights), source_motion(case, "smoothed_src_x_s_info_"), options,
                       GaussianNoise(0))
    a2m.sampler = _ReplaySampler(case["clip_pred"])
    cond = np.zeros((1, 80, 1103), np.float32)
    motion = None
    converted = []
    start = 80 - options.fuse_length
    lengths = case["cvt_fmt_inputs_len"]
    assert len(lengths) == int(case["n_clips"]) and lengths[0] == 80
    for k, length in enumerate(lengths):
        np.testing.assert_array_equal(a2m.kp_cond[0], case["clip_kp_cond"][k], err_msg=f"{name} clip {k} kp_cond")
        motion = a2m.generate_clip(cond, motion)
        if k == 0:
            converted.append(motion)
        else:
            converted.append(motion[start:start + length])
            start += length
    converted = np.concatenate(converted)
    np.testing.assert_array_equal(converted, case["cvt_fmt_inputs_concat"],
                                  err_msg=f"{name} (max dev {max_dev(converted, case['cvt_fmt_inputs_concat']):.3g})")


def test_noise_bank_is_the_seeded_legacy_stream(shared_ref: pathlib.Path, noise_bank: np.ndarray) -> None:
    seed = int(golden_case(shared_ref, "a2m_noise_bank.npz")["noise_seed"])
    noise = GaussianNoise(seed)
    for expected in noise_bank:
        np.testing.assert_array_equal(noise.draw(), expected)


def _offline_run(seed: int, num_frames: int = 100) -> np.ndarray:
    cond = np.random.default_rng(5).standard_normal((num_frames, 1103)).astype(np.float32)
    a2m = Audio2Motion(random_lmdm_stub(), random_source_motion(), Audio2MotionOptions(sampling_timesteps=5),
                       GaussianNoise(seed))
    return a2m.generate_offline(cond)


def test_seed_reproducibility() -> None:
    first = _offline_run(11)
    assert first.shape == (100, MOTION_DIM) and first.dtype == np.float32
    np.testing.assert_array_equal(_offline_run(11), first)
    assert not np.allclose(_offline_run(12), first)


def test_short_last_clip_is_padded_and_truncated() -> None:
    """N = 100 with V = 70: two clips, the second padded with its last condition row."""
    lmdm = random_lmdm_stub()
    cond = np.random.default_rng(5).standard_normal((100, 1103)).astype(np.float32)
    a2m = Audio2Motion(lmdm, random_source_motion(), Audio2MotionOptions(sampling_timesteps=4), GaussianNoise(1))
    assert a2m.generate_offline(cond).shape == (100, MOTION_DIM)
    clips = lmdm.clips(4)
    assert len(clips) == 2
    second = clips[1][0]["cond"][0]
    np.testing.assert_array_equal(second[:30], cond[70:])
    np.testing.assert_array_equal(second[30:], np.repeat(cond[-1:], 50, axis=0))


def test_ddim_update_formula() -> None:
    """With a network that returns constants, x after update i is x0·√ᾱ' + c·ε + σ·z_i, and the end is x0."""
    steps = 4
    noise = np.stack([np.full(CLIP_SHAPE, float(i + 1), np.float32) for i in range(steps - 1)])
    sampler = DDIMSampler(steps, noise)
    seen = []

    def lmdm(*, x, cond_frame, cond, time_cond):
        seen.append(x)
        return np.full(CLIP_SHAPE, 0.5, np.float32), np.full(CLIP_SHAPE, 2.0, np.float32)

    out = sampler.sample(lmdm, np.zeros((1, 265), np.float32), np.zeros((1, 80, 1103), np.float32),
                         np.zeros(CLIP_SHAPE, np.float32))
    t = sampler.tables
    for i in range(steps - 1):
        expected = np.float32(2.0) * t.alpha_next_sqrt[i] + t.c[i] * np.float32(0.5) + t.sigma[i] * np.float32(i + 1)
        np.testing.assert_array_equal(seen[i + 1], np.full(CLIP_SHAPE, expected, np.float32))
    np.testing.assert_array_equal(out, np.full(CLIP_SHAPE, 2.0, np.float32))
    with pytest.raises(ValueError, match="step_noise"):
        DDIMSampler(steps, noise[:2])


def test_fix_kp_cond_resets_to_source_keeping_dims() -> None:
    source = random_source_motion()
    options = Audio2MotionOptions(sampling_timesteps=2, fix_kp_cond=2, fix_kp_cond_dim=(202, 265))
    a2m = Audio2Motion(random_lmdm_stub(), source, options, GaussianNoise(0))
    cond = np.zeros((1, 80, 1103), np.float32)
    motion = a2m.generate_clip(cond, None)  # clip 1: plain update
    np.testing.assert_array_equal(a2m.kp_cond[0], motion[80 - 10 - 1])
    motion = a2m.generate_clip(cond, motion)  # clip 2: reset, exp kept from the generated frame
    generated = motion[len(motion) - 10 - 1]
    np.testing.assert_array_equal(a2m.kp_cond[0, :202], motion_dict_to_vector(source)[:202])
    np.testing.assert_array_equal(a2m.kp_cond[0, 202:], generated[202:])


def test_motion_vector_round_trip() -> None:
    source = random_source_motion()
    vector = motion_dict_to_vector({**source, "kp": np.zeros((1, 63), np.float32)})
    assert vector.shape == (MOTION_DIM,) and vector[0] == np.float32(source["scale"][0, 0] - 1)
    back = motion_vector_to_dict(vector)
    assert set(back) == set(MOTION_KEYS)
    for key, shape in MOTION_LAYOUT:
        assert back[key].shape == shape
        np.testing.assert_allclose(back[key], source[key], atol=2e-7)


def test_bins_to_degrees() -> None:
    uniform = np.zeros((2, 66), np.float32)
    np.testing.assert_allclose(bins_to_degrees(uniform), [0.0, 0.0], atol=1e-4)
    peaked = np.full((1, 66), -1e4, np.float32)
    peaked[0, 40] = 0
    np.testing.assert_allclose(bins_to_degrees(peaked), [3 * 40 - 97.5], atol=1e-4)
    degrees = np.array([[12.5]], np.float32)
    assert bins_to_degrees(degrees) is degrees


def test_smooth_pose_matches_per_frame_mean() -> None:
    motion = np.random.default_rng(2).standard_normal((30, MOTION_DIM)).astype(np.float32)
    for kernel in (2, 3, 5):
        half = kernel // 2
        out = smooth_pose(motion, 4, 30, kernel)
        np.testing.assert_array_equal(out[:4], motion[:4])
        np.testing.assert_array_equal(out[:, 202:], motion[:, 202:])
        for i in range(4, 30):
            window = motion[max(0, i - half):min(30, i + half + 1), :202]
            np.testing.assert_array_equal(out[i, :202], window.mean(axis=0))
    np.testing.assert_array_equal(smooth_pose(motion, 0, 30, 1), motion)
