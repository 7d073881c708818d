"""Motion stitch (DITTO_SPEC §5.11–§5.12) against the reference's golden runs with the stitching-network
stub of golden README §3.3, plus unit checks that need no reference data.

Golden files, each one a case:
- every motion_stitch_* (README §5.6), per frame and clip by clip. Compared: x_s, x_d,
  x_d_pre_stitch (absent: the stub must not be called), delta_eye_idx_list (the blink schedule;
  absent: none), ctrl_per_frame_json (each frame's controls after setup_frames), frame_idx (the
  mirrored source frame of each call). Inputs: params_json, run_ctrl_info_json, N, delta_eye_arr,
  python_random_seed, ch_info_x_s_info_*, xd_in_* (also checked to be left unchanged),
  smoothed_src_x_s_info_*; src_x_s_info_* is compared with smoothed_src_* in test_stage_register.py;
  src_eye_open, src_eye_ball, src_sc, src_M_c2o, src_frames, src_is_image are the rest of the
  source_info, which the stitch does not read.
- every audio-to-motion run a2m_offline_*, a2m_pipeline_offline_*, a2m_online_* (README §5.5):
  its emitted motion stitched with the run's setup options (MotionStitch defaults otherwise; d0 =
  online_d0_* for online runs). Compared: stitch_x_s, stitch_x_d, emit_frame_idx, emit_ctrl_json.
  The rest of those files is covered in test_stage_motion.py / test_stage_online_motion.py.
Tolerances: controls, indices, schedules and the a2m runs' stitch_x_s (the source keypoints, no
network involved) bit-exact; x_s, x_d and x_d_pre_stitch of motion_stitch_* 1e-5 (README §4 and
the committed test), and the a2m runs' stitch_x_d 1e-5 (README §4): the stitched keypoints are up
to 2.4e-7 from the reference's torch evaluation of the stub, so they cannot be exact.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from a2m_cases import ALL_RUNS, MOTION_KEYS, frame_keys, render_options, same_ctrl, setup_stitch
from golden_stubs import STITCH_ATOL, StitchStub, assert_close, assert_golden_equal, golden_files, load_golden

from ditto_fast.options import resolve_options
from ditto_fast.stages.frame_index import mirror_index
from ditto_fast.stages.motion import bins_to_degrees
from ditto_fast.stages.stitch import (
    MotionStitch,
    eye_blink_indices,
    faded_ctrl_info,
    keypoint_transform,
    rotation_matrices,
)

STITCH_CASES = golden_files("motion_stitch_[0-9]*.npz")
SOURCE_KEYS = (*MOTION_KEYS, "kp")
DRIVEN_KEYS = tuple(MOTION_KEYS)


@pytest.fixture(scope="module")
def weights():
    return load_golden("stub_weights.npz")


def _golden_stitch(path, weights) -> tuple:
    """A golden case and a MotionStitch set up as its run was: its setup kwargs, blink table and
    python_random_seed as render options, then setup_Nd(N, fade_in, fade_out, run_ctrl_info)."""
    case = load_golden(path)
    params = case.json("params_json")
    values = {**params["setup_kwargs"], "N_d": int(case["N"]), "fade_in": params["fade_in"],
              "fade_out": params["fade_out"], "ctrl_info": frame_keys(case.json("run_ctrl_info_json"))}
    if params["delta_eye_arr_given"]:
        values["delta_eye_arr"] = np.array(case["delta_eye_arr"])
    if "python_random_seed" in case:
        values["seed"] = int(case["python_random_seed"])
    ch_x_s_info = case.group("ch_info_x_s_info_", SOURCE_KEYS, 0) if params["ch_info_given"] else None
    stub = StitchStub(weights)
    stitch = setup_stitch(stub, resolve_options(values), case.group("smoothed_src_x_s_info_", SOURCE_KEYS, 0),
                          bool(case["src_is_image"]), ch_x_s_info)
    return case, stitch, stub


def _assert_matches_golden(case, stub: StitchStub, xs: np.ndarray, xd: np.ndarray) -> None:
    assert_close(xs, case["x_s"], STITCH_ATOL, f"{case.stem} x_s")
    assert_close(xd, case["x_d"], STITCH_ATOL, f"{case.stem} x_d")
    if "x_d_pre_stitch" in case:
        assert_close(np.stack(stub.kp_driving), case["x_d_pre_stitch"], STITCH_ATOL, f"{case.stem} x_d_pre_stitch")
    else:
        assert stub.kp_driving == []  # flag_stitching=False


def _source_frames(case) -> list[int]:
    """The mirrored source frame of every call; the golden frame_idx must be it."""
    n_src = case["smoothed_src_x_s_info_exp"].shape[0]
    frames = [mirror_index(g, n_src) for g in range(int(case["N"]))]
    np.testing.assert_array_equal(frames, case["frame_idx"])
    return frames


@pytest.mark.parametrize("path", STITCH_CASES)
def test_motion_stitch_matches_golden(path, weights) -> None:
    case, stitch, stub = _golden_stitch(path, weights)
    if "delta_eye_idx_list" in case:
        assert stitch.blink_schedule == tuple(case["delta_eye_idx_list"].tolist())
    else:
        assert stitch.blink_schedule is None

    expected_ctrl = case.json("ctrl_per_frame_json")
    assert len(expected_ctrl) == int(case["N"])
    xs, xd = [], []
    for g, source in enumerate(_source_frames(case)):
        ctrl = stitch.frame_ctrl(g)
        assert same_ctrl(ctrl, expected_ctrl[g]), f"frame {g}: {ctrl} != {expected_ctrl[g]}"
        x_s_info = case.group("smoothed_src_x_s_info_", SOURCE_KEYS, source)
        x_d_info = case.group("xd_in_", DRIVEN_KEYS, g)
        x_s, x_d = stitch(x_s_info, x_d_info, **ctrl)
        assert x_s.shape == x_d.shape == (1, 21, 3) and x_s.dtype == x_d.dtype == np.float32
        for key, value in x_d_info.items():  # the inputs are left as they were
            assert np.array_equal(value, case["xd_in_" + key][g]), key
        xs.append(x_s)
        xd.append(x_d)
    _assert_matches_golden(case, stub, np.stack(xs), np.stack(xd))


@pytest.mark.parametrize("clip_frames", [80, 7])  # the whole run in one clip; clips that cut fades and controls
@pytest.mark.parametrize("path", STITCH_CASES)
def test_motion_stitch_clip_matches_golden(path, weights, clip_frames: int) -> None:
    case, stitch, stub = _golden_stitch(path, weights)
    sources = case.group("smoothed_src_x_s_info_", SOURCE_KEYS)
    generated = case.group("xd_in_", DRIVEN_KEYS)
    source_frames = np.asarray(_source_frames(case))
    xs, xd = [], []
    for start in range(0, int(case["N"]), clip_frames):
        frames = np.arange(start, min(start + clip_frames, int(case["N"])))
        x_s_info = {key: value[source_frames[frames]] for key, value in sources.items()}
        x_s, x_d = stitch.stitch_clip(x_s_info, {key: value[frames] for key, value in generated.items()}, frames)
        assert x_s.shape == x_d.shape == (len(frames), 21, 3) and x_s.dtype == x_d.dtype == np.float32
        xs.append(x_s)
        xd.append(x_d)
    for key, value in generated.items():  # the inputs are left as they were
        assert np.array_equal(value, case["xd_in_" + key]), key
    _assert_matches_golden(case, stub, np.concatenate(xs)[:, None], np.concatenate(xd)[:, None])


@pytest.mark.parametrize("path", ALL_RUNS)
def test_audio2motion_run_stitch_matches_golden(path, weights) -> None:
    """The keypoints a2m run handed to the warp network: its emitted motion (emit_xd_*), the
    mirrored source frame of each, the run's stitch options and per-frame controls."""
    case = load_golden(path)
    stitch = setup_stitch(StitchStub(weights), render_options(case),
                          case.group("smoothed_src_x_s_info_", SOURCE_KEYS, 0), bool(case["src_is_image"]))
    if "online_d0_exp" in case:  # the online worker makes its first clip's frame 0 the d0
        stitch.set_d0(case.group("online_d0_", DRIVEN_KEYS))

    n_emitted, n_src = int(case["n_emitted"]), case["smoothed_src_x_s_info_exp"].shape[0]
    sources = [mirror_index(g, n_src) for g in range(n_emitted)]
    np.testing.assert_array_equal(sources, case["emit_frame_idx"])
    expected_ctrl = case.json("emit_ctrl_json")
    assert len(expected_ctrl) == n_emitted
    for g in range(n_emitted):
        assert same_ctrl(stitch.frame_ctrl(g), expected_ctrl[g]), f"{case.stem} frame {g}"

    x_s_info = {key: value[sources] for key, value in case.group("smoothed_src_x_s_info_", SOURCE_KEYS).items()}
    x_s, x_d = stitch.stitch_clip(x_s_info, case.group("emit_xd_", DRIVEN_KEYS), np.arange(n_emitted))
    assert_golden_equal(x_s[:, None], case["stitch_x_s"], f"{case.stem} stitch_x_s")
    assert_close(x_d[:, None], case["stitch_x_d"], STITCH_ATOL, f"{case.stem} stitch_x_d")


