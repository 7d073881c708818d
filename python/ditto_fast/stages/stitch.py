"""Motion stitch: generated motion + source motion → source and driving keypoints
(DITTO_SPEC §5.11–§5.12).

Per frame: the generated motion is made relative to the first generated frame and mixed with the
source motion, the expression is masked (lips, and eyes or a blink schedule, from the generated
motion; the rest from the source), then come the user controls (VAD damping, pose offsets and
gains, expression offset), the fades, the gaze correction, the keypoint transform and the
stitching MLP.

The algebra lives in small pure functions over motion dicts ({scale (1,1), pitch/yaw/roll (1,66)
logits or degrees, t (1,3), exp (1,63), kp (1,63)} float32) so that it can be batched over clips;
`MotionStitch` only holds the per-render state (first frame, blink schedule, cached source).
Every function keeps the reference's float32 operation order, Python-float scalars included, so
the keypoints are bit-identical to the reference's (all golden runs, NumPy 2.4 on x86-64).

Deliberate deviations, all in cases where the reference misbehaves:
- inputs are never modified (the reference scales the caller's arrays in place when
  `use_d_keys` is a dict and `relative_d` is off; with `kp` in that dict it would compound the
  source's own kp frame after frame);
- a list `ctrl_info` may be combined with fade ramps (the reference raises AttributeError);
- unknown control names and option values are rejected instead of ignored.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ditto_fast.backends.base import Network
from ditto_fast.stages.motion import bins_to_degrees

MotionInfo = dict[str, np.ndarray]

NUM_KEYPOINTS = 21
POSE_KEYS = ("pitch", "yaw", "roll")
MOTION_KEYS = ("scale", "pitch", "yaw", "roll", "t", "exp", "kp")
EYE_KEYPOINTS = (11, 13, 15, 16, 18)
LIP_KEYPOINTS = (6, 12, 14, 17, 19, 20)

IMAGE_USE_D_KEYS = ("exp", "pitch", "yaw", "roll", "t")
VIDEO_USE_D_KEYS = ("exp",)
# Keys whose weights are scaled by the condition-source/source scale ratio.
SCALE_RATIO_KEYS = frozenset({"exp", "pitch", "yaw", "roll"})

BLINK_SCHEDULE_FRAMES = 3000  # schedule length while the frame count is unknown
RANDOM_OPEN_FRAMES = (60, 100)  # inclusive range of random gaps between blinks

FADE_TYPES = ("", "d0", "s")
CONTROL_NAMES = frozenset(
    {"fade_alpha", "fade_out_keys", "vad_alpha", "delta_exp"}
    | {f"{kind}_{key}" for kind in ("delta", "alpha") for key in POSE_KEYS}
)

# Gaze correction: head-turn degrees → offsets of the eye keypoints 11 and 15 (exp dims 33/34, 45/46).
_GAZE_YAW_RATIO = 0.26
_GAZE_PITCH_RATIO = 0.28
_GAZE_GAIN_TOWARD = 0.001  # for the eye on the side the head turns to
_GAZE_GAIN_AWAY = 0.0007
_GAZE_PITCH_GAIN = -0.001
_EYE_11_X, _EYE_11_Y, _EYE_15_X, _EYE_15_Y = 33, 34, 45, 46

BlinkGaps = int | Sequence[int]


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
    if isinstance(open_n, (int, np.integer)) and not isinstance(open_n, (bool, np.bool_)):
        if open_n < 0:
            return indices
        gaps = [int(open_n)] if open_n > 0 else []
    elif (isinstance(open_n, Sequence) and not isinstance(open_n, str)
          and all(isinstance(gap, (int, np.integer)) and gap >= 0 for gap in open_n)):
        gaps = [int(gap) for gap in open_n]
    else:
        raise ValueError(f"delta_eye_open_n: expected an int or a list of ints ≥ 0, got {open_n!r}")

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


# -- per-frame algebra (§5.11) ----------------------------------------------------------------------

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
        mixed = {key: x_s_info[key] + (value - d0[key]) * weights.get(key, 1.0)
                 for key, value in x_d_info.items()}
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


def damp_exp(exp: np.ndarray, exp_s: np.ndarray, vad_alpha: float) -> np.ndarray:
    """Voice-activity damping: alpha·exp + (1 − alpha)·exp_s."""
    return exp * vad_alpha + exp_s * (1 - vad_alpha)


def apply_controls(info: Mapping[str, np.ndarray], ctrl: Mapping[str, Any]) -> MotionInfo:
    """delta_<angle> turns that angle into degrees and adds the offset; alpha_<angle> then scales
    the angle as it stands (degrees after a delta, else logits); delta_exp adds to exp."""
    out = dict(info)
    for key in POSE_KEYS:
        if f"delta_{key}" in ctrl:
            out[key] = bins_to_degrees(out[key]) + ctrl[f"delta_{key}"]
    for key in POSE_KEYS:
        if f"alpha_{key}" in ctrl:
            out[key] = out[key] * ctrl[f"alpha_{key}"]
    if "delta_exp" in ctrl:
        out["exp"] = out["exp"] + ctrl["delta_exp"]
    return out


def fade_toward(info: Mapping[str, np.ndarray], dst: Mapping[str, np.ndarray], alpha: float,
                keys: Sequence[str]) -> MotionInfo:
    """alpha·info + (1 − alpha)·dst on `keys` (kp never fades)."""
    out = dict(info)
    for key in keys:
        if key != "kp":
            out[key] = out[key] * alpha + dst[key] * (1 - alpha)
    return out


def head_pose_degrees(info: Mapping[str, np.ndarray]) -> tuple[float, float]:
    """(yaw, pitch) of a single-frame motion dict, in degrees."""
    return bins_to_degrees(info["yaw"]).item(), bins_to_degrees(info["pitch"]).item()


def gaze_fix(exp: np.ndarray, pose_d: tuple[float, float], pose_s: tuple[float, float]) -> np.ndarray:
    """Shift the eye keypoints 11 and 15 against the head turn (driven − source (yaw, pitch) in
    degrees) so the gaze stays on the camera; exp is (1, 63)."""
    dx = (pose_d[0] - pose_s[0]) * _GAZE_YAW_RATIO
    dy = (pose_d[1] - pose_s[1]) * _GAZE_PITCH_RATIO
    gain_11, gain_15 = (_GAZE_GAIN_AWAY, _GAZE_GAIN_TOWARD) if dx > 0 else (_GAZE_GAIN_TOWARD, _GAZE_GAIN_AWAY)
    out = exp.copy()
    # Offsets are Python floats (float64) rounded to float32 before the float32 add, as in the reference.
    out[0, _EYE_11_X] += dx * gain_11
    out[0, _EYE_15_X] += dx * gain_15
    out[0, _EYE_11_Y] += dy * _GAZE_PITCH_GAIN
    out[0, _EYE_15_Y] += dy * _GAZE_PITCH_GAIN
    return out


def faded_ctrl_info(ctrl_info: Mapping[int, Mapping[str, Any]], n_frames: int,
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


def _ctrl_by_frame(ctrl_info: Mapping[Any, Mapping[str, Any]] | Sequence[Mapping[str, Any]] | None,
                   ) -> dict[int, dict[str, Any]]:
    if ctrl_info is None:
        return {}
    if isinstance(ctrl_info, Mapping):
        items = ctrl_info.items()
    elif isinstance(ctrl_info, Sequence) and not isinstance(ctrl_info, str):
        items = enumerate(ctrl_info)
    else:
        raise ValueError(f"ctrl_info: expected a dict {{frame: controls}} or a list, got {type(ctrl_info).__name__}")
    frames = {}
    for fid, ctrl in items:
        _check_controls(f"ctrl_info[{fid!r}]", ctrl)
        frames[int(fid)] = dict(ctrl)
    return frames


def _check_controls(where: str, ctrl: Mapping[str, Any]) -> None:
    unknown = sorted(set(ctrl) - CONTROL_NAMES)
    if unknown:
        raise ValueError(f"{where}: unknown controls {unknown}; known: {sorted(CONTROL_NAMES)}")


def _check_keys(where: str, keys: Iterable[str]) -> None:
    unknown = sorted(set(keys) - set(MOTION_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown motion keys {unknown}; known: {list(MOTION_KEYS)}")


def _copy_info(info: Mapping[str, np.ndarray]) -> MotionInfo:
    return {key: np.array(value, copy=True) for key, value in info.items()}


# -- the stage ----------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class StitchOptions:
    """Validated motion-stitch settings of one render (the setup kwargs of DITTO_SPEC §2.4)."""

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
    """Turns each generated motion frame into the (x_s, x_d) keypoints the warp network takes.

    Call `setup` once per render, `setup_frames` once the frame count is known (offline), then
    call the object once per generated frame, in order.
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
        ctrl_info: Mapping[Any, Mapping[str, Any]] | Sequence[Mapping[str, Any]] | None = None,
        overall_ctrl_info: Mapping[str, Any] | None = None,
        seed: int | None = None,
    ) -> None:
        """Start a render from the (smoothed) motion of source frame 0.

        ch_x_s_info: frame-0 motion of a separate condition source; its scale relative to the
        source's scales the exp and pose weights. seed seeds the random blink gaps (None: fresh).
        """
        missing = sorted(set(MOTION_KEYS) - set(x_s_info))
        if missing:
            raise ValueError(f"source motion: missing keys {missing}")
        if use_d_keys is None:
            use_d_keys = IMAGE_USE_D_KEYS if is_image else VIDEO_USE_D_KEYS
        weights = dict(use_d_keys) if isinstance(use_d_keys, Mapping) else {key: 1.0 for key in use_d_keys}
        _check_keys("use_d_keys", weights)
        if ch_x_s_info is not None:
            ratio = ch_x_s_info["scale"].item() / x_s_info["scale"].item()
            if ratio != 1:
                weights = {key: w * ratio if key in SCALE_RATIO_KEYS else w for key, w in weights.items()}
        if fade_type not in FADE_TYPES:
            raise ValueError(f"fade_type: expected one of {FADE_TYPES}, got {fade_type!r}")
        _check_keys("fade_out_keys", fade_out_keys)
        if delta_eye_arr is not None:
            delta_eye_arr = np.asarray(delta_eye_arr, dtype=np.float32)
            if delta_eye_arr.ndim != 2 or delta_eye_arr.shape[1] != 3 * NUM_KEYPOINTS or len(delta_eye_arr) == 0:
                raise ValueError(f"delta_eye_arr: expected shape (K, 63) with K ≥ 1, got {delta_eye_arr.shape}")
        if flag_stitching and self.stitch_network is None:
            raise ValueError("motion stitch: flag_stitching is on but no stitch_network was given")
        overall_ctrl = dict(overall_ctrl_info or {})
        _check_controls("overall_ctrl_info", overall_ctrl)

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
        self._blink_schedule: list[int] | None = None
        self._set_frame_count(N_d)
        self._ctrl_info = _ctrl_by_frame(ctrl_info)

        # An image source never changes: its pose, keypoints and fade target are fixed now.
        self._pose_s = head_pose_degrees(x_s_info) if is_image else None
        self._x_s = keypoint_transform(x_s_info) if is_image else None
        self._fade_dst = _copy_info(x_s_info) if is_image and fade_type == "s" else None
        self._d0: MotionInfo | None = None
        self._frame = 0

    def setup_frames(self, N_d: int, fade_in: int = -1, fade_out: int = -1,
                     ctrl_info: Mapping[Any, Mapping[str, Any]] | Sequence[Mapping[str, Any]] | None = None,
                     ) -> None:
        """Fix the frame count N_d (redraws the blink schedule so the video ends with open eyes) and
        write the fade-in/out ramps into the per-frame controls (`ctrl_info`, or setup's if None)."""
        self._require_setup()
        self._set_frame_count(N_d)
        frames = self._ctrl_info if ctrl_info is None else _ctrl_by_frame(ctrl_info)
        self._ctrl_info = faded_ctrl_info(frames, N_d, fade_in, fade_out)

    def frame_ctrl(self, frame_id: int) -> dict[str, Any]:
        """The per-frame controls of generated frame `frame_id` (empty when it has none)."""
        self._require_setup()
        return dict(self._ctrl_info.get(frame_id, {}))

    def set_d0(self, x_d_info: Mapping[str, np.ndarray]) -> None:
        """Make `x_d_info` the frame that later frames are relative to (online mode sets it before
        the first frame; otherwise the first frame stitched is used)."""
        self._require_setup()
        self._d0 = _copy_info(x_d_info)

    @property
    def blink_schedule(self) -> tuple[int, ...] | None:
        """Blink-table row per frame, or None when the eyes do not blink from a table."""
        self._require_setup()
        return None if self._blink_schedule is None else tuple(self._blink_schedule)

    def __call__(self, x_s_info: Mapping[str, np.ndarray], x_d_info: Mapping[str, np.ndarray],
                 **ctrl: Any) -> tuple[np.ndarray, np.ndarray]:
        """Next frame: motion of its (mirrored) source frame and the generated motion, plus this
        frame's controls (over the render-wide ones) → x_s, x_d, each (1, 21, 3) float32."""
        options = self._require_setup()
        _check_controls("motion stitch controls", ctrl)
        ctrl = {**options.overall_ctrl, **ctrl}
        if options.relative_d and self._d0 is None:
            self._d0 = _copy_info(x_d_info)

        info = mix_with_source(x_s_info, x_d_info, options.weights, self._d0)
        info["exp"] = blend_exp(info["exp"], x_s_info["exp"], self._delta_eye(), self._exp_weights)
        if ctrl.get("vad_alpha", 1) < 1:
            info["exp"] = damp_exp(info["exp"], x_s_info["exp"], ctrl["vad_alpha"])
        info = apply_controls(info, ctrl)
        info = self._fade(info, x_s_info, ctrl)
        if options.drive_eye:
            if self._pose_s is None:
                # A video source's gaze reference is the source frame of the first call.
                self._pose_s = head_pose_degrees(x_s_info)
            info["exp"] = gaze_fix(info["exp"], head_pose_degrees(info), self._pose_s)

        x_s = self._x_s if self._x_s is not None else keypoint_transform(x_s_info)
        x_d = keypoint_transform(info)
        x_s = np.ascontiguousarray(x_s, dtype=np.float32)
        x_d = np.ascontiguousarray(x_d, dtype=np.float32)
        if options.flag_stitching:
            x_d = self.stitch_network(kp_source=x_s, kp_driving=x_d)[0]
        self._frame += 1
        return x_s, x_d

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
            self._blink_schedule = eye_blink_indices(
                length, len(options.delta_eye_arr), options.delta_eye_open_n, self._rng)

    def _delta_eye(self) -> np.ndarray:
        schedule = self._blink_schedule
        if not self.options.blinks or not schedule:
            return np.zeros((1, 3 * NUM_KEYPOINTS), dtype=np.float32)
        return self.options.delta_eye_arr[schedule[self._frame % len(schedule)]][None]

    def _fade(self, info: MotionInfo, x_s_info: Mapping[str, np.ndarray], ctrl: Mapping[str, Any]) -> MotionInfo:
        fade_type = self.options.fade_type
        if fade_type == "d0" and self._fade_dst is None:
            # The first frame after the controls is what "d0" fades toward.
            self._fade_dst = _copy_info(info)
        if "fade_alpha" not in ctrl or fade_type == "":
            return info
        dst = self._fade_dst if self._fade_dst is not None else x_s_info
        keys = ctrl.get("fade_out_keys", self.options.fade_out_keys)
        return fade_toward(info, dst, ctrl["fade_alpha"], keys)
