"""Motion stitch: generated motion + source motion → source and driving keypoints
(DITTO_SPEC §5.11–§5.12).

Per frame: the generated motion is made relative to the first generated frame and mixed with the
source motion, the expression is masked (lips, and eyes or a blink schedule, from the generated
motion; the rest from the source), then come the user controls (VAD damping, pose offsets and
gains, expression offset), the fades, the gaze correction, the keypoint transform and the
stitching MLP.

The algebra lives in small pure functions over batched motion dicts: per key an array whose
leading axis is the frame ({scale (B,1), pitch/yaw/roll (B,66) logits or (B,1) degrees, t (B,3),
exp (B,63), kp (B,63)}, float32). `MotionStitch` holds the per-render state (first frame, blink
schedule, cached source) and runs a whole clip of frames at once (`stitch_clip`); the per-frame
call is the one-frame case of the same code. Frames whose controls have the same names are
computed together, each control as a per-frame column, so a clip costs a handful of vectorised
passes however its controls vary.

Every function keeps the reference's float32 operation order, and rounds numeric controls the
way NumPy rounds the reference's Python-float scalars, so x_s and the x_d handed to the stitching
network are bit-identical to the reference's (all golden runs, NumPy 2.4 on x86-64), and a clip
is bit-identical to its frames one by one.

Deliberate deviations, all in cases where the reference misbehaves or is ill-defined:
- inputs are never modified (the reference scales the caller's arrays in place when
  `use_d_keys` is a dict and `relative_d` is off; with `kp` in that dict it would compound the
  source's own kp frame after frame);
- a list `ctrl_info` may be combined with fade ramps (the reference raises AttributeError);
- unknown control names and option values are rejected instead of ignored (by `ditto_fast.options`,
  which validates every setting and control this stage takes);
- numeric controls act as Python floats whatever their type (a NumPy float64 control would turn
  the reference's float32 motion into float64), and `delta_exp` is applied in float32.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ditto_fast.backends.base import Network
from ditto_fast.options import MOTION_KEYS, Controls, canonical_controls
from ditto_fast.stages.motion import _SCALE_OFFSET, MOTION_DIM, MOTION_LAYOUT, bins_to_degrees

MotionInfo = dict[str, np.ndarray]

NUM_KEYPOINTS = 21
EXP_DIM = 3 * NUM_KEYPOINTS
POSE_KEYS = ("pitch", "yaw", "roll")
EYE_KEYPOINTS = (11, 13, 15, 16, 18)
LIP_KEYPOINTS = (6, 12, 14, 17, 19, 20)

IMAGE_USE_D_KEYS = ("exp", "pitch", "yaw", "roll", "t")
VIDEO_USE_D_KEYS = ("exp",)
# Keys whose weights are scaled by the condition-source/source scale ratio.
SCALE_RATIO_KEYS = frozenset({"exp", "pitch", "yaw", "roll"})

BLINK_SCHEDULE_FRAMES = 3000  # schedule length while the frame count is unknown
RANDOM_OPEN_FRAMES = (60, 100)  # inclusive range of random gaps between blinks

# Gaze correction: head-turn degrees → offsets of the eye keypoints 11 and 15 (exp dims 33/34, 45/46).
_GAZE_YAW_RATIO = 0.26
_GAZE_PITCH_RATIO = 0.28
_GAZE_GAIN_TOWARD = 0.001  # for the eye on the side the head turns to
_GAZE_GAIN_AWAY = 0.0007
_GAZE_PITCH_GAIN = -0.001
_EYE_X_DIMS = [33, 45]  # x of keypoints 11 and 15
_EYE_Y_DIMS = [34, 46]
# Gains of the x offsets of keypoints (11, 15), for a head not turned (dx ≤ 0) and turned (dx > 0).
_GAZE_X_GAINS = np.array([[_GAZE_GAIN_TOWARD, _GAZE_GAIN_AWAY], [_GAZE_GAIN_AWAY, _GAZE_GAIN_TOWARD]])

BlinkGaps = int | tuple[int, ...]
ALL_ROWS = slice(None)
CtrlInfo = Mapping[int, Controls]


# -- batched motion dicts ---------------------------------------------------------------------------

def motion_batch(motion: np.ndarray) -> MotionInfo:
    """(N, 265) motion vectors → batched motion dict {scale (N,1), pitch/yaw/roll (N,66), t (N,3),
    exp (N,63)}; row i is `motion_vector_to_dict(motion[i])` bit for bit."""
    motion = np.asarray(motion)
    if motion.ndim != 2 or motion.shape[1] != MOTION_DIM:
        raise ValueError(f"motion stitch: motion must have shape (N, {MOTION_DIM}), got {motion.shape}")
    batch, start = {}, 0
    for key, (_, width) in MOTION_LAYOUT:
        values = motion[:, start:start + width]
        # Contiguous copies, like the per-frame dicts, so every later op sees the same layout.
        batch[key] = values + _SCALE_OFFSET if key == "scale" else values.copy()
        start += width
    return batch


def as_rows(info: Mapping[str, np.ndarray], n: int, where: str) -> MotionInfo:
    """The motion keys of `info` as (n, d) rows: (n, ..., d) values are reshaped (a view when
    possible) and a single frame (1, ..., d) is broadcast to n rows (a read-only view)."""
    rows = {}
    for key in MOTION_KEYS:
        if key not in info:
            continue
        value = np.asarray(info[key])
        if value.ndim == 0 or value.shape[0] not in (1, n):
            raise ValueError(f"{where}: {key!r} has shape {value.shape}, expected a leading axis of {n} (or 1)")
        if value.ndim != 2:
            value = value.reshape(value.shape[0], -1)
        rows[key] = value if len(value) == n else np.broadcast_to(value, (n, value.shape[1]))
    return rows


def take_rows(info: Mapping[str, np.ndarray], rows: slice | np.ndarray) -> MotionInfo:
    """A new dict holding rows `rows` (ALL_ROWS, another slice or indices) of every key."""
    if isinstance(rows, slice) and rows == ALL_ROWS:
        return dict(info)
    return {key: value[rows] for key, value in info.items()}


def _first_row_copy(info: Mapping[str, np.ndarray]) -> MotionInfo:
    return {key: np.array(value[:1], copy=True) for key, value in info.items()}


# -- keypoint transform (§5.12) -------------------------------------------------------------------

def rotation_matrices(pitch: np.ndarray, yaw: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """(B,) or (B, 1) angles in degrees → (B, 3, 3) rotations R = Rz(roll)·Ry(yaw)·Rx(pitch)."""
    # Dividing by the Python ints/floats keeps float32 angles in float32, as the reference does.
    p, y, r = (np.asarray(angle).reshape(-1) / 180 * np.pi for angle in (pitch, yaw, roll))
    batch = p.shape[0]
    rot_x, rot_y, rot_z = (np.zeros((batch, 3, 3), dtype=p.dtype) for _ in range(3))
    rot_x[:, 0, 0] = 1
    rot_x[:, 1, 1], rot_x[:, 1, 2], rot_x[:, 2, 1], rot_x[:, 2, 2] = np.cos(p), -np.sin(p), np.sin(p), np.cos(p)
    rot_y[:, 1, 1] = 1
    rot_y[:, 0, 0], rot_y[:, 0, 2], rot_y[:, 2, 0], rot_y[:, 2, 2] = np.cos(y), np.sin(y), -np.sin(y), np.cos(y)
    rot_z[:, 2, 2] = 1
    rot_z[:, 0, 0], rot_z[:, 0, 1], rot_z[:, 1, 0], rot_z[:, 1, 1] = np.cos(r), -np.sin(r), np.sin(r), np.cos(r)
    return np.matmul(np.matmul(rot_z, rot_y), rot_x)


def keypoint_transform(info: Mapping[str, np.ndarray]) -> np.ndarray:
    """Motion dict → (B, 21, 3) keypoints: scale·(R·kp + exp) + (t_x, t_y, 0) per keypoint.

    Angles are bin logits (B, 66) or already degrees (any other shape).
    """
    kp = np.asarray(info["kp"])
    batch = kp.shape[0]
    rot = rotation_matrices(*(bins_to_degrees(info[key]) for key in POSE_KEYS))
    # Row vectors times Rᵀ, as a transposed view like the reference (same matmul path).
    points = np.matmul(kp.reshape(batch, -1, 3), np.transpose(rot, (0, 2, 1)))
    points = points + np.asarray(info["exp"]).reshape(batch, -1, 3)
    points *= info["scale"][..., None]
    points[:, :, :2] += info["t"][:, None, :2]
    return points


# -- blink schedule ---------------------------------------------------------------------------------

def eye_blink_indices(n_frames: int, blink_len: int, open_n: BlinkGaps, rng: random.Random) -> list[int]:
    """Row of the blink table (delta_eye_arr) to use at each of n_frames frames; 0 = eyes open.

    open_n < 0: never blink; > 0: that many open frames between blinks; 0: random gaps drawn from
    `rng` in [60, 100]; a list: its gaps in turn. The first blink starts after the first gap, each
    blink plays rows 0..blink_len−1, and no blink starts within max(last gap, blink_len) of the end.
    With random gaps, the first and last gaps are drawn first, then one more per blink.
    """
    indices = [0] * n_frames
    if isinstance(open_n, int):
        if open_n < 0:
            return indices
        gaps = [open_n] if open_n > 0 else []
    else:
        gaps = list(open_n)

    def random_gap() -> int:
        return rng.randint(*RANDOM_OPEN_FRAMES)

    start = gaps[0] if gaps else random_gap()
    last_gap = gaps[-1] if gaps else random_gap()
    stop = n_frames - max(last_gap, blink_len)
    position, next_gap = start, 1
    while position < stop:
        indices[position:position + blink_len] = range(blink_len)
        if gaps:
            gap = gaps[next_gap % len(gaps)]
            next_gap += 1
        else:
            gap = random_gap()
        position += blink_len + gap
    return indices


# -- per-frame algebra, batched (§5.11) --------------------------------------------------------------

@dataclass(frozen=True)
class ExpWeights:
    """Per-dim (1, 63) weights of exp = driven·exp_d + source·exp_s + blink·delta_eye."""

    driven: np.ndarray
    source: np.ndarray
    blink: np.ndarray


def _keypoint_mask(keypoints: Sequence[int]) -> np.ndarray:
    mask = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32)
    mask[list(keypoints)] = 1
    return mask.reshape(1, -1)


def exp_weights(drive_eye: bool, has_blink_table: bool) -> ExpWeights:
    """Lips always follow the generated motion; eyes follow it when driven without a blink table,
    follow the blink table when driven with one, and otherwise stay the source's."""
    driven = _keypoint_mask(LIP_KEYPOINTS)
    blink = np.zeros_like(driven)
    if drive_eye and not has_blink_table:
        driven = driven + _keypoint_mask(EYE_KEYPOINTS)
    elif drive_eye:
        blink = _keypoint_mask(EYE_KEYPOINTS)
    return ExpWeights(driven * (1 - blink), (1 - driven) + driven * blink, blink)


