"""Every control of the reference renderer as one typed, validated record.

Values are resolved as the reference resolves its setup keyword arguments: what the caller
passes wins, then the config pickle's `default_kwargs`, then the documented defaults below
(DITTO_SPEC §2.4). A preset is a named set of caller values applied underneath the caller's
own.

This module is the one place where option values are checked. Each value is brought to one
canonical type (NumPy integers become ints, label and key lists become tuples, arrays become
float32 copies, numeric controls become floats), so the stages take the values as they come.
Bad values raise a one-line `ValueError` naming the option, the value and what it accepts.

Deliberate deviations from the reference, which only ever accepts more or fails later: NumPy
integer scalars count as ints (the reference rejects `emo=np.int64(3)`), a tuple of label
groups is an emotion sequence like a list of them, and bools are refused wherever a number is
meant (the reference takes `emo=True` as label 1).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np

from ditto_fast.avatar import Avatar
from ditto_fast.diffusion_schedule import NUM_TRAIN_TIMESTEPS, ddim_tables

MOTION_KEYS = ("scale", "pitch", "yaw", "roll", "t", "exp", "kp")
# Per-frame controls (ctrl_info / overall_ctrl_info entries), as the reference's stitch reads them.
FRAME_CONTROLS = frozenset({
    "fade_alpha", "fade_out_keys", "vad_alpha", "delta_exp",
    "delta_pitch", "delta_yaw", "delta_roll", "alpha_pitch", "alpha_yaw", "alpha_roll",
})
FADE_TYPES = ("", "d0", "s")
SEQ_FRAMES = 80  # LMDM's clip length, fixed by its weights
MOTION_DIM = 265  # LMDM's motion vector
EXP_DIM = 63  # expression offsets: 21 keypoints × 3
EMO_LABELS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise", "contempt")
SEED_LIMIT = 2**32  # NumPy's legacy generator, which draws the LMDM noise, takes 32-bit seeds

# The canonical forms: a label, one emotion mixing 1..7 labels, a per-frame sequence of label
# groups, or float32 emotion rows (m, 8).
Emotion = int | tuple[int, ...] | tuple[tuple[int, ...], ...] | np.ndarray
Controls = dict[str, Any]


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
    emo: Emotion = 4
    eye_f0_mode: bool = False
    ch_info: Avatar | None = None  # a registered condition source (the reference's ch_info)
    # audio-to-motion
    overlap_v2: int = 10
    fix_kp_cond: int = 0
    fix_kp_cond_dim: tuple[int, int] | None = None
    sampling_timesteps: int = 50
    online_mode: bool = False
    v_min_max_for_clip: np.ndarray | None = None  # float32 (2, 265)
    smo_k_d: int = 3
    # motion stitch
    N_d: int = -1
    use_d_keys: tuple[str, ...] | dict[str, float] | None = None
    relative_d: bool = True
    drive_eye: bool | None = None
    delta_eye_arr: np.ndarray | None = None  # float32 (K, 63)
    delta_eye_open_n: int | tuple[int, ...] = 0
    fade_type: str = ""
    fade_out_keys: tuple[str, ...] = ("exp",)
    flag_stitching: bool = True
    ctrl_info: dict[int, Controls] = field(default_factory=dict)  # a list is stored as {index: controls}
    overall_ctrl_info: Controls = field(default_factory=dict)
    # run-time controls (the reference's setup_Nd)
    fade_in: int = -1
    fade_out: int = -1
    # ditto_fast: the same inputs and seed give byte-identical frames
    seed: int | None = None

    def __post_init__(self) -> None:
        # The canonical values replace the given ones: every reader sees one type per option.
        for name in OPTION_NAMES:
            object.__setattr__(self, name, _CANONICAL[name](name, getattr(self, name)))

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

Canonical = Callable[[str, Any], Any]  # (option name, value) -> canonical value, or ValueError


def _shown(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape}"
    text = " ".join(repr(value).split())  # one line, even for containers holding arrays
    return text if len(text) <= 120 else text[:117] + "..."


def _fail(name: str, value: Any, accepted: str) -> NoReturn:
    raise ValueError(f"option {name}={_shown(value)} is invalid: expected {accepted}")


def _is_integer(value: Any) -> bool:
    # bool is an int subclass: True would pass as 1 where a count or a label is meant.
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _finite_float(value: Any) -> float | None:
    """`value` as a float when it is a finite real number (not a bool), else None."""
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return number if math.isfinite(number) else None


# -- scalars --------------------------------------------------------------------------------------

def _integer(minimum: int, maximum: int | None = None, unset: bool = False) -> Canonical:
    accepted = f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"
    accepted += " or -1 (unset)" if unset else ""

    def canonical(name: str, value: Any) -> int:
        in_range = _is_integer(value) and minimum <= value and (maximum is None or value <= maximum)
        if not (in_range or (unset and _is_integer(value) and value == -1)):
            _fail(name, value, accepted)
        return int(value)
    return canonical


def _flag(optional: bool = False) -> Canonical:
    accepted = "True or False" + (" or None (automatic)" if optional else "")

    def canonical(name: str, value: Any) -> bool | None:
        if optional and value is None:
            return None
        if not isinstance(value, (bool, np.bool_)):
            _fail(name, value, accepted)
        return bool(value)
    return canonical


def _real(positive: bool = False) -> Canonical:
    accepted = "a finite number > 0" if positive else "a finite number"

    def canonical(name: str, value: Any) -> float:
        number = _finite_float(value)
        if number is None or (positive and number <= 0):
            _fail(name, value, accepted)
        return number
    return canonical


def _sampling_steps(name: str, value: Any) -> int:
    if not (_is_integer(value) and 1 <= value <= NUM_TRAIN_TIMESTEPS):
        _fail(name, value, f"an integer in [1, {NUM_TRAIN_TIMESTEPS}]")
    steps = int(value)
    with np.errstate(invalid="ignore"):  # the NaN is reported below, as an option error
        tables = ddim_tables(steps)
    if not all(np.isfinite(t).all() for t in (tables.c, tables.sigma, tables.alpha_next_sqrt)):
        # The reference's float32 DDIM coefficients take a square root of a negative number for
        # a few step counts (3 among 2..200) and would produce NaN motion.
        _fail(name, value, "a step count whose DDIM schedule is finite (this one gives NaN)")
    return steps


def _seed(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if not (_is_integer(value) and 0 <= value < SEED_LIMIT):
        _fail(name, value, f"None or an integer in [0, {SEED_LIMIT - 1}]")
    return int(value)


# -- arrays ---------------------------------------------------------------------------------------

def _finite_float32(array: np.ndarray) -> np.ndarray | None:
    """A float32 copy of a numeric array, or None when a value is (or rounds to) NaN or inf."""
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, refused here
        converted = array.astype(np.float32)
    return converted if np.isfinite(converted).all() else None


def _numeric_array(value: Any) -> np.ndarray | None:
    """An array, list or tuple of numbers (no bools, no strings) as an array, else None."""
    if not isinstance(value, (np.ndarray, list, tuple)):
        return None
    try:
        array = np.asarray(value)
    except ValueError:  # ragged nesting
        return None
    return array if array.dtype.kind in "iuf" else None


def _float_rows(name: str, value: Any, width: int, rows: int | None = None) -> np.ndarray:
    """`value` as a float32 copy of shape (rows, width) (any rows >= 1 when None), all finite."""
    accepted = f"a NumPy array of shape ({'m >= 1' if rows is None else rows}, {width}) of finite numbers"
    shaped = (isinstance(value, np.ndarray) and value.dtype.kind in "iuf" and value.ndim == 2
              and value.shape[1] == width and len(value) >= 1 and (rows is None or len(value) == rows))
    array = _finite_float32(value) if shaped else None
    if array is None:
        _fail(name, value, accepted)
    return array


def _clip_bounds(name: str, value: Any) -> np.ndarray | None:
    if value is None:
        return None
    bounds = _float_rows(name, value, MOTION_DIM, rows=2)
    if (bounds[0] > bounds[1]).any():
        _fail(name, value, f"rows [minimum, maximum] with minimum <= maximum in each of the {MOTION_DIM} dims")
    return bounds


def _blink_offsets(name: str, value: Any) -> np.ndarray | None:
    return None if value is None else _float_rows(name, value, EXP_DIM)


# -- condition ------------------------------------------------------------------------------------

_EMO_ACCEPTED = (f"a label 0..{len(EMO_LABELS) - 1} ({', '.join(EMO_LABELS)}), a list of 1..{len(EMO_LABELS) - 1} "
                 f"labels, a list of such label lists (one per frame, cycled) or an (m, {len(EMO_LABELS)}) array")


def _is_label(value: Any) -> bool:
    return _is_integer(value) and 0 <= value < len(EMO_LABELS)


def _labels(value: Any) -> tuple[int, ...] | None:
    """`value` as a tuple of labels, or None when it is not a list or tuple of labels."""
    if isinstance(value, (list, tuple)) and all(_is_label(v) for v in value):
        return tuple(int(v) for v in value)
    return None


def _label_groups(value: Any) -> tuple[tuple[int, ...], ...] | None:
    """An emotion sequence as label groups, or None. As in the reference, the first entry must be
    a list (that is what marks a sequence), later ones may be bare labels, and a group may hold
    any labels (an empty one is the uniform mix)."""
    if not (isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple))):
        return None
    groups = [(int(v),) if _is_label(v) else _labels(v) for v in value]
    return None if any(g is None for g in groups) else tuple(groups)


def _emotion(name: str, value: Any) -> Emotion:
    if isinstance(value, np.ndarray):
        return _float_rows(name, value, len(EMO_LABELS))
    if _is_label(value):
        return int(value)
    labels = _labels(value)
    if labels and len(labels) < len(EMO_LABELS):  # the reference takes 1..7 labels for one emotion
        return labels
    groups = _label_groups(value)
    if groups is None:
        _fail(name, value, _EMO_ACCEPTED)
    return groups


def _condition_source(name: str, value: Any) -> Avatar | None:
    if value is not None and not isinstance(value, Avatar):
        _fail(name, value, "None or a registered Avatar (the condition source)")
    return value


# -- audio-to-motion ------------------------------------------------------------------------------

def _kp_cond_dims(name: str, value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_integer(d) for d in value)
            and 0 <= value[0] < value[1] <= MOTION_DIM):
        _fail(name, value, f"None or [start, end] with 0 <= start < end <= {MOTION_DIM}")
    return int(value[0]), int(value[1])


# -- streaming ----------------------------------------------------------------------------------

def check_chunksize(chunksize: Any) -> tuple[int, int, int]:
    """A stream's (past, current, future) video frames per HuBERT window, as ints.

    Not a render option (it is the stream's argument), but a value checked the same way."""
    if not (isinstance(chunksize, (list, tuple)) and len(chunksize) == 3
            and all(_is_integer(c) and c >= 0 for c in chunksize) and chunksize[1] >= 1):
        _fail("chunksize", chunksize, "(past, current, future) frames: three integers >= 0, current >= 1")
    past, current, future = (int(c) for c in chunksize)
    return past, current, future


# -- motion stitch --------------------------------------------------------------------------------

def _motion_keys(value: Any) -> tuple[str, ...] | None:
    """`value` as a tuple of motion keys, or None when it is not a list or tuple of them."""
    if isinstance(value, (list, tuple)) and all(isinstance(k, str) and k in MOTION_KEYS for k in value):
        return tuple(str(k) for k in value)
    return None


def _driven_keys(name: str, value: Any) -> tuple[str, ...] | dict[str, float] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        weights = {key: _finite_float(weight) for key, weight in value.items()}
        if value and _motion_keys(list(weights)) and None not in weights.values():
            return {str(key): weight for key, weight in weights.items()}
    else:
        if isinstance(value, (set, frozenset)) and all(isinstance(k, str) for k in value):
            value = sorted(value)  # only membership counts; sorted keeps the canonical form deterministic
        keys = _motion_keys(value)
        if keys:
            return keys
    _fail(name, value, f"None, or motion keys from {MOTION_KEYS} (a list, or a dict key -> finite weight)")


def _blink_gaps(name: str, value: Any) -> int | tuple[int, ...]:
    if _is_integer(value):
        return int(value)
    # In a list a 0 would be ambiguous: alone, 0 means random gaps.
    if isinstance(value, (list, tuple)) and value and all(_is_integer(g) and g > 0 for g in value):
        return tuple(int(g) for g in value)
    _fail(name, value, "an integer (0: random 60-100 frames, < 0: never, > 0: fixed spacing) "
                       "or a list of positive spacings")


def _fade_type(name: str, value: Any) -> str:
    if not (isinstance(value, str) and value in FADE_TYPES):
        _fail(name, value, "'' (off), 'd0' (towards the first frame) or 's' (towards the source)")
    return str(value)


def _fade_keys(name: str, value: Any) -> tuple[str, ...]:
    keys = _motion_keys(value)
    if keys is None:
        _fail(name, value, f"a tuple of motion keys from {MOTION_KEYS}")
    return keys


def _exp_offset(name: str, value: Any) -> np.ndarray:
    """delta_exp as float32 (1, 63): one number for every dim, or one per dim."""
    number = _finite_float(value)
    array = np.asarray(number) if number is not None else _numeric_array(value)
    try:
        offsets = None if array is None else _finite_float32(np.broadcast_to(array, (1, EXP_DIM)))
    except ValueError:  # a shape that does not broadcast to (1, 63)
        offsets = None
    if offsets is None:
        _fail(name, value, f"a finite number or {EXP_DIM} finite numbers")
    return offsets


def _control_value(name: str, control: str, value: Any) -> Any:
    if control == "fade_out_keys":
        return _fade_keys(name, value)
    if control == "delta_exp":
        return _exp_offset(name, value)
    number = _finite_float(value)
    if number is None:
        _fail(name, value, "a finite number")
    # A Python float whatever the given type: a NumPy float64 control would turn the
    # reference's float32 motion into float64.
    return number


def canonical_controls(where: str, controls: Any) -> Controls:
    """One frame's controls (a ctrl_info entry, overall_ctrl_info, or keyword controls given to
    the stitch per frame) with canonical values; unknown names are refused, not ignored."""
    if not isinstance(controls, Mapping):
        _fail(where, controls, "a dict of per-frame controls")
    unknown = sorted((name for name in controls if name not in FRAME_CONTROLS), key=repr)
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), FRAME_CONTROLS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"option {where} has unknown controls {unknown}{hint}; known: {sorted(FRAME_CONTROLS)}")
    return {name: _control_value(f"{where}[{name!r}]", name, value) for name, value in controls.items()}


