"""Online (streaming) audio-to-motion driver (DITTO_SPEC §5.9 "Online driver") against the reference's golden runs.

Golden files: every a2m_online_* (golden README §5.5), driven as the reference's online
`inference.py` branch: the run's audio cut by the online window rule (`LiveWindows`) with the run's chunksize
(run_kwargs), each chunk turned into features by the HuBERT stub and pushed as it arrives, then
the end of stream. The LMDM stub's noise is our generator seeded with the run's noise_seed, its
draws checked against the bank. Every comparison is bit-exact (README §4 would allow 1e-4 for
the a2m outputs; they match exactly, as the committed tests required).

Keys compared here: N_d (frame count of the audio), n_clips, cvt_fmt_inputs_count,
noise_bank_step_noise_slice, noise_bank_xT_slice, clip_kp_cond, clip_cond_tail,
clip_cond_aud_rowsum_f64, clip_pred, cvt_fmt_inputs_len, cvt_fmt_inputs_concat (clip 0 whole:
only its d0 is used; then what each clip emitted), online_d0_*, emit_xd_*, n_emitted,
n_written_frames (the frames the worker emits), emit_frame_idx (source frame of each).
Compared elsewhere: stitch_x_s, stitch_x_d, emit_ctrl_json (test_stage_stitch.py,
test_engine_online_golden.py); smoothed_src_x_s_info_* (test_stage_register.py).
Inputs, not compared: params_json, audio, src_* and smoothed_src_x_s_info_* (the source), noise_seed.
The other tests use a cheap network and check frame counts, latency and reset.
"""

from __future__ import annotations

import numpy as np
import pytest
from a2m_cases import (
    ONLINE_RUNS,
    a2m_options,
    assert_clips_match_golden,
    chunksize,
    condition_handler,
    random_lmdm_stub,
    random_source_motion,
    seeded_noise,
    source_motion,
)
from golden_stubs import HubertStub, LmdmStub, assert_golden_equal, load_golden

from ditto_fast.stages.audio import frame_count
from ditto_fast.stages.audio_windows import DEFAULT_CHUNKSIZE, LiveWindows
from ditto_fast.stages.condition import AUDIO_FEATURE_DIM, ConditionHandler
from ditto_fast.stages.frame_index import mirror_index
from ditto_fast.stages.hubert import HubertFeatures
from ditto_fast.stages.motion import (
    CLIP_SHAPE,
    MOTION_DIM,
    MOTION_LAYOUT,
    Audio2Motion,
    Audio2MotionOptions,
    GaussianNoise,
    motion_dict_to_vector,
)
from ditto_fast.stages.online_motion import OnlineAudio2Motion, silence_warmup_features


@pytest.fixture(scope="module")
def weights():
    return load_golden("stub_weights.npz")


@pytest.fixture(scope="module")
def noise_bank():
    return load_golden("a2m_noise_bank.npz")


def _golden_driver(case, weights, extractor: HubertFeatures) -> tuple[OnlineAudio2Motion, LmdmStub]:
    options = a2m_options(case)
    lmdm = LmdmStub(weights)
    a2m = Audio2Motion(lmdm, source_motion(case, "smoothed_src_x_s_info_"), options, seeded_noise(case))
    warmup = silence_warmup_features(extractor, options.overlap)
    assert not warmup.any(), "the stub HuBERT of silence is zeros (golden README §5.5)"
    return OnlineAudio2Motion(a2m, condition_handler(case), warmup), lmdm


