"""MotionStitch.stitch_clip: a clip of frames at once is bit-identical to the per-frame path (the
one the golden runs check) for every control, clip length and source kind, and advances the same
state (first frame, fade target, gaze reference, blink position)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from golden_stubs import StitchStub

from ditto_fast.options import resolve_options
from ditto_fast.stages.frame_index import mirror_index
from ditto_fast.stages.motion import MOTION_DIM, bins_to_degrees, motion_vector_to_dict
from ditto_fast.stages.stitch import (
    MOTION_KEYS,
    MotionStitch,
    apply_controls,
    control_columns,
    gaze_fix,
    keypoint_transform,
    lerp_toward,
    motion_batch,
)

NUM_FRAMES = 90
SHAPES = {"scale": 1, "pitch": 66, "yaw": 66, "roll": 66, "t": 3, "exp": 63, "kp": 63}


def _source(num_src: int, seed: int) -> dict[str, np.ndarray]:
    """Avatar-style source motion: each key (num_src, 1, d) float32."""
    rng = np.random.default_rng(seed)
    motion = {key: rng.normal(size=(num_src, 1, width)).astype(np.float32) for key, width in SHAPES.items()}
    motion["scale"] = rng.uniform(0.9, 1.2, (num_src, 1, 1)).astype(np.float32)
    motion["exp"] /= 20
    return motion


def _motion(num_frames: int, seed: int) -> np.ndarray:
    """(num_frames, 265) driving motion vectors around a neutral pose."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(num_frames, MOTION_DIM)) * 0.3).astype(np.float32)


def _stitch_stub(seed: int) -> StitchStub:
    rng = np.random.default_rng(seed)
    sizes = [(128, 126), (128, 128), (64, 128), (65, 64)]
    weights = {}
    for i, (rows, cols) in enumerate(sizes):
        weights[f"stitch_W{i}"] = (rng.normal(size=(rows, cols)) / np.sqrt(cols)).astype(np.float32)
        weights[f"stitch_b{i}"] = (rng.normal(size=rows) * 0.01).astype(np.float32)
    return StitchStub(weights)


def _varied_ctrl_info(num_frames: int, seed: int) -> dict[int, dict[str, Any]]:
    """Every control, on overlapping and non-consecutive frames, with values that change per frame
    (vad_alpha ≥ 1 included: inert), NumPy and Python scalars, array and scalar delta_exp."""
    rng = np.random.default_rng(seed)
    frames: dict[int, dict[str, Any]] = {}
    for i in range(num_frames):
        ctrl: dict[str, Any] = {}
        if i % 5 == 0:
            ctrl.update(delta_yaw=i / 3 - 10, alpha_yaw=1.1)
        if i % 7 == 0:
            ctrl["vad_alpha"] = (0.3, 0.7, 1.1)[i % 3]
        if i % 11 == 0:
            ctrl["delta_exp"] = rng.normal(size=63).astype(np.float32) / 50 if i % 2 else 0.01 * i
        if i % 13 == 3:
            ctrl.update(delta_pitch=np.float64(-4.5), alpha_roll=np.float32(0.5), delta_roll=2)
        if 30 <= i < 36:
            ctrl.update(fade_alpha=(i - 30) / 6, fade_out_keys=["exp", "yaw", "t", "kp"])
        if 40 <= i < 44:
            ctrl.update(alpha_pitch=0.8, fade_alpha=0.25)
        if ctrl:
            frames[i] = ctrl
    return frames


