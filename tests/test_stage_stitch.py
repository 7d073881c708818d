"""Motion stitch (DITTO_SPEC §5.11–§5.12) against the reference's golden runs (golden README §5.6)
with the stitching-network stub of README §3.3, plus unit checks that need no reference data."""

from __future__ import annotations

import json
import pathlib
import random

import numpy as np
import pytest
from golden_stubs import StitchStub

from ditto_fast.stages.motion import bins_to_degrees
from ditto_fast.stages.stitch import (
    MOTION_KEYS,
    MotionStitch,
    eye_blink_indices,
    faded_ctrl_info,
    keypoint_transform,
    rotation_matrices,
)

STITCH_CASES = [f"motion_stitch_{k}.npz" for k in range(7)]
# Golden README §4: the reference evaluates the stub in torch; a NumPy evaluation (and other
# CPUs' sin/cos/exp) may differ in the last bits.
KEYPOINT_ATOL = 1e-5
DRIVEN_KEYS = ("scale", "pitch", "yaw", "roll", "t", "exp")


def _decode(value: object) -> object:
    """Undo the golden README §2 JSON encoding (tuples and ndarrays)."""
    if isinstance(value, dict):
        if "__tuple__" in value:
            return tuple(_decode(v) for v in value["__tuple__"])
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=value["dtype"]).reshape(value["shape"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _json(case: np.lib.npyio.NpzFile, key: str) -> object:
    return _decode(json.loads(str(case[key])))


def _golden(shared_ref: pathlib.Path, name: str) -> np.lib.npyio.NpzFile:
    path = shared_ref / "golden" / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return np.load(path)


def _info(case: np.lib.npyio.NpzFile, prefix: str, index: int | None = None) -> dict[str, np.ndarray]:
    return {key: (case[prefix + key] if index is None else case[prefix + key][index]).copy()
            for key in MOTION_KEYS if prefix + key in case.files}


@pytest.fixture(scope="module")
def weights(shared_ref: pathlib.Path) -> dict[str, np.ndarray]:
    return dict(_golden(shared_ref, "stub_weights.npz"))


def _same_ctrl(got: dict, expected: dict) -> bool:
    if got.keys() != expected.keys():
        return False
    return all(np.array_equal(got[k], expected[k]) if isinstance(expected[k], np.ndarray) else got[k] == expected[k]
               for k in expected)


def _golden_stitch(shared_ref: pathlib.Path, weights: dict, name: str,
                   ) -> tuple[np.lib.npyio.NpzFile, MotionStitch, StitchStub]:
    """A golden case and a MotionStitch set up as its run was (setup, then setup_frames)."""
    case = _golden(shared_ref, name)
    params = _json(case, "params_json")
    setup_kwargs = dict(params["setup_kwargs"])
    setup_kwargs.pop("smo_k_s")  # source smoothing: already applied to the smoothed_src_* inputs
    if params["delta_eye_arr_given"]:
        setup_kwargs["delta_eye_arr"] = case["delta_eye_arr"]
    if params["ch_info_given"]:
        setup_kwargs["ch_x_s_info"] = _info(case, "ch_info_x_s_info_")
    seed = int(case["python_random_seed"]) if "python_random_seed" in case.files else None

    stub = StitchStub(weights)
    stitch = MotionStitch(stub)
    stitch.setup(_info(case, "smoothed_src_x_s_info_", 0), is_image=params["source"] == "image",
                 seed=seed, **setup_kwargs)
    stitch.setup_frames(int(case["N"]), params["fade_in"], params["fade_out"], _json(case, "run_ctrl_info_json"))
    return case, stitch, stub


def _assert_matches_golden(case: np.lib.npyio.NpzFile, stub: StitchStub, xs: np.ndarray, xd: np.ndarray) -> None:
    np.testing.assert_allclose(xs, case["x_s"], rtol=0, atol=KEYPOINT_ATOL)
    np.testing.assert_allclose(xd, case["x_d"], rtol=0, atol=KEYPOINT_ATOL)
    if "x_d_pre_stitch" in case.files:
        np.testing.assert_allclose(np.stack(stub.kp_driving), case["x_d_pre_stitch"], rtol=0, atol=KEYPOINT_ATOL)
    else:
        assert stub.kp_driving == []  # flag_stitching=False


@pytest.mark.parametrize("name", STITCH_CASES)
def test_motion_stitch_matches_golden(shared_ref: pathlib.Path, weights: dict, name: str) -> None:
    case, stitch, stub = _golden_stitch(shared_ref, weights, name)
    if "delta_eye_idx_list" in case.files:
        assert stitch.blink_schedule == tuple(case["delta_eye_idx_list"].tolist())
    else:
        assert stitch.blink_schedule is None

    expected_ctrl = _json(case, "ctrl_per_frame_json")
    xs, xd = [], []
    for g in range(int(case["N"])):
        ctrl = stitch.frame_ctrl(g)
        assert _same_ctrl(ctrl, expected_ctrl[g]), f"frame {g}: {ctrl} != {expected_ctrl[g]}"
        x_s_info = _info(case, "smoothed_src_x_s_info_", int(case["frame_idx"][g]))
        x_d_info = _info(case, "xd_in_", g)
        x_s, x_d = stitch(x_s_info, x_d_info, **ctrl)
        assert x_s.shape == x_d.shape == (1, 21, 3) and x_s.dtype == x_d.dtype == np.float32
        for key, value in x_d_info.items():  # the inputs are left as they were
            assert np.array_equal(value, case["xd_in_" + key][g]), key
        xs.append(x_s)
        xd.append(x_d)
    _assert_matches_golden(case, stub, np.stack(xs), np.stack(xd))


@pytest.mark.parametrize("clip_frames", [80, 7])  # the whole run in one clip; clips that cut fades and controls
@pytest.mark.parametrize("name", STITCH_CASES)
def test_motion_stitch_clip_matches_golden(shared_ref: pathlib.Path, weights: dict, name: str,
                                           clip_frames: int) -> None:
    case, stitch, stub = _golden_stitch(shared_ref, weights, name)
    sources = _info(case, "smoothed_src_x_s_info_")
    generated = _info(case, "xd_in_")
    xs, xd = [], []
    for start in range(0, int(case["N"]), clip_frames):
        frames = np.arange(start, min(start + clip_frames, int(case["N"])))
        x_s_info = {key: value[case["frame_idx"][frames]] for key, value in sources.items()}
        x_s, x_d = stitch.stitch_clip(x_s_info, {key: value[frames] for key, value in generated.items()}, frames)
        assert x_s.shape == x_d.shape == (len(frames), 21, 3) and x_s.dtype == x_d.dtype == np.float32
        xs.append(x_s)
        xd.append(x_d)
    for key, value in generated.items():  # the inputs are left as they were
        assert np.array_equal(value, case["xd_in_" + key]), key
    _assert_matches_golden(case, stub, np.concatenate(xs)[:, None], np.concatenate(xd)[:, None])


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
    for bad in (1.5, [5, -6], "8"):
        with pytest.raises(ValueError, match="delta_eye_open_n"):
            eye_blink_indices(10, 2, bad, random.Random(0))


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


def test_rejects_bad_options_and_controls() -> None:
    source = _toy_source()
    with pytest.raises(ValueError, match="no stitch_network"):
        MotionStitch().setup(source, is_image=True)
    with pytest.raises(ValueError, match="fade_type"):
        MotionStitch().setup(source, is_image=True, fade_type="x", flag_stitching=False)
    with pytest.raises(ValueError, match="use_d_keys"):
        MotionStitch().setup(source, is_image=True, use_d_keys=("exp", "mouth"), flag_stitching=False)
    with pytest.raises(ValueError, match="delta_eye_arr"):
        MotionStitch().setup(source, is_image=True, delta_eye_arr=np.zeros((2, 60)), flag_stitching=False)
    with pytest.raises(ValueError, match="missing keys"):
        MotionStitch().setup({"exp": source["exp"]}, is_image=True, flag_stitching=False)
    stitch = MotionStitch()
    with pytest.raises(RuntimeError, match="setup"):
        stitch(source, source)
    stitch.setup(source, is_image=True, flag_stitching=False)
    with pytest.raises(ValueError, match="unknown controls"):
        stitch(source, {k: source[k] for k in DRIVEN_KEYS}, delta_pich=3.0)
    with pytest.raises(ValueError, match="ctrl_info"):
        stitch.setup_frames(10, ctrl_info={2: {"fade": 0.5}})