def test_keypoint_transform_matches_float64_formula() -> None:
    rng = np.random.default_rng(0)
    info = {"kp": rng.normal(size=(1, 63)).astype(np.float32), "exp": rng.normal(size=(1, 63)).astype(np.float32) / 10,
            "scale": np.array([[1.3]], np.float32), "t": np.array([[0.1, -0.2, 5.0]], np.float32)}
    for key in ("pitch", "yaw", "roll"):
        info[key] = rng.normal(size=(1, 66)).astype(np.float32) * 3
    got = keypoint_transform(info)

    p, y, r = (np.radians(float(bins_to_degrees(info[k])[0])) for k in ("pitch", "yaw", "roll"))
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    kp = info["kp"].reshape(21, 3).astype(np.float64)
    expected = 1.3 * (kp @ (rz @ ry @ rx).T + info["exp"].reshape(21, 3)) + np.array([0.1, -0.2, 0.0])
    np.testing.assert_allclose(got[0], expected, rtol=0, atol=1e-5)

    # Angles already in degrees (what a delta_* control leaves behind) give the same keypoints.
    in_degrees = dict(info, **{k: bins_to_degrees(info[k]) for k in ("pitch", "yaw", "roll")})
    np.testing.assert_array_equal(keypoint_transform(in_degrees), got)


