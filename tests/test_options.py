"""Render options: every reference parameter typed, validated and canonicalised in one place, defaults
merged as the reference merges them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ditto_fast.avatar import Avatar
from ditto_fast.options import (
    FADE_TYPES,
    FRAME_CONTROLS,
    MOTION_KEYS,
    OPTION_NAMES,
    PRESETS,
    RenderOptions,
    check_chunksize,
    parse_assignment,
    resolve_options,
)

SPEC_2_4_KEYS = {
    "max_size", "template_n_frames", "crop_scale", "crop_vx_ratio", "crop_vy_ratio", "crop_flag_do_rot",
    "smo_k_s", "emo", "eye_f0_mode", "ch_info", "overlap_v2", "fix_kp_cond", "fix_kp_cond_dim",
    "sampling_timesteps", "online_mode", "v_min_max_for_clip", "smo_k_d", "N_d", "use_d_keys", "relative_d",
    "drive_eye", "delta_eye_arr", "delta_eye_open_n", "fade_type", "fade_out_keys", "flag_stitching",
    "ctrl_info", "overall_ctrl_info",
}
NAN, INF = math.nan, math.inf


def same(a: object, b: object) -> bool:
    """Equal values of the same types, all the way down (arrays: same dtype and elements)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def assert_canonical(value: object) -> None:
    """Canonical values hold Python scalars, strings, tuples, dicts and float32 arrays only."""
    if isinstance(value, np.ndarray):
        assert value.dtype == np.float32
    elif isinstance(value, dict):
        for key, item in value.items():
            assert_canonical(key)
            assert_canonical(item)
    elif isinstance(value, tuple):
        for item in value:
            assert_canonical(item)
    else:
        assert value is None or type(value) in (int, float, bool, str) or isinstance(value, Avatar), repr(value)


# -- defaults and merging ------------------------------------------------------------------------------

def test_every_reference_parameter_is_an_option_with_its_documented_default():
    assert SPEC_2_4_KEYS <= set(OPTION_NAMES)
    defaults = RenderOptions()
    assert (defaults.max_size, defaults.crop_scale, defaults.crop_vy_ratio, defaults.emo) == (1920, 2.3, -0.125, 4)
    assert (defaults.overlap_v2, defaults.sampling_timesteps, defaults.smo_k_d, defaults.smo_k_s) == (10, 50, 3, 13)
    assert defaults.fade_out_keys == ("exp",) and defaults.drive_eye is None and defaults.use_d_keys is None


def test_caller_over_preset_over_config_over_defaults():
    cfg = {"overlap_v2": 70, "sampling_timesteps": 40, "online_mode": True, "synthetic": True}
    options = resolve_options({"sampling_timesteps": 7}, cfg_defaults=cfg, preset="balanced")
    assert options.sampling_timesteps == 7  # caller
    assert options.overlap_v2 == 70 and options.online_mode  # config
    assert resolve_options({}, cfg, "balanced").sampling_timesteps == PRESETS["balanced"]["sampling_timesteps"]
    assert resolve_options({}, cfg).sampling_timesteps == 40
    assert resolve_options().sampling_timesteps == 50
    assert options.replace(seed=3).seed == 3 and options.replace(seed=3).overlap_v2 == 70


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'fast'; choose from"):
        resolve_options(preset="fast")


# -- canonical forms -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("emo", "canonical"), [
    (0, 0), (7, 7),
    (np.int64(3), 3),  # accepted on purpose: the reference refuses NumPy integers
    ([3, 4], (3, 4)), ((1, 5, 6), (1, 5, 6)),
    ([[3], [4, 5]], ((3,), (4, 5))),
    ([(0,), (7, 2)], ((0,), (7, 2))),
    ([[4], (2, 5), np.int8(4)], ((4,), (2, 5), (4,))),  # later entries may be bare labels, as in the reference
    ([[]], ((),)),  # an empty group: the uniform mix, as in the reference
    (((3,), (4,)), ((3,), (4,))),  # a tuple of groups: the canonical form itself
])
def test_every_emo_form_is_accepted_in_its_canonical_form(emo, canonical):
    assert same(resolve_options({"emo": emo}).emo, canonical)