def mix_with_source(x_s_info: Mapping[str, np.ndarray], x_d_info: Mapping[str, np.ndarray],
                    weights: Mapping[str, float], d0: Mapping[str, np.ndarray] | None) -> MotionInfo:
    """Generated keys in `weights` become source + weight·(generated − d0) when d0 is given, else
    weight·generated; every other source key (always kp) is taken from the source.

    Pose keys are mixed in whatever representation they arrive in (logits, normally).
    """
    if d0 is not None:
        # Keys the source replaces below are skipped: only their reference KeyError is kept.
        mixed = {key: x_s_info[key] + (value - d0[key]) * weights.get(key, 1.0)
                 for key, value in x_d_info.items() if key in weights or key not in x_s_info}
    else:
        mixed = dict(x_d_info)
    for key, value in x_s_info.items():
        if key not in mixed or key not in weights:
            mixed[key] = value
    if d0 is None:
        for key, weight in weights.items():
            mixed[key] = mixed[key] * weight
    return mixed


def blend_exp(exp_d: np.ndarray, exp_s: np.ndarray, delta_eye: np.ndarray, weights: ExpWeights) -> np.ndarray:
    """Expression from the generated motion, the source and the blink offset, per dim."""
    return exp_d * weights.driven + exp_s * weights.source + delta_eye * weights.blink


