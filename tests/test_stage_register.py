"""Registration against the reference's Source2Info / AvatarRegistrar goldens (golden README §5.2),
and the video-source smoothing against every golden file that stores a source before and after it.

Golden cases: source_chain_image.npz, source_chain_video.npz, and every a2m_* run and
motion_stitch_* file (their src_x_s_info_* → smoothed_src_x_s_info_*, with the file's smo_k_s or
the default). Every comparison is bit-exact, as the committed tests required: M_c2o, eye_open,
eye_ball, the motion-extractor input (INTER_AREA 256), the motion info (the stub's outputs
reshaped), sc and the smoothing (README §4 would allow its crop-matrix rule, 1e-5 for the eye
features and 1e-6 for the smoothing).
Compared: source_chain_image M_c2o, eye_open, eye_ball, rgb256_u8 (the motion and appearance
extractors' input), x_s_info_*; source_chain_video M_c2o, eye_open, eye_ball, sc, x_s_info_*.
Inputs: img / frames, raw_* / det_raw_*, lmk106_raw_fc1, lmk203_raw, blaze_raw_*, mesh_raw_identity,
me_raw_*. lmk203 and the crop-call records are compared in test_stage_face_detect.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from golden_stubs import FixedOutputNetwork, assert_golden_equal, detector_outputs, golden_files, load_golden

from ditto_fast.avatar import MOTION_INFO_SHAPES
from ditto_fast.options import resolve_options
from ditto_fast.stages.register import MOTION_OUTPUTS, mean_filter, register_frames

F_S = np.zeros((1, 32, 16, 64, 64), np.float32)
EXTRA_MESH = (np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32))


def stubs(golden, det_prefix, lmk203_calls, motion_calls):
    return {
        "insightface_det": FixedOutputNetwork(detector_outputs(golden, det_prefix), model="insightface_det"),
        "landmark106": FixedOutputNetwork((golden["lmk106_raw_fc1"],), model="landmark106"),
        "landmark203": FixedOutputNetwork(lmk203_calls, per_call=True, model="landmark203"),
        "blaze_face": FixedOutputNetwork((golden["blaze_raw_regressors"], golden["blaze_raw_classificators"]),
                                         model="blaze_face"),
        "face_mesh": FixedOutputNetwork((golden["mesh_raw_identity"], *EXTRA_MESH), model="face_mesh"),
        "motion_extractor": FixedOutputNetwork(motion_calls, per_call=True, model="motion_extractor"),
        "appearance_extractor": FixedOutputNetwork((F_S,), model="appearance_extractor"),
    }


def _assert_frames(avatar, g) -> None:
    assert_golden_equal(avatar.m_c2o, g["M_c2o"].reshape(-1, 3, 3), "M_c2o")
    assert_golden_equal(avatar.eye_open, g["eye_open"], "eye_open")
    assert_golden_equal(avatar.eye_ball, g["eye_ball"], "eye_ball")


def test_image_chain():
    g = load_golden("source_chain_image.npz")
    me = tuple(g[f"me_raw_{k}"] for k in MOTION_OUTPUTS)
    nets = stubs(g, "raw_", [(g["lmk203_raw"],)], [me])
    avatar = register_frames([g["img"]], True, nets, resolve_options(), source="portrait.png")
    _assert_frames(avatar, g)
    expected_input = (g["rgb256_u8"].astype(np.float32) / 255)[None].transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(nets["motion_extractor"].calls[0]["image"], expected_input)
    np.testing.assert_array_equal(nets["appearance_extractor"].calls[0]["image"], expected_input)
    for key in MOTION_OUTPUTS:
        np.testing.assert_array_equal(avatar.motion[key][0], g[f"x_s_info_{key}"])
    np.testing.assert_array_equal(avatar.sc, g["x_s_info_kp"].reshape(63))
    assert avatar.is_image and avatar.frames.shape == (1, *g["img"].shape)


def test_video_chain_detects_once_then_tracks():
    g = load_golden("source_chain_video.npz")
    n = len(g["frames"])

    def video_stubs():
        motion_calls = [tuple(g[f"x_s_info_{k}"][i] for k in MOTION_OUTPUTS) for i in range(n)]
        return stubs(g, "det_raw_", [(raw,) for raw in g["lmk203_raw"]], motion_calls)

    nets = video_stubs()
    options = resolve_options({"smo_k_s": 1})  # the golden is the registrar's output, before smoothing
    avatar = register_frames(list(g["frames"]), False, nets, options)
    assert len(nets["insightface_det"].calls) == 1 and len(nets["landmark203"].calls) == n
    _assert_frames(avatar, g)
    np.testing.assert_array_equal(avatar.sc, g["sc"])
    for key in MOTION_OUTPUTS:
        np.testing.assert_array_equal(avatar.motion[key], g[f"x_s_info_{key}"])
    smoothed = register_frames(list(g["frames"]), False, video_stubs(), resolve_options({"smo_k_s": 3}))
    np.testing.assert_array_equal(smoothed.motion["exp"], mean_filter(g["x_s_info_exp"], 3))
    np.testing.assert_array_equal(smoothed.sc, g["sc"])  # sc is taken before smoothing


@pytest.mark.parametrize("path", golden_files("a2m_*_[0-9]*.npz", "motion_stitch_[0-9]*.npz"))
def test_video_source_smoothing_matches_golden(path):
    """smoothed_src_x_s_info_* = the reference's smooth_x_s_info_lst(src_x_s_info_*, smo_k_s) for a
    video source, the source itself for an image."""
    case = load_golden(path)
    smo_k_s = case.json("params_json")["setup_kwargs"].get("smo_k_s", resolve_options().smo_k_s)
    for key in MOTION_INFO_SHAPES:
        source = case[f"src_x_s_info_{key}"]
        expected = source if bool(case["src_is_image"]) else mean_filter(source, smo_k_s)
        assert_golden_equal(case[f"smoothed_src_x_s_info_{key}"], expected, f"{case.stem} {key}")


def test_mean_filter_truncates_at_the_ends():
    values = np.arange(5, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(mean_filter(values, 3)[:, 0], [0.5, 1, 2, 3, 3.5])
    np.testing.assert_array_equal(mean_filter(values, 13)[:, 0], np.full(5, 2.0))


def test_no_face_names_the_source():
    from ditto_fast.stages.face_detect import NoFaceError

    g = load_golden("source_chain_image.npz")
    nets = stubs(g, "raw_", [(g["lmk203_raw"],)], [tuple(g[f"me_raw_{k}"] for k in MOTION_OUTPUTS)])
    silent = tuple(np.full_like(a, -1.0) if i < 3 else a for i, a in enumerate(detector_outputs(g, "raw_")))
    nets["insightface_det"] = FixedOutputNetwork(silent, model="insightface_det")
    with pytest.raises(NoFaceError, match="portrait.png: no face found"):
        register_frames([g["img"]], True, nets, resolve_options(), source="portrait.png")