# (source frames, setup kwargs, setup_frames kwargs)
CONFIGS: dict[str, tuple[int, dict[str, Any], dict[str, Any]]] = {
    "image-defaults": (1, {"is_image": True}, {}),
    "image-everything-fade-d0": (1, {
        "is_image": True, "use_d_keys": {"exp": 0.8, "pitch": 1.2, "yaw": 0.9, "roll": 1.0, "t": 0.5},
        "delta_eye_arr": np.linspace(-0.02, 0.02, 4 * 63, dtype=np.float32).reshape(4, 63),
        "delta_eye_open_n": [6, 9], "fade_type": "d0", "fade_out_keys": ("exp", "yaw"),
        "overall_ctrl_info": {"delta_roll": 3.0, "alpha_pitch": 0.9}, "ch_x_s_info": "ch",
    }, {"fade_in": 8, "fade_out": 10, "ctrl_info": "varied"}),
    "image-fade-s-absolute": (1, {
        "is_image": True, "relative_d": False, "use_d_keys": {"exp": 1.1, "yaw": 0.6, "kp": 0.5},
        "fade_type": "s", "drive_eye": True,
    }, {"fade_in": 5, "fade_out": 7, "ctrl_info": "varied"}),
    "video-eyes-blinks-fade-s": (7, {
        "is_image": False, "drive_eye": True, "delta_eye_arr": np.full((3, 63), 0.01, np.float32),
        "delta_eye_open_n": 0, "fade_type": "s", "seed": 5,
    }, {"fade_in": 4, "fade_out": 6, "ctrl_info": "varied"}),
    "video-defaults-no-stitching": (5, {"is_image": False, "flag_stitching": False}, {"ctrl_info": "varied"}),
    "video-pose-keys-absolute": (4, {
        "is_image": False, "relative_d": False, "use_d_keys": ["exp", "pitch", "t"], "fade_type": "d0",
        "fade_out_keys": ("exp", "pitch", "roll"),
    }, {"fade_out": 12, "ctrl_info": "a list"}),
}


def _make(config: str, num_frames: int = NUM_FRAMES) -> tuple[MotionStitch, StitchStub, dict[str, np.ndarray]]:
    num_src, setup_kwargs, frames_kwargs = CONFIGS[config]
    source = _source(num_src, seed=1)
    setup_kwargs, frames_kwargs = dict(setup_kwargs), dict(frames_kwargs)
    if setup_kwargs.get("ch_x_s_info") == "ch":
        setup_kwargs["ch_x_s_info"] = {key: value[0] * 1.3 for key, value in _source(1, seed=2).items()}
    if frames_kwargs.get("ctrl_info") == "varied":
        frames_kwargs["ctrl_info"] = _varied_ctrl_info(num_frames, seed=3)
    if frames_kwargs.get("ctrl_info") == "a list":  # the options store a list as {index: controls}
        ctrl_list = [{"delta_yaw": float(i % 4)} for i in range(NUM_FRAMES)]
        frames_kwargs["ctrl_info"] = resolve_options({"ctrl_info": ctrl_list}).ctrl_info
    stub = _stitch_stub(seed=4)
    stitch = MotionStitch(stub)
    stitch.setup({key: value[0] for key, value in source.items()}, N_d=num_frames, **setup_kwargs)
    stitch.setup_frames(num_frames, **frames_kwargs)
    return stitch, stub, source


def _source_rows(source: dict[str, np.ndarray], frames: np.ndarray) -> dict[str, np.ndarray]:
    """Each frame's mirrored source-frame motion, per key (N, 1, d), as the engines gather it."""
    rows = [mirror_index(int(i), len(source["kp"])) for i in frames]
    return {key: value[rows] for key, value in source.items()}


def _per_frame(stitch: MotionStitch, source: dict[str, np.ndarray], motion: np.ndarray,
               frames: range) -> tuple[np.ndarray, np.ndarray]:
    """The per-frame path over `frames`, as the engines drive it today."""
    xs, xd = [], []
    for i in frames:
        x_s_info = {key: value[mirror_index(i, len(source["kp"]))] for key, value in source.items()}
        x_s, x_d = stitch(x_s_info, motion_vector_to_dict(motion[i]), **stitch.frame_ctrl(i))
        xs.append(x_s)
        xd.append(x_d)
    return np.concatenate(xs), np.concatenate(xd)


def _clips(stitch: MotionStitch, source: dict[str, np.ndarray], motion: np.ndarray, frames: range,
           clip_frames: int) -> tuple[np.ndarray, np.ndarray]:
    xs, xd = [], []
    for start in range(frames.start, frames.stop, clip_frames):
        ids = np.arange(start, min(start + clip_frames, frames.stop))
        x_s, x_d = stitch.stitch_clip(_source_rows(source, ids), motion[ids], ids)
        assert x_s.shape == x_d.shape == (len(ids), 21, 3) and x_s.dtype == x_d.dtype == np.float32
        xs.append(x_s)
        xd.append(x_d)
    return np.concatenate(xs), np.concatenate(xd)