def _as_python_float(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    """float64 control values rounded as NumPy rounds a Python float next to an array of `like`'s
    dtype (to float32 for float32 motion): what the reference's scalar controls do."""
    dtype = like.dtype if like.dtype.kind == "f" else np.result_type(like.dtype, 1.0)
    return values.astype(dtype, copy=False)


def lerp_toward(value: np.ndarray, target: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """alpha·value + (1 − alpha)·target; alpha is float64, a scalar or a per-row (B, 1) column."""
    return value * _as_python_float(alpha, value) + target * _as_python_float(1 - alpha, target)


def damp_exp(exp: np.ndarray, exp_s: np.ndarray, vad_alpha: np.ndarray) -> np.ndarray:
    """Voice-activity damping of the rows whose vad_alpha (float64 (B, 1)) is below 1:
    alpha·exp + (1 − alpha)·exp_s."""
    return np.where(vad_alpha < 1, lerp_toward(exp, exp_s, vad_alpha), exp)


def apply_controls(info: Mapping[str, np.ndarray], exp_s: np.ndarray, ctrl: Mapping[str, np.ndarray]) -> MotionInfo:
    """Controls as per-row columns (`control_columns`), in the reference's order: vad_alpha damps
    exp toward the source's; delta_<angle> turns that angle into (B, 1) degrees and adds the
    offset; alpha_<angle> then scales the angle as it stands (degrees after a delta, else
    logits); delta_exp adds to exp."""
    out = dict(info)
    if "vad_alpha" in ctrl:
        out["exp"] = damp_exp(out["exp"], exp_s, ctrl["vad_alpha"])
    for key in POSE_KEYS:
        if f"delta_{key}" in ctrl:
            degrees = bins_to_degrees(out[key])
            degrees = degrees.reshape(len(degrees), -1)
            out[key] = degrees + _as_python_float(ctrl[f"delta_{key}"], degrees)
    for key in POSE_KEYS:
        if f"alpha_{key}" in ctrl:
            out[key] = out[key] * _as_python_float(ctrl[f"alpha_{key}"], out[key])
    if "delta_exp" in ctrl:
        out["exp"] = out["exp"] + ctrl["delta_exp"]
    return out


def fade_toward(info: Mapping[str, np.ndarray], dst: Mapping[str, np.ndarray], alpha: np.ndarray,
                keys: Iterable[str]) -> MotionInfo:
    """alpha·info + (1 − alpha)·dst on `keys` (kp never fades); alpha float64, per row (B, 1).

    A pose in degrees fading toward logits (or the reverse) broadcasts to 66 values, as in the
    reference."""
    out = dict(info)
    for key in keys:
        if key != "kp":
            out[key] = lerp_toward(out[key], dst[key], alpha)
    return out


def head_pose_degrees(info: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(yaw, pitch) of every row, in degrees, as float64 (B,) arrays (the reference's Python floats)."""
    return tuple(np.asarray(bins_to_degrees(info[key]), dtype=np.float64).reshape(-1) for key in ("yaw", "pitch"))


def gaze_fix(exp: np.ndarray, pose_d: tuple[np.ndarray, np.ndarray],
             pose_s: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Shift the eye keypoints 11 and 15 against the head turn (driven − source (yaw, pitch) in
    degrees, float64 per row) so the gaze stays on the camera; exp is (B, 63)."""
    dx = (pose_d[0] - pose_s[0]) * _GAZE_YAW_RATIO
    dy = (pose_d[1] - pose_s[1]) * _GAZE_PITCH_RATIO
    x_offsets = dx[:, None] * _GAZE_X_GAINS[(dx > 0).astype(np.intp)]
    y_offsets = (dy * _GAZE_PITCH_GAIN)[:, None]
    out = exp.copy()
    # Offsets are computed in float64 and rounded to float32 before the float32 add, as in the reference.
    out[:, _EYE_X_DIMS] += _as_python_float(x_offsets, out)
    out[:, _EYE_Y_DIMS] += _as_python_float(y_offsets, out)
    return out


def faded_ctrl_info(ctrl_info: Mapping[int, Controls], n_frames: int,
                    fade_in: int, fade_out: int) -> dict[int, dict[str, Any]]:
    """Per-frame controls with the fade ramps written in (overriding any fade_alpha there):
    frame i < fade_in gets i/fade_in; the last fade_out + 1 frames go from 1 down to 0."""
    frames = {fid: dict(ctrl) for fid, ctrl in ctrl_info.items()}
    for i in range(max(fade_in, 0)):
        frames.setdefault(i, {})["fade_alpha"] = i / fade_in
    if fade_out > 0:
        last = n_frames - 1
        for i in range(max(last - fade_out, 0), n_frames):
            frames.setdefault(i, {})["fade_alpha"] = (last - i) / fade_out
    return frames


# -- controls as per-row columns ------------------------------------------------------------------------

@dataclass(frozen=True)
class ControlGroup:
    """Rows of a batch whose controls have the same names (and fade_out_keys): the rows, and each
    control's value per row (`control_columns`)."""

    rows: slice | np.ndarray
    values: Mapping[str, np.ndarray]
    fade_out_keys: tuple[str, ...] | None


def control_columns(name: str, values: Sequence[Any]) -> np.ndarray:
    """One control's per-row values: delta_exp as float32 (B, 63), any other as float64 (B, 1)
    (Python floats, which `_as_python_float` rounds where the reference's scalars are rounded)."""
    if name == "delta_exp":
        return np.concatenate([np.broadcast_to(np.asarray(v, dtype=np.float32), (1, EXP_DIM)) for v in values])
    return np.array([float(v) for v in values], dtype=np.float64)[:, None]


def group_controls(ctrls: Sequence[Controls]) -> list[ControlGroup]:
    """Group the rows of a batch by the names of their controls, in order of first row (so the
    first group holds row 0); a group's rows are a slice when they are consecutive (ALL_ROWS
    when the group is the whole batch)."""
    members: dict[tuple[frozenset[str], tuple[str, ...] | None], list[int]] = {}
    for row, ctrl in enumerate(ctrls):
        keys = ctrl.get("fade_out_keys")
        members.setdefault((frozenset(ctrl), None if keys is None else tuple(keys)), []).append(row)
    groups = []
    for (names, fade_out_keys), rows in members.items():
        chosen = [ctrls[row] for row in rows]
        values = {name: control_columns(name, [ctrl[name] for ctrl in chosen])
                  for name in names if name != "fade_out_keys"}
        if len(rows) == len(ctrls):
            selector = ALL_ROWS
        elif rows[-1] - rows[0] == len(rows) - 1:
            selector = slice(rows[0], rows[-1] + 1)
        else:
            selector = np.asarray(rows)
        groups.append(ControlGroup(selector, values, fade_out_keys))
    return groups


# -- the stage ----------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class StitchOptions:
    """Motion-stitch settings of one render (the setup kwargs of DITTO_SPEC §2.4, as `RenderOptions`
    validated them), with the automatic choices made."""

    is_image: bool
    weights: Mapping[str, float]  # use_d_keys as key → weight (a plain key list weighs 1)
    relative_d: bool
    drive_eye: bool
    delta_eye_arr: np.ndarray | None
    delta_eye_open_n: BlinkGaps
    fade_type: str
    fade_out_keys: tuple[str, ...]
    flag_stitching: bool
    overall_ctrl: Mapping[str, Any]

    @property
    def blinks(self) -> bool:
        """Whether the eyes play the blink table (driven eyes with a table given)."""
        return self.drive_eye and self.delta_eye_arr is not None


class MotionStitch:
    """Turns generated motion frames into the (x_s, x_d) keypoints the warp network takes.

    Call `setup` once per render, `setup_frames` once the frame count is known (offline), then
    either `stitch_clip` for consecutive runs of frames or the object itself once per frame, in
    order (the two can be mixed: both advance the same state).
    """

    def __init__(self, stitch_network: Network | None = None) -> None:
        self.stitch_network = stitch_network
        self.options: StitchOptions | None = None

    def setup(
        self,
        x_s_info: Mapping[str, np.ndarray],
        *,
        is_image: bool,
        N_d: int = -1,
        use_d_keys: Sequence[str] | Mapping[str, float] | None = None,
        relative_d: bool = True,
        drive_eye: bool | None = None,
        delta_eye_arr: np.ndarray | None = None,
        delta_eye_open_n: BlinkGaps = 0,
        fade_type: str = "",
        fade_out_keys: Sequence[str] = ("exp",),
        flag_stitching: bool = True,
        ch_x_s_info: Mapping[str, np.ndarray] | None = None,
        ctrl_info: CtrlInfo | None = None,
        overall_ctrl_info: Controls | None = None,
        seed: int | None = None,
    ) -> None:
        """Start a render from the (smoothed) motion of source frame 0 (each value (1, d)).

        The settings are `RenderOptions` values, in the canonical forms validated there.
        ch_x_s_info: frame-0 motion of a separate condition source; its scale relative to the
        source's scales the exp and pose weights. seed seeds the random blink gaps (None: fresh).
        """
        missing = sorted(set(MOTION_KEYS) - set(x_s_info))
        if missing:
            raise ValueError(f"source motion: missing keys {missing}")
        if use_d_keys is None:
            use_d_keys = IMAGE_USE_D_KEYS if is_image else VIDEO_USE_D_KEYS
        weights = dict(use_d_keys) if isinstance(use_d_keys, Mapping) else {key: 1.0 for key in use_d_keys}
        if ch_x_s_info is not None:
            ratio = ch_x_s_info["scale"].item() / x_s_info["scale"].item()
            if ratio != 1:
                weights = {key: w * ratio if key in SCALE_RATIO_KEYS else w for key, w in weights.items()}
        if flag_stitching and self.stitch_network is None:
            raise ValueError("motion stitch: flag_stitching is on but no stitch_network was given")
        overall_ctrl = dict(overall_ctrl_info or {})

        self.options = options = StitchOptions(
            is_image=is_image, weights=weights, relative_d=relative_d,
            drive_eye=is_image if drive_eye is None else drive_eye,
            delta_eye_arr=delta_eye_arr, delta_eye_open_n=delta_eye_open_n,
            fade_type=fade_type, fade_out_keys=tuple(fade_out_keys),
            flag_stitching=flag_stitching, overall_ctrl=overall_ctrl,
        )
        self._exp_weights = exp_weights(options.drive_eye, options.delta_eye_arr is not None)
        self._rng = random.Random(seed)
        self._n_frames: int | None = None
        self._blink_schedule: np.ndarray | None = None
        self._set_frame_count(N_d)
        self._ctrl_info = dict(ctrl_info or {})

        # An image source never changes: its pose, keypoints and fade target are fixed now.
        source = as_rows(x_s_info, 1, "source motion")
        self._pose_s = head_pose_degrees(source) if is_image else None
        self._x_s = np.ascontiguousarray(keypoint_transform(source), dtype=np.float32) if is_image else None
        self._fade_dst = _first_row_copy(source) if is_image and fade_type == "s" else None
        self._d0: MotionInfo | None = None
        self._frame = 0

    def setup_frames(self, N_d: int, fade_in: int = -1, fade_out: int = -1, ctrl_info: CtrlInfo | None = None) -> None:
        """Fix the frame count N_d (redraws the blink schedule so the video ends with open eyes) and
        write the fade-in/out ramps into the per-frame controls (`ctrl_info`, or setup's if None)."""
        self._require_setup()
        self._set_frame_count(N_d)
        frames = self._ctrl_info if ctrl_info is None else ctrl_info
        self._ctrl_info = faded_ctrl_info(frames, N_d, fade_in, fade_out)

    def set_overall_controls(self, controls: Controls) -> None:
        """Replace the render-wide controls (`overall_ctrl_info`) for every frame stitched from now
        on: how a live stream changes pose deltas and expression mid-stream. Checked by the options'
        rule; per-frame `ctrl_info` entries still override them."""
        options = self._require_setup()
        self.options = replace(options, overall_ctrl=canonical_controls("controls", controls))

    def set_blink_gaps(self, open_n: BlinkGaps) -> None:
        """Blink with `open_n` gaps (a `RenderOptions.delta_eye_open_n` value, checked there) from
        the next frame stitched on: a live stream's eye control. Needs a blink table."""
        options = self._require_setup()
        if not options.blinks:
            raise ValueError("blink gaps need driven eyes with a blink table (drive_eye and delta_eye_arr)")
        self.options = replace(options, delta_eye_open_n=open_n)
        length = len(self._blink_schedule)
        drawn = eye_blink_indices(length, len(options.delta_eye_arr), open_n, self._rng)
        schedule = np.empty(length, dtype=np.intp)
        schedule[(self._frame + np.arange(length)) % length] = drawn  # the schedule is read from frame on
        self._blink_schedule = schedule

    def frame_ctrl(self, frame_id: int) -> dict[str, Any]:
        """The per-frame controls of generated frame `frame_id` (empty when it has none)."""
        self._require_setup()
        return dict(self._ctrl_info.get(frame_id, {}))

    def set_d0(self, x_d_info: Mapping[str, np.ndarray]) -> None:
        """Make `x_d_info` (each value (1, d)) the frame that later frames are relative to (online
        mode sets it before the first frame; otherwise the first frame stitched is used)."""
        self._require_setup()
        self._d0 = _first_row_copy(as_rows(x_d_info, 1, "d0 motion"))

    @property
    def blink_schedule(self) -> tuple[int, ...] | None:
        """Blink-table row per frame, or None when the eyes do not blink from a table."""
        self._require_setup()
        return None if self._blink_schedule is None else tuple(self._blink_schedule.tolist())

    def stitch_clip(self, x_s_info: Mapping[str, np.ndarray], motion: np.ndarray | Mapping[str, np.ndarray],
                    frame_ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The next N frames at once, bit-identical to N calls of the object in order.

        x_s_info: each frame's (mirrored) source-frame motion, per key (N, 1, d) or (N, d), or one
        frame (1, d) for all; motion: (N, 265) driving motion vectors (after a2m's clamp), or the
        same as a batched motion dict (N, 1, d) or (N, d); frame_ids: (N,) generated-frame indices
        whose controls (`frame_ctrl`) apply. Returns x_s, x_d, each (N, 21, 3) float32. The blink
        schedule advances by call order, as per frame.
        """
        options = self._require_setup()
        frame_ids = np.asarray(frame_ids).reshape(-1).tolist()
        n = len(frame_ids)
        if isinstance(motion, Mapping):
            x_d_info = as_rows(motion, n, "driving motion")
            frames = {np.shape(motion[key])[0] for key in x_d_info}
        else:
            x_d_info = motion_batch(motion)
            frames = {len(motion)}
        if frames != {n}:
            raise ValueError(f"motion stitch: {n} frame_ids for driving motion of {sorted(frames)} frames")
        if n == 0:
            empty = np.zeros((0, NUM_KEYPOINTS, 3), dtype=np.float32)
            return empty, empty.copy()
        no_controls: dict[str, Any] = {}
        ctrls = [{**options.overall_ctrl, **self._ctrl_info.get(fid, no_controls)} for fid in frame_ids]
        return self._stitch_rows(as_rows(x_s_info, n, "source motion"), x_d_info, ctrls)

    def __call__(self, x_s_info: Mapping[str, np.ndarray], x_d_info: Mapping[str, np.ndarray],
                 **ctrl: Any) -> tuple[np.ndarray, np.ndarray]:
        """Next frame: motion of its (mirrored) source frame and the generated motion (each value
        (1, d)), plus this frame's controls (over the render-wide ones) → x_s, x_d, each
        (1, 21, 3) float32. The controls come from the caller, not from `RenderOptions`, so they
        are checked here, by the options' rule."""
        options = self._require_setup()
        ctrl = canonical_controls("motion stitch controls", ctrl)
        return self._stitch_rows(as_rows(x_s_info, 1, "source motion"), as_rows(x_d_info, 1, "driving motion"),
                                 [{**options.overall_ctrl, **ctrl}])

    # -- helpers --

    def _require_setup(self) -> StitchOptions:
        if self.options is None:
            raise RuntimeError("motion stitch: call setup() before using it")
        return self.options

    def _set_frame_count(self, n_frames: int) -> None:
        # Redraw only when the count changes: the draws consume the random stream.
        if n_frames == self._n_frames:
            return
        self._n_frames = n_frames
        options = self.options
        if options.blinks:
            length = BLINK_SCHEDULE_FRAMES if n_frames == -1 else n_frames
            self._blink_schedule = np.asarray(eye_blink_indices(
                length, len(options.delta_eye_arr), options.delta_eye_open_n, self._rng), dtype=np.intp)

    def _stitch_rows(self, x_s_info: MotionInfo, x_d_info: MotionInfo,
                     ctrls: Sequence[Controls]) -> tuple[np.ndarray, np.ndarray]:
        """The next len(ctrls) frames: source and generated motion as (n, d) rows, each frame's
        merged controls → x_s, x_d (n, 21, 3) float32. First-frame state is taken from row 0."""
        options = self.options
        n = len(ctrls)
        if options.relative_d and self._d0 is None:
            self._d0 = _first_row_copy(x_d_info)
        if options.drive_eye and self._pose_s is None:
            # A video source's gaze reference is the source frame of the first frame.
            self._pose_s = head_pose_degrees(take_rows(x_s_info, slice(0, 1)))

        info = mix_with_source(x_s_info, x_d_info, options.weights, self._d0)
        info["exp"] = blend_exp(info["exp"], x_s_info["exp"], self._delta_eye(n), self._exp_weights)
        groups = group_controls(ctrls)
        controlled = [apply_controls(take_rows(info, group.rows), x_s_info["exp"][group.rows], group.values)
                      for group in groups]
        if options.fade_type == "d0" and self._fade_dst is None:
            # The first frame after the controls is what "d0" fades toward; row 0 opens group 0.
            self._fade_dst = _first_row_copy(controlled[0])

        x_d = np.empty((n, NUM_KEYPOINTS, 3), dtype=np.float32)
        for group, rows_info in zip(groups, controlled):
            x_d[group.rows] = self._driving_keypoints(rows_info, x_s_info, group)
        if self._x_s is not None:
            x_s = np.repeat(self._x_s, n, axis=0)
        else:
            x_s = np.ascontiguousarray(keypoint_transform(x_s_info), dtype=np.float32)
        if options.flag_stitching:
            x_d = self._stitched(x_s, x_d)
        self._frame += n
        return x_s, x_d

    def _driving_keypoints(self, info: MotionInfo, x_s_info: MotionInfo, group: ControlGroup) -> np.ndarray:
        """Fade, gaze fix and keypoint transform of one control group's rows (after the controls)."""
        options = self.options
        if options.fade_type and "fade_alpha" in group.values:
            dst = self._fade_dst if self._fade_dst is not None else take_rows(x_s_info, group.rows)
            keys = options.fade_out_keys if group.fade_out_keys is None else group.fade_out_keys
            info = fade_toward(info, dst, group.values["fade_alpha"], keys)
        if options.drive_eye:
            info = {**info, "exp": gaze_fix(info["exp"], head_pose_degrees(info), self._pose_s)}
        return keypoint_transform(info)

    def _stitched(self, x_s: np.ndarray, x_d: np.ndarray) -> np.ndarray:
        """x_d corrected by the stitching network, one frame per call: its contract (and the
        reference's ONNX and TensorRT files) fix batch 1, and a batched GEMM could round
        differently from the per-frame path."""
        out = np.empty_like(x_d)
        for row in range(len(x_d)):
            frame = slice(row, row + 1)
            out[frame] = self.stitch_network(kp_source=x_s[frame], kp_driving=x_d[frame])[0]
        return out

    def _delta_eye(self, n: int) -> np.ndarray:
        """Blink-table rows of the next n frames (a (1, 63) zero row when the eyes do not blink)."""
        schedule = self._blink_schedule
        if not self.options.blinks or schedule is None or len(schedule) == 0:
            return np.zeros((1, EXP_DIM), dtype=np.float32)
        frames = (self._frame + np.arange(n)) % len(schedule)
        return self.options.delta_eye_arr[schedule[frames]]
