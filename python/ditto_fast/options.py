"""Every control of the reference renderer as one typed, validated record.

Values are resolved as the reference resolves its setup keyword arguments: what the caller
passes wins, then the config pickle's `default_kwargs`, then the documented defaults below
(DITTO_SPEC §2.4). A preset is a named set of caller values applied underneath the caller's
own. Bad values raise `ValueError` naming the option and what it accepts.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ditto_fast.diffusion_schedule import ddim_tables
from ditto_fast.stages.avatar import Avatar

MOTION_KEYS = ("scale", "pitch", "yaw", "roll", "t", "exp")
# Per-frame controls (ctrl_info / overall_ctrl_info entries), as the reference's stitch reads them.
FRAME_CONTROLS = frozenset({
    "fade_alpha", "fade_out_keys", "vad_alpha", "delta_exp",
    "delta_pitch", "delta_yaw", "delta_roll", "alpha_pitch", "alpha_yaw", "alpha_roll",
})
SEQ_FRAMES = 80  # LMDM's clip length, fixed by its weights
EMO_LABELS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise", "contempt")


# eq=False: fields hold arrays and dicts, for which generated __eq__/__hash__ would be wrong.
@dataclass(frozen=True, eq=False)
class RenderOptions:
    # source loading and crop
    max_size: int = 1920
    template_n_frames: int = -1
    crop_scale: float = 2.3
    crop_vx_ratio: float = 0.0
    crop_vy_ratio: float = -0.125
    crop_flag_do_rot: bool = True
    smo_k_s: int = 13
    # condition
    emo: Any = 4  # int | list[int] | list[list[int]] | ndarray (m, 8)
    eye_f0_mode: bool = False
    ch_info: Avatar | None = None  # a registered condition source (the reference's ch_info)
    # audio-to-motion
    overlap_v2: int = 10
    fix_kp_cond: int = 0
    fix_kp_cond_dim: tuple[int, int] | None = None
    sampling_timesteps: int = 50
    online_mode: bool = False
    v_min_max_for_clip: np.ndarray | None = None
    smo_k_d: int = 3
    # motion stitch
    N_d: int = -1
    use_d_keys: Any = None  # None | sequence of motion keys | {key: weight}
    relative_d: bool = True
    drive_eye: bool | None = None
    delta_eye_arr: np.ndarray | None = None
    delta_eye_open_n: Any = 0  # int | list[int]
    fade_type: str = ""
    fade_out_keys: tuple[str, ...] = ("exp",)
    flag_stitching: bool = True
    ctrl_info: Any = field(default_factory=dict)  # {frame: {control: value}} | list of dicts
    overall_ctrl_info: dict = field(default_factory=dict)
    # run-time controls (the reference's setup_Nd)
    fade_in: int = -1
    fade_out: int = -1
    # ditto_fast: the same inputs and seed give byte-identical frames
    seed: int | None = None

    def __post_init__(self) -> None:
        for check in _CHECKS:
            check(self)

    def replace(self, **changes: Any) -> RenderOptions:
        return resolve_options(changes, base=self)


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(RenderOptions))

# Named starting points, applied under the caller's own values. Fewer DDIM steps is the
# reference's own speed/quality dial; the steps are the only thing the presets change here.
PRESETS: dict[str, dict[str, Any]] = {
    "quality": {"sampling_timesteps": 50},
    "balanced": {"sampling_timesteps": 25},
    "speed": {"sampling_timesteps": 10},
    "realtime": {"sampling_timesteps": 5},
}


def _fail(name: str, value: Any, accepted: str) -> None:
    shown = f"array of shape {value.shape}" if isinstance(value, np.ndarray) else repr(value)
    raise ValueError(f"option {name}={shown} is invalid: expected {accepted}")


def _int_at_least(name: str, minimum: int, allow_minus_one: bool = False):
    def check(options: RenderOptions) -> None:
        value = getattr(options, name)
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        if not ok or (value < minimum and not (allow_minus_one and value == -1)):
            extra = " or -1 (unset)" if allow_minus_one else ""
            _fail(name, value, f"an integer >= {minimum}{extra}")
    return check


def _bool(name: str, optional: bool = False):
    def check(options: RenderOptions) -> None:
        value = getattr(options, name)
        if not (isinstance(value, (bool, np.bool_)) or (optional and value is None)):
            _fail(name, value, "True or False" + (" or None (automatic)" if optional else ""))
    return check


def _number(name: str, positive: bool = False):
    def check(options: RenderOptions) -> None:
        value = getattr(options, name)
        ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
        if not ok or not np.isfinite(value) or (positive and value <= 0):
            _fail(name, value, "a positive number" if positive else "a finite number")
    return check


def _check_emo(options: RenderOptions) -> None:
    emo = options.emo
    label_range = f"labels 0..{len(EMO_LABELS) - 1} ({', '.join(EMO_LABELS)})"

    def is_label(v: Any) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < len(EMO_LABELS)

    if is_label(emo):
        return
    if isinstance(emo, np.ndarray):
        if emo.ndim == 2 and emo.shape[1] == len(EMO_LABELS) and emo.shape[0] >= 1:
            return
        _fail("emo", emo, "an array of shape (m, 8)")
    if isinstance(emo, (list, tuple)) and emo:
        if all(is_label(v) for v in emo) and len(emo) < len(EMO_LABELS):
            return
        if all(isinstance(v, (list, tuple)) and v and all(is_label(x) for x in v) for v in emo):
            return
    _fail("emo", emo, f"one of {label_range}, a list of them, a list of such lists, or an (m, 8) array")


def _check_crop(options: RenderOptions) -> None:
    _number("crop_scale", positive=True)(options)
    _number("crop_vx_ratio")(options)
    _number("crop_vy_ratio")(options)


def _check_overlap(options: RenderOptions) -> None:
    value = options.overlap_v2
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 0 <= value < SEQ_FRAMES:
        _fail("overlap_v2", value, f"an integer in [0, {SEQ_FRAMES - 1}] (clips are {SEQ_FRAMES} frames)")


def _check_steps(options: RenderOptions) -> None:
    value = options.sampling_timesteps
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 1 <= value <= 1000:
        _fail("sampling_timesteps", value, "an integer in [1, 1000]")
    with np.errstate(invalid="ignore"):  # the NaN is reported below, as an option error
        tables = ddim_tables(int(value))
    if not all(np.isfinite(t).all() for t in (tables.c, tables.sigma, tables.alpha_next_sqrt)):
        # The reference's float32 DDIM coefficients take a square root of a negative number for
        # a few step counts (3 among 2..200) and would produce NaN motion.
        _fail("sampling_timesteps", value, "a step count whose DDIM schedule is finite (this one gives NaN)")


def _check_kp_cond_dim(options: RenderOptions) -> None:
    dims = options.fix_kp_cond_dim
    if dims is None:
        return
    if (not isinstance(dims, (list, tuple)) or len(dims) != 2
            or not all(isinstance(d, (int, np.integer)) for d in dims) or not 0 <= dims[0] < dims[1] <= 265):
        _fail("fix_kp_cond_dim", dims, "None or [start, end] with 0 <= start < end <= 265")


def _check_array(name: str, shape: tuple[int | None, ...]):
    def check(options: RenderOptions) -> None:
        value = getattr(options, name)
        if value is None:
            return
        if not isinstance(value, np.ndarray) or value.ndim != len(shape) or any(
                want is not None and got != want for got, want in zip(value.shape, shape)):
            dims = ", ".join("K" if s is None else str(s) for s in shape)
            _fail(name, value, f"None or a NumPy array of shape ({dims})")
    return check


def _check_use_d_keys(options: RenderOptions) -> None:
    keys = options.use_d_keys
    if keys is None:
        return
    names = list(keys) if isinstance(keys, (Mapping, list, tuple, set, frozenset)) else None
    if not names or not set(names) <= set(MOTION_KEYS):
        _fail("use_d_keys", keys, f"None, or motion keys from {MOTION_KEYS} (a list, or a dict key -> weight)")


def _check_blink(options: RenderOptions) -> None:
    value = options.delta_eye_open_n
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not (is_int or (isinstance(value, (list, tuple)) and value
                       and all(isinstance(v, (int, np.integer)) and v > 0 for v in value))):
        _fail("delta_eye_open_n", value,
              "an integer (0: random 60-100 frames, < 0: never, > 0: fixed spacing) or a list of positive spacings")


def _check_fade(options: RenderOptions) -> None:
    if options.fade_type not in ("", "d0", "s"):
        _fail("fade_type", options.fade_type, "'' (off), 'd0' (towards the first frame) or 's' (towards the source)")
    keys = options.fade_out_keys
    if not isinstance(keys, (list, tuple)) or not set(keys) <= set(MOTION_KEYS) | {"kp"}:
        _fail("fade_out_keys", keys, f"a tuple of motion keys from {MOTION_KEYS}")


def _check_frame_controls(where: str, controls: Any) -> None:
    if not isinstance(controls, Mapping):
        _fail(where, controls, "a dict of per-frame controls")
    unknown = sorted(set(controls) - FRAME_CONTROLS)
    if unknown:
        raise ValueError(f"option {where} has unknown controls {unknown}; known: {sorted(FRAME_CONTROLS)}")


def _check_ctrl_info(options: RenderOptions) -> None:
    ctrl = options.ctrl_info
    if isinstance(ctrl, Mapping):
        for frame, controls in ctrl.items():
            if not isinstance(frame, (int, np.integer)) or frame < 0:
                _fail("ctrl_info", ctrl, "{frame index >= 0: {control: value}} or a list of control dicts")
            _check_frame_controls(f"ctrl_info[{frame}]", controls)
    elif isinstance(ctrl, (list, tuple)):
        for frame, controls in enumerate(ctrl):
            _check_frame_controls(f"ctrl_info[{frame}]", controls)
    else:
        _fail("ctrl_info", ctrl, "{frame index: {control: value}} or a list of control dicts")
    _check_frame_controls("overall_ctrl_info", options.overall_ctrl_info)


def _check_ch_info(options: RenderOptions) -> None:
    if options.ch_info is not None and not isinstance(options.ch_info, Avatar):
        _fail("ch_info", options.ch_info, "None or a registered Avatar (the condition source)")


def _check_seed(options: RenderOptions) -> None:
    seed = options.seed
    if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0):
        _fail("seed", seed, "None or an integer >= 0")


_CHECKS = (
    _int_at_least("max_size", 2),
    _int_at_least("template_n_frames", 1, allow_minus_one=True),
    _check_crop,
    _bool("crop_flag_do_rot"),
    _int_at_least("smo_k_s", 1),
    _check_emo,
    _bool("eye_f0_mode"),
    _check_ch_info,
    _check_overlap,
    _int_at_least("fix_kp_cond", 0),
    _check_kp_cond_dim,
    _check_steps,
    _bool("online_mode"),
    _check_array("v_min_max_for_clip", (2, 265)),
    _int_at_least("smo_k_d", 1),
    _int_at_least("N_d", 1, allow_minus_one=True),
    _check_use_d_keys,
    _bool("relative_d"),
    _bool("drive_eye", optional=True),
    _check_array("delta_eye_arr", (None, 63)),
    _check_blink,
    _check_fade,
    _bool("flag_stitching"),
    _check_ctrl_info,
    _int_at_least("fade_in", 1, allow_minus_one=True),
    _int_at_least("fade_out", 1, allow_minus_one=True),
    _check_seed,
)


def _reject_unknown(values: Mapping[str, Any], where: str) -> None:
    for name in values:
        if name not in OPTION_NAMES:
            close = difflib.get_close_matches(name, OPTION_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown option {name!r} in {where}{hint}")


def resolve_options(
    overrides: Mapping[str, Any] | None = None,
    cfg_defaults: Mapping[str, Any] | None = None,
    preset: str | None = None,
    base: RenderOptions | None = None,
) -> RenderOptions:
    """Caller values over the preset over the config's `default_kwargs` over `base`
    (or the documented defaults).

    Keys of `default_kwargs` that are not render options (the synthetic trees' `synthetic`
    marker, or keys a newer reference adds) are ignored, as the reference ignores them.
    """
    overrides = dict(overrides or {})
    _reject_unknown(overrides, "the render options")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    values = {k: v for k, v in (cfg_defaults or {}).items() if k in OPTION_NAMES}
    values.update(PRESETS.get(preset, {}) if preset else {})
    values.update(overrides)
    return dataclasses.replace(base or RenderOptions(), **values)


def parse_assignment(text: str) -> tuple[str, Any]:
    """`key=value` from the command line: the value is a Python literal (numbers, True/False/
    None, lists, dicts, quoted strings); anything that is not a literal is taken as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"--set expects key=value, got {text!r}")
    _reject_unknown({key: None}, "--set")
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        value = raw.strip()
    if isinstance(value, list) and key in ("v_min_max_for_clip", "delta_eye_arr"):
        value = np.asarray(value, dtype=np.float32)
    return key, value