def test_emo_rows_become_a_float32_copy():
    rows = np.random.default_rng(0).random((5, 8))
    emo = resolve_options({"emo": rows}).emo
    assert emo.dtype == np.float32 and np.array_equal(emo, rows.astype(np.float32))
    rows[:] = 0  # the options own their copy
    assert emo.any()


def test_numbers_lists_and_controls_are_canonicalised():
    options = RenderOptions(
        max_size=np.int64(512), crop_scale=np.float32(2.5), crop_flag_do_rot=np.bool_(False),
        fix_kp_cond_dim=[np.int64(0), 202], use_d_keys={"exp": np.float64(0.5), "yaw": 1}, delta_eye_open_n=[5, 7],
        fade_out_keys=["exp", "yaw"], ctrl_info=[{}, {"delta_yaw": np.float32(2), "delta_exp": 0.01}],
        overall_ctrl_info={"fade_out_keys": ["exp"]}, seed=np.uint32(7),
        v_min_max_for_clip=np.stack([np.full(265, -1.0), np.full(265, 1.0)]),
    )
    assert same(options.max_size, 512) and same(options.crop_scale, float(np.float32(2.5)))
    assert same(options.crop_flag_do_rot, False) and same(options.fix_kp_cond_dim, (0, 202))
    assert same(options.use_d_keys, {"exp": 0.5, "yaw": 1.0}) and same(options.delta_eye_open_n, (5, 7))
    assert same(options.fade_out_keys, ("exp", "yaw")) and same(options.seed, 7)
    assert list(options.ctrl_info) == [0, 1] and same(options.ctrl_info[1]["delta_yaw"], 2.0)
    assert same(options.ctrl_info[1]["delta_exp"], np.full((1, 63), 0.01, np.float32))
    assert same(options.overall_ctrl_info, {"fade_out_keys": ("exp",)})
    assert options.v_min_max_for_clip.dtype == np.float32
    for name in OPTION_NAMES:
        assert_canonical(getattr(options, name))


def test_controls_per_frame_and_overall():
    options = resolve_options({"ctrl_info": {0: {"fade_alpha": 0.5}, 10: {"delta_yaw": 15.0, "alpha_pitch": 0.5}},
                               "overall_ctrl_info": {"delta_exp": 0.01}, "fade_in": 5, "fade_out": 5})
    assert options.ctrl_info[10]["delta_yaw"] == 15.0
    assert resolve_options({"ctrl_info": [{}, {"vad_alpha": 0.5}]}).ctrl_info[1]["vad_alpha"] == 0.5


def test_ctrl_info_past_the_last_frame_is_not_an_options_error():
    """The frame count comes from the audio, not from the options (the engine overrides N_d), so a
    control past the end cannot be told from the options; the stitch never reaches such a frame
    and ignores it, as the reference does."""
    assert 5000 in resolve_options({"N_d": 10, "ctrl_info": {5000: {"delta_yaw": 1.0}}}).ctrl_info


# -- bad values ----------------------------------------------------------------------------------------

