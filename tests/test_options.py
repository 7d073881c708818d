"""Render options: every reference parameter typed and validated, defaults merged as the reference."""

from __future__ import annotations

import numpy as np
import pytest

from ditto_fast.options import OPTION_NAMES, PRESETS, RenderOptions, parse_assignment, resolve_options

SPEC_2_4_KEYS = {
    "max_size", "template_n_frames", "crop_scale", "crop_vx_ratio", "crop_vy_ratio", "crop_flag_do_rot",
    "smo_k_s", "emo", "eye_f0_mode", "ch_info", "overlap_v2", "fix_kp_cond", "fix_kp_cond_dim",
    "sampling_timesteps", "online_mode", "v_min_max_for_clip", "smo_k_d", "N_d", "use_d_keys", "relative_d",
    "drive_eye", "delta_eye_arr", "delta_eye_open_n", "fade_type", "fade_out_keys", "flag_stitching",
    "ctrl_info", "overall_ctrl_info",
}


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


@pytest.mark.parametrize("emo", [0, 7, np.int64(3), [3, 4], [[3], [4, 5]], np.zeros((5, 8), np.float32)])
def test_every_emo_form_is_accepted(emo):
    assert resolve_options({"emo": emo}).emo is emo


@pytest.mark.parametrize(
    "values,message",
    [
        ({"emo": 9}, "option emo=9 is invalid"),
        ({"emo": -1}, "option emo=-1"),
        ({"emo": np.zeros((2, 7))}, "array of shape (2, 7)"),
        ({"emo": [0, 1, 2, 3, 4, 5, 6, 7]}, "option emo"),
        ({"sampling_timesteps": 0}, "option sampling_timesteps=0 is invalid: expected an integer in [1, 1000]"),
        ({"overlap_v2": 80}, "overlap_v2=80"),
        ({"sampling_timesteps": 3}, "sampling_timesteps=3 is invalid: expected a step count whose DDIM schedule"),
        ({"crop_scale": 0}, "crop_scale=0 is invalid: expected a positive number"),
        ({"max_size": 1.5}, "max_size=1.5"),
        ({"fade_type": "x"}, "fade_type='x'"),
        ({"fix_kp_cond_dim": [5, 2]}, "fix_kp_cond_dim=[5, 2]"),
        ({"v_min_max_for_clip": np.zeros((3, 265))}, "v_min_max_for_clip=array of shape (3, 265)"),
        ({"use_d_keys": ["exp", "kp_typo"]}, "use_d_keys"),
        ({"delta_eye_open_n": [10, 0]}, "delta_eye_open_n"),
        ({"ctrl_info": {3: {"delta_yaw": 10, "spin": 1}}}, "ctrl_info[3] has unknown controls ['spin']"),
        ({"overall_ctrl_info": {"yaw": 1}}, "overall_ctrl_info has unknown controls ['yaw']"),
        ({"fade_in": 0}, "fade_in=0"),
        ({"seed": -2}, "seed=-2"),
        ({"ch_info": {"x_s_info": 1}}, "expected None or a registered Avatar"),
        ({"crop_flag_do_rot": "yes"}, "crop_flag_do_rot='yes'"),
        ({"sampling_timestep": 10},
         "unknown option 'sampling_timestep' in the render options (did you mean 'sampling_timesteps'?)"),
    ],
)
def test_bad_values_name_the_option_and_what_it_accepts(values, message):
    with pytest.raises(ValueError) as info:
        resolve_options(values)
    assert message in str(info.value)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'fast'; choose from"):
        resolve_options(preset="fast")


def test_controls_per_frame_and_overall():
    options = resolve_options({"ctrl_info": {0: {"fade_alpha": 0.5}, 10: {"delta_yaw": 15.0, "alpha_pitch": 0.5}},
                               "overall_ctrl_info": {"delta_exp": 0.01}, "fade_in": 5, "fade_out": 5})
    assert options.ctrl_info[10]["delta_yaw"] == 15.0
    assert resolve_options({"ctrl_info": [{}, {"vad_alpha": 0.5}]}).ctrl_info[1]["vad_alpha"] == 0.5


@pytest.mark.parametrize(
    "text,expected",
    [("emo=3", ("emo", 3)), ("emo=[3, 4]", ("emo", [3, 4])), ("crop_scale=2.0", ("crop_scale", 2.0)),
     ("drive_eye=False", ("drive_eye", False)), ("fade_type=d0", ("fade_type", "d0")),
     ("ctrl_info={5: {'delta_yaw': 20}}", ("ctrl_info", {5: {"delta_yaw": 20}}))],
)
def test_command_line_assignments(text, expected):
    assert parse_assignment(text) == expected


def test_command_line_arrays_and_errors():
    key, value = parse_assignment("v_min_max_for_clip=" + str([[-1.0] * 265, [1.0] * 265]))
    assert key == "v_min_max_for_clip" and value.shape == (2, 265) and value.dtype == np.float32
    with pytest.raises(ValueError, match="--set expects key=value"):
        parse_assignment("emo")
    with pytest.raises(ValueError, match="unknown option 'emotion' in --set"):
        parse_assignment("emotion=3")