def _frame_controls(name: str, value: Any) -> dict[int, Controls]:
    if isinstance(value, (list, tuple)):
        frames = enumerate(value)
    elif isinstance(value, Mapping):
        frames = value.items()
    else:
        _fail(name, value, "{frame index >= 0: {control: value}} or a list of control dicts")
    canonical = {}
    for frame, controls in frames:
        if not (_is_integer(frame) and frame >= 0):
            _fail(f"{name} key", frame, "a frame index (an integer >= 0)")
        canonical[int(frame)] = canonical_controls(f"{name}[{frame}]", controls)
    return canonical


_CANONICAL: dict[str, Canonical] = {
    "max_size": _integer(2),
    "template_n_frames": _integer(1, unset=True),
    "crop_scale": _real(positive=True),
    "crop_vx_ratio": _real(),
    "crop_vy_ratio": _real(),
    "crop_flag_do_rot": _flag(),
    "smo_k_s": _integer(1),
    "emo": _emotion,
    "eye_f0_mode": _flag(),
    "ch_info": _condition_source,
    "overlap_v2": _integer(0, SEQ_FRAMES - 1),
    "fix_kp_cond": _integer(0),
    "fix_kp_cond_dim": _kp_cond_dims,
    "sampling_timesteps": _sampling_steps,
    "online_mode": _flag(),
    "v_min_max_for_clip": _clip_bounds,
    "smo_k_d": _integer(1),
    "N_d": _integer(1, unset=True),
    "use_d_keys": _driven_keys,
    "relative_d": _flag(),
    "drive_eye": _flag(optional=True),
    "delta_eye_arr": _blink_offsets,
    "delta_eye_open_n": _blink_gaps,
    "fade_type": _fade_type,
    "fade_out_keys": _fade_keys,
    "flag_stitching": _flag(),
    "ctrl_info": _frame_controls,
    "overall_ctrl_info": canonical_controls,
    "fade_in": _integer(1, unset=True),
    "fade_out": _integer(1, unset=True),
    "seed": _seed,
}
# Options whose --set value is written as a nested list.
_ARRAY_OPTIONS = frozenset({"v_min_max_for_clip", "delta_eye_arr"})


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


def _literal(raw: str) -> Any:
    """A Python literal, or the text itself when it is none."""
    try:
        return ast.literal_eval(raw)
    # Unhashable dict keys raise TypeError; absurdly deep nesting, RecursionError or MemoryError.
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
        return raw


def _array_literal(name: str, value: list) -> np.ndarray:
    array = _numeric_array(value)
    if array is None:
        _fail(name, value, "a nested list of numbers")
    return array


def parse_assignment(text: str) -> tuple[str, Any]:
    """`key=value` from the command line, as (key, canonical value): the value is a Python
    literal (numbers, True/False/None, lists, dicts, quoted strings); anything that is not a
    literal is taken as a string. Any bad text raises ValueError."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"--set expects key=value, got {text!r}")
    _reject_unknown({key: None}, "--set")
    value = _literal(raw.strip())
    if isinstance(value, list) and key in _ARRAY_OPTIONS:
        value = _array_literal(key, value)
    return key, _CANONICAL[key](key, value)