def test_rotation_matrices_are_batched_rotations() -> None:
    angles = np.array([0.0, 30.0, -75.0], np.float32)
    rot = rotation_matrices(angles, angles[::-1].copy(), angles + 10)
    assert rot.shape == (3, 3, 3) and rot.dtype == np.float32
    np.testing.assert_allclose(rot @ np.transpose(rot, (0, 2, 1)), np.broadcast_to(np.eye(3), (3, 3, 3)), atol=1e-6)
    np.testing.assert_allclose(rotation_matrices(*np.zeros((3, 1), np.float32))[0], np.eye(3), atol=0)


@pytest.mark.parametrize(("n", "k", "open_n", "expected_starts"), [
    (36, 4, 8, [8, 20]),  # blinks at gap, gap + K + gap, ...; none within max(gap, K) of the end
    (36, 4, [5, 7], [5, 16, 25]),  # gaps taken in turn
    (40, 3, -1, []),
    (10, 4, 8, []),
])
def test_blink_schedule_fixed_gaps(n: int, k: int, open_n: int | list[int], expected_starts: list[int]) -> None:
    expected = [0] * n
    for start in expected_starts:
        expected[start:start + k] = range(k)
    assert eye_blink_indices(n, k, open_n, random.Random(0)) == expected


def test_blink_schedule_random_gaps_are_seeded_and_in_range() -> None:
    schedule = eye_blink_indices(3000, 5, 0, random.Random(7))
    assert schedule == eye_blink_indices(3000, 5, 0, random.Random(7))
    starts = [i for i, v in enumerate(schedule) if v == 1]
    gaps = np.diff(starts) - 5
    assert len(starts) > 20 and gaps.min() >= 60 and gaps.max() <= 100 and 60 <= starts[0] <= 100