_ARRAY_265 = np.zeros((2, 265))
_INVERTED = np.stack([np.ones(265), np.zeros(265)])
# (option, bad value, a fragment of the message); every option has at least one row.
BAD_VALUES = [
    ("max_size", 1.5, "max_size=1.5"), ("max_size", 1, "an integer >= 2"), ("max_size", True, "max_size=True"),
    ("template_n_frames", 0, "or -1 (unset)"), ("template_n_frames", -2, "template_n_frames=-2"),
    ("crop_scale", 0, "crop_scale=0 is invalid: expected a finite number > 0"), ("crop_scale", -1, "crop_scale=-1"),
    ("crop_scale", NAN, "crop_scale=nan"), ("crop_scale", INF, "crop_scale=inf"), ("crop_scale", "2", "'2'"),
    ("crop_vx_ratio", NAN, "a finite number"), ("crop_vy_ratio", None, "crop_vy_ratio=None"),
    ("crop_flag_do_rot", "yes", "crop_flag_do_rot='yes'"), ("crop_flag_do_rot", 1, "True or False"),
    ("smo_k_s", 0, "smo_k_s=0"), ("smo_k_s", 2.0, "an integer >= 1"),
    ("emo", 9, "option emo=9 is invalid"), ("emo", -1, "option emo=-1"), ("emo", 8, "labels"),
    ("emo", "x", "emo='x'"), ("emo", [True], "emo=[True]"), ("emo", True, "emo=True"), ("emo", [], "emo=[]"),
    ("emo", list(range(8)), "1..7 labels"), ("emo", [[9]], "emo=[[9]]"), ("emo", [[3], "4"], "emo="),
    ("emo", [3, [4]], "emo=[3, [4]]"), ("emo", np.zeros((2, 7)), "array of shape (2, 7)"),
    ("emo", np.zeros((0, 8)), "array of shape (0, 8)"), ("emo", np.full((1, 8), np.nan), "finite numbers"),
    ("emo", np.array([[True] * 8]), "emo=array"),
    ("eye_f0_mode", 0, "eye_f0_mode=0"),
    ("ch_info", {"x_s_info": 1}, "expected None or a registered Avatar"),
    ("overlap_v2", 80, "overlap_v2=80"), ("overlap_v2", -1, "[0, 79]"), ("overlap_v2", 10.0, "overlap_v2=10.0"),
    ("fix_kp_cond", -1, "fix_kp_cond=-1"),
    ("fix_kp_cond_dim", [5, 2], "fix_kp_cond_dim=[5, 2]"), ("fix_kp_cond_dim", (0, 266), "<= 265"),
    ("fix_kp_cond_dim", [False, True], "fix_kp_cond_dim=[False, True]"), ("fix_kp_cond_dim", 5, "[start, end]"),
    ("sampling_timesteps", 0, "option sampling_timesteps=0 is invalid: expected an integer in [1, 1000]"),
    ("sampling_timesteps", -1, "sampling_timesteps=-1"), ("sampling_timesteps", 10000, "sampling_timesteps=10000"),
    ("sampling_timesteps", 3, "sampling_timesteps=3 is invalid: expected a step count whose DDIM schedule"),
    ("sampling_timesteps", 10.0, "sampling_timesteps=10.0"), ("sampling_timesteps", True, "sampling_timesteps=True"),
    ("online_mode", "yes", "online_mode='yes'"),
    ("v_min_max_for_clip", np.zeros((3, 265)), "v_min_max_for_clip=array of shape (3, 265)"),
    ("v_min_max_for_clip", _ARRAY_265.tolist(), "a NumPy array"),
    ("v_min_max_for_clip", np.full((2, 265), np.nan), "finite numbers"),
    ("v_min_max_for_clip", _INVERTED, "minimum <= maximum"),
    ("smo_k_d", 0, "smo_k_d=0"), ("smo_k_d", -1, "smo_k_d=-1"), ("smo_k_d", 2.5, "an integer >= 1"),
    ("N_d", 0, "N_d=0"),
    ("use_d_keys", ["exp", "kp_typo"], "use_d_keys"), ("use_d_keys", [], "use_d_keys=[]"),
    ("use_d_keys", "exp", "use_d_keys='exp'"), ("use_d_keys", {"exp": NAN}, "finite weight"),
    ("use_d_keys", {"exp": True}, "use_d_keys"), ("use_d_keys", [["exp"]], "use_d_keys=[['exp']]"),
    ("relative_d", None, "relative_d=None"),
    ("drive_eye", "auto", "or None (automatic)"),
    ("delta_eye_arr", np.zeros((0, 63)), "delta_eye_arr=array of shape (0, 63)"),
    ("delta_eye_arr", np.zeros((2, 60)), "(m >= 1, 63)"), ("delta_eye_arr", np.full((2, 63), np.inf), "finite"),
    ("delta_eye_open_n", [10, 0], "delta_eye_open_n=[10, 0]"), ("delta_eye_open_n", [], "positive spacings"),
    ("delta_eye_open_n", 1.5, "delta_eye_open_n=1.5"), ("delta_eye_open_n", "8", "delta_eye_open_n='8'"),
    ("delta_eye_open_n", True, "delta_eye_open_n=True"), ("delta_eye_open_n", [5, -6], "[5, -6]"),
    ("fade_type", "x", "fade_type='x'"), ("fade_type", None, "'d0'"),
    ("fade_out_keys", "exp", "fade_out_keys='exp'"), ("fade_out_keys", ["mouth"], "motion keys"),
    ("flag_stitching", "yes", "flag_stitching='yes'"),
    ("ctrl_info", {3: {"delta_yaw": 10, "spin": 1}}, "option ctrl_info[3] has unknown controls ['spin']"),
    ("ctrl_info", {3: {"delta_pich": 1}}, "(did you mean 'delta_pitch'?)"),
    ("ctrl_info", {-1: {}}, "ctrl_info key=-1"), ("ctrl_info", {"3": {}}, "a frame index"),
    ("ctrl_info", {True: {}}, "ctrl_info key=True"), ("ctrl_info", 5, "ctrl_info=5"), ("ctrl_info", [5], "[0]=5"),
    ("ctrl_info", {3: {"delta_yaw": "x"}}, "option ctrl_info[3]['delta_yaw']='x'"),
    ("ctrl_info", {3: {"vad_alpha": NAN}}, "vad_alpha']=nan"), ("ctrl_info", {3: {"vad_alpha": True}}, "=True"),
    ("ctrl_info", {3: {"delta_exp": np.zeros(5)}}, "63 finite numbers"),
    ("ctrl_info", {3: {"delta_exp": ["a"] * 63}}, "delta_exp']"),
    ("ctrl_info", {3: {"fade_out_keys": "exp"}}, "fade_out_keys']='exp'"),
    ("ctrl_info", {3: {"fade_out_keys": ["mouth"]}}, "motion keys"),
    ("overall_ctrl_info", {"yaw": 1}, "overall_ctrl_info has unknown controls ['yaw']"),
    ("overall_ctrl_info", [], "overall_ctrl_info=[]"), ("overall_ctrl_info", {"delta_roll": INF}, "=inf"),
    ("fade_in", 0, "fade_in=0"), ("fade_in", 1.5, "fade_in=1.5"), ("fade_out", -2, "fade_out=-2"),
    ("seed", -2, "seed=-2"), ("seed", 2**32, "[0, 4294967295]"), ("seed", True, "seed=True"), ("seed", "0", "'0'"),
]