def _assert_bitwise_equal(got: np.ndarray, expected: np.ndarray) -> None:
    """Same float32 bits (array_equal would let -0.0 pass for 0.0)."""
    assert got.shape == expected.shape and got.dtype == expected.dtype == np.float32
    mismatch = got.view(np.uint32) != expected.view(np.uint32)
    assert not mismatch.any(), f"{mismatch.sum()} values differ, max {np.abs(got - expected).max()}"


@pytest.mark.parametrize("clip_frames", [1, 13, 80, NUM_FRAMES])
@pytest.mark.parametrize("config", CONFIGS)
def test_clip_is_bitwise_the_per_frame_path(config: str, clip_frames: int) -> None:
    motion = _motion(NUM_FRAMES, seed=6)
    reference, reference_stub, source = _make(config)
    expected = _per_frame(reference, source, motion, range(NUM_FRAMES))
    stitch, stub, _ = _make(config)
    got = _clips(stitch, source, motion, range(NUM_FRAMES), clip_frames)

    for got_part, expected_part in zip(got, expected):
        _assert_bitwise_equal(got_part, expected_part)
    # The stitching network sees the same (1, 21, 3) inputs, once per frame (its contract is batch 1).
    assert len(stub.kp_driving) == len(reference_stub.kp_driving)
    if stub.kp_driving:
        _assert_bitwise_equal(np.concatenate(stub.kp_driving), np.concatenate(reference_stub.kp_driving))
    assert stitch.blink_schedule == reference.blink_schedule


def test_clips_and_single_frames_share_state() -> None:
    """Per-frame calls and clips interleave: first frame, fade target and blink position carry over."""
    motion = _motion(NUM_FRAMES, seed=7)
    reference, _, source = _make("image-everything-fade-d0")
    expected = _per_frame(reference, source, motion, range(NUM_FRAMES))
    stitch, _, _ = _make("image-everything-fade-d0")
    pieces = [_per_frame(stitch, source, motion, range(0, 1)), _clips(stitch, source, motion, range(1, 37), 36),
              _per_frame(stitch, source, motion, range(37, 40)), _clips(stitch, source, motion, range(40, 90), 50)]
    for part in range(2):
        _assert_bitwise_equal(np.concatenate([piece[part] for piece in pieces]), expected[part])


def test_online_d0_is_used_by_clips() -> None:
    """set_d0 before the first clip (online mode) is what the clip is relative to."""
    motion = _motion(20, seed=8)
    d0 = motion_vector_to_dict(_motion(1, seed=9)[0])
    reference, _, source = _make("image-defaults", 20)
    reference.set_d0(d0)
    expected = _per_frame(reference, source, motion, range(20))
    stitch, _, _ = _make("image-defaults", 20)
    stitch.set_d0(d0)
    got = _clips(stitch, source, motion, range(20), 20)
    for part in range(2):
        _assert_bitwise_equal(got[part], expected[part])
    without_d0, _, _ = _make("image-defaults", 20)
    assert not np.array_equal(_clips(without_d0, source, motion, range(20), 20)[1], got[1])


def test_video_rows_use_their_own_source_frames() -> None:
    stitch, _, source = _make("video-defaults-no-stitching", 12)
    frames = np.arange(12)
    x_s, _ = stitch.stitch_clip(_source_rows(source, frames), _motion(12, seed=10), frames)
    expected = np.concatenate([keypoint_transform({key: value[mirror_index(i, 5)] for key, value in source.items()})
                               for i in frames])
    _assert_bitwise_equal(x_s, expected)
    assert not np.array_equal(x_s[0], x_s[1]) and np.array_equal(x_s[4], x_s[5])  # mirrored: 0..4, 4..0, ...