@pytest.mark.parametrize("path", ONLINE_RUNS)
def test_online_driver_matches_golden(path, weights, noise_bank) -> None:
    case = load_golden(path)
    name = case.stem
    extractor = HubertFeatures(HubertStub(weights["hubert_v1"], weights["hubert_v2"]))
    driver, lmdm = _golden_driver(case, weights, extractor)
    steps = driver.a2m.options.sampling_timesteps
    cs = chunksize(case)
    assert frame_count(len(case["audio"])) == int(case["N_d"])

    # Push chunk by chunk, noting how many clips each push (and the end) ran and what it emitted.
    pushes: list[tuple[int, np.ndarray]] = []
    dicts: list[dict[str, np.ndarray]] = []
    real_frames, fed, first_output_at = 0, [], None
    # The audio arrives in pieces that do not line up with the windows, as in a live stream.
    audio, cutter = np.array(case["audio"]), LiveWindows(cs, extractor.window_extra_samples)
    windows = [window for start in range(0, len(audio), 1234) for window in cutter.push(audio[start:start + 1234])]
    for chunk in windows + cutter.flush():
        clips_before = len(lmdm.calls) // steps
        features = extractor.chunk(chunk, cs)
        motion = driver.push_motion(features)
        real_frames += len(features)
        fed.append(real_frames)
        pushes.append((len(lmdm.calls) // steps - clips_before, motion))
        assert pushes[-1][0] <= 1, f"{name}: a {len(features)}-frame chunk ran {pushes[-1][0]} clips"
        if len(motion) and first_output_at is None:
            first_output_at = real_frames
    clips_before = len(lmdm.calls) // steps
    end_motion = driver.end_motion()
    pushes.append((len(lmdm.calls) // steps - clips_before, end_motion))
    for _, motion in pushes:
        dicts += driver.a2m.to_frame_dicts(motion)

    # Noise, clip inputs and results.
    assert_clips_match_golden(case, lmdm, driver.a2m, noise_bank)
    clips = lmdm.clips(steps)
    assert len(clips) == int(case["cvt_fmt_inputs_count"])

    # cvt_fmt inputs: clip 0 converted whole (only its frame 0 is used: d0), then each later clip's
    # emitted slice, emitted by the push (or the end) that ran the clip.
    lengths = [int(n) for n in case["cvt_fmt_inputs_len"]]
    cvt_inputs = case["cvt_fmt_inputs_concat"]
    assert len(lengths) == len(clips) and lengths[0] == 80 == len(cvt_inputs) - sum(lengths[1:])
    emitted_by_clip = [0, *lengths[1:]]
    clip = 0
    for clips_run, motion in pushes:
        assert len(motion) == sum(emitted_by_clip[clip:clip + clips_run])
        clip += clips_run
    assert clip == len(clips)
    emitted = np.concatenate([motion for _, motion in pushes])
    assert_golden_equal(emitted, cvt_inputs[lengths[0]:], f"{name} emitted motion")
    assert_golden_equal(motion_dict_to_vector(driver.d0), motion_dict_to_vector(
        {key: case[f"online_d0_{key}"] for key, _ in MOTION_LAYOUT}), f"{name} d0")
    for key, shape in MOTION_LAYOUT:
        assert_golden_equal(driver.d0[key], case[f"online_d0_{key}"], f"{name} d0 {key}")
        stacked = np.stack([frame[key] for frame in dicts])
        assert stacked.shape[1:] == shape and stacked.dtype == np.float32
        assert_golden_equal(stacked, case[f"emit_xd_{key}"], f"{name} emitted {key}")

    # Counts and the source frame each emitted frame drives.
    n_emitted = int(case["n_emitted"])
    assert len(dicts) == driver.frames_emitted == n_emitted == int(case["n_written_frames"])
    assert driver.output_frame_count(real_frames) == n_emitted
    assert n_emitted > int(case["N_d"])  # the reference's output is longer than the audio
    n_src = len(case["src_eye_open"])
    np.testing.assert_array_equal([mirror_index(g, n_src) for g in range(n_emitted)], case["emit_frame_idx"])
    # The first push that completes the features the first output needs emits it (none, if no push does).
    needed = driver.frames_needed_for_first_output
    assert first_output_at == next((n for n in fed if n >= needed), None)


# -- frame counts, latency, arrival pattern, reset: a cheap network ------------------------------------

def _constant_lmdm(*, x: np.ndarray, cond_frame: np.ndarray, cond: np.ndarray,
                   time_cond: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(CLIP_SHAPE, np.float32), np.zeros(CLIP_SHAPE, np.float32)


def _driver(overlap: int, lmdm=_constant_lmdm, noise: GaussianNoise | None = None,
            steps: int = 1) -> OnlineAudio2Motion:
    options = Audio2MotionOptions(overlap=overlap, sampling_timesteps=steps, online_mode=True)
    a2m = Audio2Motion(lmdm, random_source_motion(), options, noise or GaussianNoise(0))
    handler = ConditionHandler(np.zeros(63, np.float32), np.zeros((1, 2), np.float32), np.zeros((1, 6), np.float32))
    return OnlineAudio2Motion(a2m, handler, np.zeros((overlap, AUDIO_FEATURE_DIM), np.float32))


def _stream(driver: OnlineAudio2Motion, features: np.ndarray, piece_sizes: list[int] | int = 5) -> np.ndarray:
    """Push `features` in pieces (a fixed size, or a list of sizes cycled), end, return all emitted motion."""
    sizes = [piece_sizes] if isinstance(piece_sizes, int) else piece_sizes
    out, start, i = [], 0, 0
    while start < len(features):
        stop = start + sizes[i % len(sizes)]
        out.append(driver.push_motion(features[start:stop]))
        start, i = stop, i + 1
    out.append(driver.end_motion())
    return np.concatenate(out)


def _audio_feature_count(num_samples: int) -> int:
    """Real features the online branch produces for this much audio: 5 per chunk."""
    cutter = LiveWindows(DEFAULT_CHUNKSIZE, HubertFeatures.window_extra_samples)
    return len(cutter.push(np.zeros(num_samples, np.float32)) + cutter.flush()) * DEFAULT_CHUNKSIZE[1]


# (overlap, audio samples, emitted frames) measured on the reference (DITTO_SPEC §5.9): 25 and 394 frames of audio.
SPEC_FRAME_COUNTS = [(70, 16000, 40), (70, 394 * 640, 410), (75, 16000, 35), (75, 394 * 640, 405),
                     (60, 394 * 640, 420)]


@pytest.mark.parametrize(("overlap", "num_samples", "expected"), SPEC_FRAME_COUNTS)
def test_frame_count_matches_reference_measurements(overlap: int, num_samples: int, expected: int) -> None:
    driver = _driver(overlap)
    num_features = _audio_feature_count(num_samples)
    assert driver.output_frame_count(num_features) == expected
    assert len(_stream(driver, np.zeros((num_features, AUDIO_FEATURE_DIM), np.float32))) == expected


@pytest.mark.parametrize("overlap", [60, 70, 72, 75])
def test_frame_count_rule_on_many_lengths(overlap: int) -> None:
    """The formula agrees with the driver for short, exact-multiple and ragged streams (V = 8 included)."""
    for num_samples in (1, 1280, 1281, 3000, 6400, 9600, 16000, 21440, 30000, 32000, 50000):
        num_features = _audio_feature_count(num_samples)
        driver = _driver(overlap)
        emitted = _stream(driver, np.zeros((num_features, AUDIO_FEATURE_DIM), np.float32))
        assert len(emitted) == driver.frames_emitted == driver.output_frame_count(num_features), \
            f"overlap {overlap}, {num_samples} samples ({num_features} features)"
        assert driver.d0 is not None  # even a stream too short to emit runs its first clip


def test_stream_shorter_than_one_clip_emits_nothing() -> None:
    driver = _driver(70)  # V = 10
    assert len(_stream(driver, np.zeros((9, AUDIO_FEATURE_DIM), np.float32), 1)) == 0
    driver = _driver(70)
    assert len(_stream(driver, np.zeros((10, AUDIO_FEATURE_DIM), np.float32), 1)) == 20


@pytest.mark.parametrize("overlap", [60, 70, 72, 75])
def test_first_output_needs_two_valid_lengths_of_features(overlap: int) -> None:
    driver = _driver(overlap)
    needed = driver.frames_needed_for_first_output
    assert needed == 2 * (80 - overlap)
    for i in range(needed - 1):
        assert len(driver.push_motion(np.zeros((1, AUDIO_FEATURE_DIM), np.float32))) == 0, f"frame {i}"
    assert driver.d0 is not None
    assert len(driver.push_motion(np.zeros((1, AUDIO_FEATURE_DIM), np.float32))) == 80 - overlap


def _random_features(n: int, seed: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, AUDIO_FEATURE_DIM)).astype(np.float32)


def test_arrival_pattern_does_not_change_the_output() -> None:
    features = _random_features(57)
    runs = []
    for pieces in (5, 1, 57, [3, 7, 1, 12]):
        driver = _driver(70, random_lmdm_stub(), GaussianNoise(9), steps=2)
        runs.append((_stream(driver, features, pieces), motion_dict_to_vector(driver.d0)))
    assert len(runs[0][0]) == 60  # (57 // 10 − 1)·10 + min(70 + 7, 20)
    for motion, d0 in runs[1:]:
        np.testing.assert_array_equal(motion, runs[0][0])
        np.testing.assert_array_equal(d0, runs[0][1])


def test_reset_returns_to_the_post_warmup_state() -> None:
    """After reset a stream equals a fresh driver's, given the x_T draws the reset driver already used."""
    steps = 4
    bank = np.random.default_rng(0).standard_normal((40, *CLIP_SHAPE)).astype(np.float32)
    lmdm = random_lmdm_stub()
    driver = _driver(70, lmdm, GaussianNoise(bank=bank), steps)
    assert len(driver.push_motion(_random_features(23, seed=1))) == 10  # 2 clips run, 3 features still queued
    used_x_T = len(lmdm.calls) // steps
    driver.reset()
    assert driver.d0 is None and driver.frames_emitted == 0
    np.testing.assert_array_equal(driver.a2m.kp_cond, driver.a2m.source_kp_cond)
    second = _random_features(41, seed=2)
    after_reset = _stream(driver, second)

    fresh_bank = np.concatenate([bank[:steps - 1], bank[steps - 1 + used_x_T:]])
    fresh = _driver(70, random_lmdm_stub(), GaussianNoise(bank=fresh_bank), steps)
    expected = _stream(fresh, second)
    assert len(expected) == fresh.output_frame_count(41) == driver.frames_emitted
    np.testing.assert_array_equal(after_reset, expected)
    np.testing.assert_array_equal(motion_dict_to_vector(driver.d0), motion_dict_to_vector(fresh.d0))


def test_push_and_end_return_motion_rows() -> None:
    driver = _driver(75)
    frames = np.concatenate([driver.push_motion(np.zeros((10, AUDIO_FEATURE_DIM), np.float32)),
                             driver.end_motion()])
    assert frames.shape == (driver.output_frame_count(10), MOTION_DIM) == (15, MOTION_DIM)
    assert set(driver.d0) == {key for key, _ in MOTION_LAYOUT}


def test_invalid_setups_and_calls_raise() -> None:
    with pytest.raises(ValueError, match="overlap 30 < valid clip length 50"):
        _driver(30)
    a2m = Audio2Motion(_constant_lmdm, random_source_motion(), Audio2MotionOptions(overlap=70, sampling_timesteps=1))
    handler = ConditionHandler(np.zeros(63), np.zeros((1, 2)), np.zeros((1, 6)))
    with pytest.raises(ValueError, match="online_mode=True"):
        OnlineAudio2Motion(a2m, handler, np.zeros((70, AUDIO_FEATURE_DIM), np.float32))
    online = Audio2Motion(_constant_lmdm, random_source_motion(), Audio2MotionOptions(overlap=70, sampling_timesteps=1,
                                                                        online_mode=True))
    with pytest.raises(ValueError, match=r"warmup_features must have shape \(70, 1024\)"):
        OnlineAudio2Motion(online, handler, np.zeros((71, AUDIO_FEATURE_DIM), np.float32))
    driver = _driver(70)
    with pytest.raises(ValueError, match=r"features must have shape \(k, 1024\)"):
        driver.push_motion(np.zeros((5, 1000), np.float32))
    driver.end_motion()
    with pytest.raises(RuntimeError, match="stream has ended"):
        driver.push_motion(np.zeros((5, AUDIO_FEATURE_DIM), np.float32))
    with pytest.raises(RuntimeError, match="stream has ended"):
        driver.end_motion()
    with pytest.raises(ValueError, match="num_features must be ≥ 0"):
        driver.output_frame_count(-1)


@pytest.mark.parametrize("overlap", [55, 56, 70])
def test_silence_warmup_features_have_one_row_per_frame(overlap: int) -> None:
    """55 and 56 frames of silence give one more offline feature (ceil quirk); the warm-up keeps `overlap` rows."""
    rng = np.random.default_rng(1)
    hubert = HubertStub(rng.standard_normal(1024).astype(np.float32), rng.standard_normal(1024).astype(np.float32))
    warmup = silence_warmup_features(HubertFeatures(hubert), overlap)
    assert warmup.shape == (overlap, AUDIO_FEATURE_DIM) and warmup.dtype == np.float32