def test_the_bad_value_table_covers_every_option():
    assert {name for name, _, _ in BAD_VALUES} == set(OPTION_NAMES)


@pytest.mark.parametrize(("name", "value", "message"), BAD_VALUES, ids=[f"{n}={v!r}"[:60] for n, v, _ in BAD_VALUES])
def test_bad_values_name_the_option_and_what_it_accepts(name, value, message):
    with pytest.raises(ValueError) as info:
        resolve_options({name: value})
    text = str(info.value)
    assert text.startswith(f"option {name}") and message in text
    assert "\n" not in text  # one line, even for values holding arrays


@pytest.mark.parametrize(("key", "hint"), [
    ("sampling_timestep", " (did you mean 'sampling_timesteps'?)"),
    ("crop_scal", " (did you mean 'crop_scale'?)"),
    ("zzz", ""),
])
def test_unknown_options_are_named_with_a_suggestion(key, hint):
    with pytest.raises(ValueError) as info:
        resolve_options({key: 1})
    assert str(info.value) == f"unknown option {key!r} in the render options{hint}"


@pytest.mark.parametrize("chunksize", [(3, 0, 2), (3, 5), (True, 5, 2), (3, 5.0, 2), (3, -1, 2), None, "352",
                                       (3, NAN, 2), (3, INF, 2)])
def test_bad_chunksizes_name_the_stream_argument(chunksize):
    with pytest.raises(ValueError, match=r"^option chunksize=.* is invalid: expected \(past, current, future\)"):
        check_chunksize(chunksize)


def test_chunksize_becomes_python_ints():
    assert same(check_chunksize([np.int64(3), 5, np.uint8(2)]), (3, 5, 2))
    assert same(check_chunksize((0, 1, 0)), (0, 1, 0))


# -- command line --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("emo=3", ("emo", 3)), ("emo=[3, 4]", ("emo", (3, 4))), ("crop_scale=2.0", ("crop_scale", 2.0)),
    ("drive_eye=False", ("drive_eye", False)), ("fade_type=d0", ("fade_type", "d0")), ("fade_type=", ("fade_type", "")),
    ("ctrl_info={5: {'delta_yaw': 20}}", ("ctrl_info", {5: {"delta_yaw": 20.0}})),
    (" seed = 7 ", ("seed", 7)),
])
def test_command_line_assignments(text, expected):
    key, value = parse_assignment(text)
    assert key == expected[0] and same(value, expected[1])