def test_image_source_may_be_given_once_for_the_clip() -> None:
    motion = _motion(30, seed=11)
    frames = np.arange(30)
    once, _, source = _make("image-everything-fade-d0", 30)
    per_row, _, _ = _make("image-everything-fade-d0", 30)
    got = once.stitch_clip({key: value[0] for key, value in source.items()}, motion, frames)
    expected = per_row.stitch_clip(_source_rows(source, frames), motion, frames)
    for part in range(2):
        _assert_bitwise_equal(got[part], expected[part])


def test_motion_batch_rows_are_the_per_frame_dicts() -> None:
    motion = _motion(9, seed=12)
    batch = motion_batch(motion)
    for i, row in enumerate(motion):
        frame = motion_vector_to_dict(row)
        assert batch.keys() == frame.keys()
        for key, value in frame.items():
            assert batch[key][i:i + 1].shape == value.shape and np.array_equal(batch[key][i:i + 1], value), key
    with pytest.raises(ValueError, match=r"shape \(N, 265\)"):
        motion_batch(motion[:, :200])


def test_motion_as_vectors_or_dict_gives_the_same_frames() -> None:
    motion = _motion(15, seed=13)
    frames = np.arange(15)
    from_vectors, _, source = _make("video-eyes-blinks-fade-s", 15)
    from_dict, _, _ = _make("video-eyes-blinks-fade-s", 15)
    as_dict = {key: value[:, None] for key, value in motion_batch(motion).items()}  # (N, 1, d) like the goldens
    got = from_dict.stitch_clip(_source_rows(source, frames), as_dict, frames)
    expected = from_vectors.stitch_clip(_source_rows(source, frames), motion, frames)
    for part in range(2):
        _assert_bitwise_equal(got[part], expected[part])


def test_empty_clip_changes_nothing() -> None:
    motion = _motion(10, seed=14)
    reference, _, source = _make("image-everything-fade-d0", 10)
    expected = _per_frame(reference, source, motion, range(10))
    stitch, _, _ = _make("image-everything-fade-d0", 10)
    x_s, x_d = stitch.stitch_clip(_source_rows(source, np.arange(0)), motion[:0], np.arange(0))
    assert x_s.shape == x_d.shape == (0, 21, 3)
    got = _clips(stitch, source, motion, range(10), 10)
    for part in range(2):
        _assert_bitwise_equal(got[part], expected[part])


def test_numeric_controls_act_as_python_floats() -> None:
    """A NumPy float64 (or float32, or int) control gives float32 keypoints equal to a Python float's."""
    source = {key: value[0] for key, value in _source(1, seed=15).items()}
    generated = motion_vector_to_dict(_motion(1, seed=16)[0])
    results = []
    for value in (np.float64(0.75), 0.75, np.float32(0.75)):
        stitch = MotionStitch()
        stitch.setup(source, is_image=True, flag_stitching=False, fade_type="s")
        stitch(source, generated)
        results.append(stitch(source, generated, vad_alpha=value, alpha_yaw=value, delta_pitch=value * 4,
                              fade_alpha=value, delta_exp=value / 10)[1])
    for result in results:
        _assert_bitwise_equal(result, results[1])


def test_control_columns_round_like_the_reference_scalars() -> None:
    """Per-row columns give, row by row, what the reference's expressions give with Python-float
    controls next to float32 arrays (NumPy rounds the scalar to float32 first)."""
    rng = np.random.default_rng(20)
    exp, exp_s = (rng.normal(size=(4, 63)).astype(np.float32) for _ in range(2))
    logits = rng.normal(size=(4, 66)).astype(np.float32) * 3
    alphas, deltas, vads = [0.1, 0.3, 2 / 3, 0.9], [-7.3, 0.1, 3.0, 12.7], [0.3, 1.0, 1.7, 0.55]
    info = {"exp": exp, "yaw": logits}
    controlled = apply_controls(info, exp_s, {
        "vad_alpha": control_columns("vad_alpha", vads), "delta_yaw": control_columns("delta_yaw", deltas),
        "alpha_yaw": control_columns("alpha_yaw", alphas), "delta_exp": control_columns("delta_exp", alphas)})
    faded = lerp_toward(exp, exp_s, control_columns("fade_alpha", alphas))
    for i in range(4):
        row_exp = exp[i:i + 1] * vads[i] + exp_s[i:i + 1] * (1 - vads[i]) if vads[i] < 1 else exp[i:i + 1]
        _assert_bitwise_equal(controlled["exp"][i:i + 1], row_exp + alphas[i])
        _assert_bitwise_equal(controlled["yaw"][i], (bins_to_degrees(logits[i:i + 1]) + deltas[i]) * alphas[i])
        _assert_bitwise_equal(faded[i:i + 1], exp[i:i + 1] * alphas[i] + exp_s[i:i + 1] * (1 - alphas[i]))
    assert controlled["yaw"].shape == (4, 1)  # degrees, one per row