def test_fade_ramps_overwrite_and_keep_other_controls() -> None:
    frames = faded_ctrl_info({1: {"delta_yaw": 2.0, "fade_alpha": 0.3}, 7: {"vad_alpha": 0.5}}, 10, 4, 3)
    assert frames[1] == {"delta_yaw": 2.0, "fade_alpha": 0.25}
    assert [frames[i]["fade_alpha"] for i in range(4)] == [0, 0.25, 0.5, 0.75]
    assert 4 not in frames and 5 not in frames
    assert [frames[i]["fade_alpha"] for i in range(6, 10)] == [1, 2 / 3, 1 / 3, 0]
    assert frames[7]["vad_alpha"] == 0.5


def _toy_source() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    info = {key: rng.normal(size=(1, 66)).astype(np.float32) for key in ("pitch", "yaw", "roll")}
    info.update(scale=np.array([[1.1]], np.float32), t=rng.normal(size=(1, 3)).astype(np.float32),
                exp=rng.normal(size=(1, 63)).astype(np.float32) / 20, kp=rng.normal(size=(1, 63)).astype(np.float32))
    return info


def test_seeded_blinks_leave_global_random_alone_and_keep_schedule_for_same_count() -> None:
    source = _toy_source()
    blinks = np.zeros((3, 63), np.float32)
    state = random.getstate()
    first, second = MotionStitch(), MotionStitch()
    for stitch in (first, second):
        stitch.setup(source, is_image=True, N_d=300, delta_eye_arr=blinks, flag_stitching=False, seed=11)
    assert random.getstate() == state
    assert first.blink_schedule == second.blink_schedule
    assert first.blink_schedule == tuple(eye_blink_indices(300, 3, 0, random.Random(11)))
    first.setup_frames(300)  # same count: no redraw
    assert first.blink_schedule == second.blink_schedule


def test_first_frame_reproduces_source_pose_and_relative_motion() -> None:
    source = _toy_source()
    stitch = MotionStitch()
    stitch.setup(source, is_image=True, drive_eye=False, flag_stitching=False)
    generated = {key: value * 0.5 for key, value in source.items() if key in DRIVEN_KEYS}
    x_s, x_d = stitch(source, generated)
    # Relative to itself, the first frame is the source: same keypoints.
    np.testing.assert_allclose(x_d, x_s, atol=1e-6)
    np.testing.assert_allclose(x_s, keypoint_transform(source), atol=0)


def test_rejects_bad_setups_and_controls() -> None:
    """Option values are checked by ditto_fast.options (test_options.py); the stitch checks its
    wiring, its motion data and the controls given to it frame by frame."""
    source = _toy_source()
    with pytest.raises(ValueError, match="no stitch_network"):
        MotionStitch().setup(source, is_image=True)
    with pytest.raises(ValueError, match="missing keys"):
        MotionStitch().setup({"exp": source["exp"]}, is_image=True, flag_stitching=False)
    stitch = MotionStitch()
    with pytest.raises(RuntimeError, match="setup"):
        stitch(source, source)
    stitch.setup(source, is_image=True, flag_stitching=False)
    with pytest.raises(ValueError, match=r"unknown controls \['delta_pich'\] \(did you mean 'delta_pitch'\?\)"):
        stitch(source, {k: source[k] for k in DRIVEN_KEYS}, delta_pich=3.0)