def test_command_line_arrays_and_errors():
    key, value = parse_assignment("v_min_max_for_clip=" + str([[-1.0] * 265, [1.0] * 265]))
    assert key == "v_min_max_for_clip" and value.shape == (2, 265) and value.dtype == np.float32
    with pytest.raises(ValueError, match="--set expects key=value"):
        parse_assignment("emo")
    with pytest.raises(ValueError, match="unknown option 'emotion' in --set"):
        parse_assignment("emotion=3")
    with pytest.raises(ValueError, match="option emo=9 is invalid"):
        parse_assignment("emo=9")  # checked while parsing, not later
    with pytest.raises(ValueError, match="option delta_eye_arr=.* expected a nested list of numbers"):
        parse_assignment("delta_eye_arr=[[1.0], [1.0, 2.0]]")


# -- properties ----------------------------------------------------------------------------------------

def integers(low: int, high: int, numpy: bool = True) -> st.SearchStrategy:
    plain = st.integers(low, high)
    return st.one_of(plain, plain.map(np.int64)) if numpy else plain


def reals(low: float = -1e6, high: float = 1e6, numpy: bool = True) -> st.SearchStrategy:
    plain = st.floats(low, high, allow_nan=False, allow_infinity=False)
    return st.one_of(plain, st.integers(int(math.ceil(low)), int(high)), plain.map(np.float64)) if numpy \
        else st.one_of(plain, st.integers(int(math.ceil(low)), int(high)))


def flags(numpy: bool = True) -> st.SearchStrategy:
    return st.one_of(st.booleans(), st.booleans().map(np.bool_)) if numpy else st.booleans()


def sequences(elements: st.SearchStrategy, min_size: int = 0, max_size: int = 4) -> st.SearchStrategy:
    """Lists and tuples of `elements`."""
    return st.lists(elements, min_size=min_size, max_size=max_size).flatmap(lambda v: st.sampled_from([v, tuple(v)]))


def rows(width: int, count: st.SearchStrategy, numpy: bool) -> st.SearchStrategy:
    """(count, width) rows of one finite value each: an array, or (for the command line) nested lists."""
    def build(n: int, value: float) -> object:
        return np.full((n, width), value) if numpy else [[value] * width] * n
    return st.builds(build, count, st.floats(-10, 10, allow_nan=False))


def clip_bounds(numpy: bool) -> st.SearchStrategy:
    def build(low: float, span: float) -> object:
        bounds = [[low] * 265, [low + span] * 265]
        return np.array(bounds) if numpy else bounds
    return st.builds(build, st.floats(-10, 10), st.floats(0, 10))


def controls(numpy: bool) -> st.SearchStrategy:
    keys = sequences(st.sampled_from(MOTION_KEYS))
    values = {name: reals(numpy=numpy) for name in FRAME_CONTROLS}
    values["fade_out_keys"] = keys
    values["delta_exp"] = st.one_of(reals(numpy=numpy), st.lists(reals(-1, 1, numpy=False), min_size=63, max_size=63))
    return st.fixed_dictionaries({}, optional=values)


def emotions(numpy: bool) -> st.SearchStrategy:
    label = integers(0, 7, numpy)
    group = sequences(label, max_size=8)
    sequence = st.tuples(group, st.lists(st.one_of(label, group), max_size=3)).map(lambda t: [t[0], *t[1]])
    forms = [label, sequences(label, min_size=1, max_size=7), sequence]
    if numpy:
        forms.append(st.builds(lambda m, seed: np.random.default_rng(seed).random((m, 8)), st.integers(1, 4),
                               st.integers(0, 100)))
    return st.one_of(forms)