def test_gaze_fix_rows_match_the_scalar_formula() -> None:
    """Each row's eye offsets are float64 Python-float products added to float32 exp, the gain
    depending on that row's turn direction."""
    rng = np.random.default_rng(21)
    exp = rng.normal(size=(3, 63)).astype(np.float32)
    yaw_d, pitch_d = np.array([5.0, -4.0, 0.0]), np.array([1.5, -2.0, 3.0])
    fixed = gaze_fix(exp, (yaw_d, pitch_d), (np.array([1.0]), np.array([-1.0])))
    for i in range(3):
        dx, dy = (yaw_d[i] - 1.0) * 0.26, (pitch_d[i] + 1.0) * 0.28
        expected = exp[i].copy()
        expected[33] += dx * (0.0007 if dx > 0 else 0.001)
        expected[45] += dx * (0.001 if dx > 0 else 0.0007)
        expected[34] += dy * -0.001
        expected[46] += dy * -0.001
        _assert_bitwise_equal(fixed[i], expected)


@pytest.mark.parametrize(("ctrl", "message"), [
    ({"delta_yaw": "3"}, "['delta_yaw']='3' is invalid: expected a finite number"),
    ({"vad_alpha": True}, "['vad_alpha']=True is invalid: expected a finite number"),
    ({"delta_exp": np.zeros(5)}, "['delta_exp']=array of shape (5,) is invalid: expected a finite number or 63"),
    ({"fade_out_keys": "exp"}, "['fade_out_keys']='exp' is invalid: expected a tuple of motion keys"),
    ({"fade_out_keys": ["exp", "mouth"]}, "['fade_out_keys']=['exp', 'mouth'] is invalid"),
])
def test_rejects_bad_control_values(ctrl: dict[str, Any], message: str) -> None:
    """Per-frame keyword controls are checked by the options' rule, like ctrl_info's entries."""
    source = {key: value[0] for key, value in _source(1, seed=17).items()}
    stitch = MotionStitch()
    stitch.setup(source, is_image=True, flag_stitching=False)
    with pytest.raises(ValueError) as per_frame:
        stitch(source, motion_vector_to_dict(_motion(1, seed=18)[0]), **ctrl)
    assert str(per_frame.value).startswith("option motion stitch controls[") and message in str(per_frame.value)
    with pytest.raises(ValueError) as as_option:
        resolve_options({"ctrl_info": {2: ctrl}})
    assert str(as_option.value).startswith("option ctrl_info[2][") and message in str(as_option.value)


def test_rejects_mismatched_clip_inputs() -> None:
    stitch, _, source = _make("video-defaults-no-stitching", 10)
    motion = _motion(6, seed=19)
    frames = np.arange(6)
    with pytest.raises(ValueError, match="5 frame_ids for driving motion of \\[6\\] frames"):
        stitch.stitch_clip(_source_rows(source, frames), motion, frames[:5])
    with pytest.raises(ValueError, match="source motion: 'kp' has shape"):
        stitch.stitch_clip({**_source_rows(source, frames), "kp": source["kp"][:4]}, motion, frames)
    one_frame = {key: value[:1] for key, value in motion_batch(motion).items()}
    with pytest.raises(ValueError, match="driving motion of \\[1\\] frames"):
        stitch.stitch_clip(_source_rows(source, frames), one_frame, frames)
    with pytest.raises(RuntimeError, match="setup"):
        MotionStitch().stitch_clip(_source_rows(source, frames), motion, frames)
    assert set(MOTION_KEYS) == set(source)