def valid_values(numpy: bool = True) -> dict[str, st.SearchStrategy]:
    """A strategy of valid values per option (the command line's Python literals when not `numpy`)."""
    keys = st.sampled_from(MOTION_KEYS)
    unset = st.just(-1)
    return {
        "max_size": integers(2, 10_000, numpy), "template_n_frames": st.one_of(unset, integers(1, 10_000, numpy)),
        "crop_scale": reals(1e-3, 10, numpy), "crop_vx_ratio": reals(numpy=numpy),
        "crop_vy_ratio": reals(numpy=numpy), "crop_flag_do_rot": flags(numpy), "smo_k_s": integers(1, 99, numpy),
        "emo": emotions(numpy), "eye_f0_mode": flags(numpy), "ch_info": st.none(),
        "overlap_v2": integers(0, 79, numpy), "fix_kp_cond": integers(0, 10, numpy),
        "fix_kp_cond_dim": st.one_of(st.none(), st.tuples(st.integers(0, 264), st.integers(1, 265))
                                     .filter(lambda d: d[0] < d[1]).flatmap(lambda d: st.sampled_from([d, list(d)]))),
        # 3 steps is the one count whose DDIM schedule is NaN (a row of BAD_VALUES).
        "sampling_timesteps": integers(1, 1000, numpy).filter(lambda s: s != 3),
        "online_mode": flags(numpy), "v_min_max_for_clip": st.one_of(st.none(), clip_bounds(numpy)),
        "smo_k_d": integers(1, 99, numpy), "N_d": st.one_of(unset, integers(1, 10_000, numpy)),
        "use_d_keys": st.one_of(st.none(), sequences(keys, min_size=1),
                                st.dictionaries(keys, reals(numpy=numpy), min_size=1)),
        "relative_d": flags(numpy), "drive_eye": st.one_of(st.none(), flags(numpy)),
        "delta_eye_arr": st.one_of(st.none(), rows(63, st.integers(1, 4), numpy)),
        "delta_eye_open_n": st.one_of(integers(-5, 200, numpy), sequences(integers(1, 200, numpy), min_size=1)),
        "fade_type": st.sampled_from(FADE_TYPES), "fade_out_keys": sequences(keys), "flag_stitching": flags(numpy),
        "ctrl_info": st.one_of(st.dictionaries(integers(0, 500, numpy), controls(numpy), max_size=3),
                               st.lists(controls(numpy), max_size=3)),
        "overall_ctrl_info": controls(numpy),
        "fade_in": st.one_of(unset, integers(1, 100, numpy)), "fade_out": st.one_of(unset, integers(1, 100, numpy)),
        "seed": st.one_of(st.none(), integers(0, 2**32 - 1, numpy)),
    }


VALID = valid_values()
LITERALS = valid_values(numpy=False)
ARRAY_OPTIONS = ("v_min_max_for_clip", "delta_eye_arr")


def test_every_option_has_a_valid_value_strategy():
    assert set(VALID) == set(LITERALS) == set(OPTION_NAMES)


@settings(max_examples=150, deadline=None)
@given(values=st.fixed_dictionaries({}, optional=VALID))
def test_valid_values_are_accepted_and_canonicalised_idempotently(values):
    options = resolve_options(values)
    again = resolve_options({name: getattr(options, name) for name in OPTION_NAMES})
    for name in OPTION_NAMES:
        value = getattr(options, name)
        assert_canonical(value)
        assert same(getattr(again, name), value), name
        assert same(getattr(options.replace(), name), value), name
    for name, given_value in values.items():
        if isinstance(given_value, (int, float, np.number, np.bool_)):
            assert getattr(options, name) == given_value  # the same number, as a Python scalar


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(set(OPTION_NAMES) - {"ch_info"})), data=st.data())
def test_valid_literals_round_trip_through_the_command_line(name, data):
    value = data.draw(LITERALS[name])
    key, parsed = parse_assignment(f" {name} = {value!r} ")
    as_given = np.asarray(value) if name in ARRAY_OPTIONS and value is not None else value
    expected = getattr(resolve_options({name: as_given}), name)
    assert key == name and same(parsed, expected)


LITERAL_CHARACTERS = "[](){}:,.'\" -+0123456789eEjxTrueFalsNonb_\\"
ASSIGNMENTS = st.one_of(
    st.text(max_size=40),
    st.builds("{}={}".format, st.sampled_from(OPTION_NAMES), st.text(max_size=40)),
    st.builds("{}={}".format, st.sampled_from(OPTION_NAMES), st.text(LITERAL_CHARACTERS, max_size=40)),
)


@settings(max_examples=200, deadline=None)
@given(text=ASSIGNMENTS)
def test_any_assignment_text_parses_or_raises_value_error(text):
    try:
        key, value = parse_assignment(text)
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    assert same(getattr(resolve_options({key: value}), key), value)  # what parses is a canonical, valid value
