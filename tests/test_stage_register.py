"""Registration against the reference's Source2Info / AvatarRegistrar goldens."""

from __future__ import annotations

import numpy as np
import pytest
from golden_stubs import FixedOutputNetwork, detector_outputs

from ditto_fast.options import resolve_options
from ditto_fast.stages.register import MOTION_OUTPUTS, mean_filter, register_frames

F_S = np.zeros((1, 32, 16, 64, 64), np.float32)
EXTRA_MESH = (np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32))


def stubs(golden, det_prefix, lmk203_calls, motion_calls):
    return {
        "insightface_det": FixedOutputNetwork(detector_outputs(golden, det_prefix)),
        "landmark106": FixedOutputNetwork((golden["lmk106_raw_fc1"],)),
        "landmark203": FixedOutputNetwork(lmk203_calls, per_call=True),
        "blaze_face": FixedOutputNetwork((golden["blaze_raw_regressors"], golden["blaze_raw_classificators"])),
        "face_mesh": FixedOutputNetwork((golden["mesh_raw_identity"], *EXTRA_MESH)),
        "motion_extractor": FixedOutputNetwork(motion_calls, per_call=True),
        "appearance_extractor": FixedOutputNetwork((F_S,)),
    }


def test_image_chain(shared_ref):
    g = np.load(shared_ref / "golden" / "source_chain_image.npz")
    me = tuple(g[f"me_raw_{k}"] for k in MOTION_OUTPUTS)
    nets = stubs(g, "raw_", [(g["lmk203_raw"],)], [me])
    avatar = register_frames([g["img"]], True, nets, resolve_options(), source="portrait.png")
    np.testing.assert_array_equal(avatar.m_c2o[0], g["M_c2o"])
    np.testing.assert_array_equal(avatar.eye_open, g["eye_open"])
    np.testing.assert_array_equal(avatar.eye_ball, g["eye_ball"])
    expected_input = (g["rgb256_u8"].astype(np.float32) / 255)[None].transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(nets["motion_extractor"].calls[0]["image"], expected_input)
    np.testing.assert_array_equal(nets["appearance_extractor"].calls[0]["image"], expected_input)
    for key in MOTION_OUTPUTS:
        np.testing.assert_array_equal(avatar.motion[key][0], g[f"x_s_info_{key}"])
    np.testing.assert_array_equal(avatar.sc, g["x_s_info_kp"].reshape(63))
    assert avatar.is_image and avatar.frames.shape == (1, *g["img"].shape)


def test_video_chain_detects_once_then_tracks(shared_ref):
    g = np.load(shared_ref / "golden" / "source_chain_video.npz")
    motion_calls = [tuple(g[f"x_s_info_{k}"][i] for k in MOTION_OUTPUTS) for i in range(3)]
    nets = stubs(g, "det_raw_", [(g["lmk203_raw"][i],) for i in range(3)], motion_calls)
    options = resolve_options({"smo_k_s": 1})  # the golden is the registrar's output, before smoothing
    avatar = register_frames(list(g["frames"]), False, nets, options)
    assert len(nets["insightface_det"].calls) == 1 and len(nets["landmark203"].calls) == 3
    np.testing.assert_array_equal(avatar.m_c2o, g["M_c2o"])
    np.testing.assert_array_equal(avatar.eye_open, g["eye_open"])
    np.testing.assert_array_equal(avatar.eye_ball, g["eye_ball"])
    np.testing.assert_array_equal(avatar.sc, g["sc"])
    for key in MOTION_OUTPUTS:
        np.testing.assert_array_equal(avatar.motion[key], g[f"x_s_info_{key}"])
    smoothed = register_frames(list(g["frames"]), False, stubs(g, "det_raw_", [(g["lmk203_raw"][i],) for i in range(3)],
                                                               motion_calls), resolve_options({"smo_k_s": 3}))
    np.testing.assert_array_equal(smoothed.motion["exp"], mean_filter(g["x_s_info_exp"], 3))
    np.testing.assert_array_equal(smoothed.sc, g["sc"])  # sc is taken before smoothing


def test_mean_filter_truncates_at_the_ends():
    values = np.arange(5, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(mean_filter(values, 3)[:, 0], [0.5, 1, 2, 3, 3.5])
    np.testing.assert_array_equal(mean_filter(values, 13)[:, 0], np.full(5, 2.0))


def test_no_face_names_the_source(shared_ref):
    from ditto_fast.stages.face_detect import NoFaceError

    g = np.load(shared_ref / "golden" / "source_chain_image.npz")
    nets = stubs(g, "raw_", [(g["lmk203_raw"],)], [tuple(g[f"me_raw_{k}"] for k in MOTION_OUTPUTS)])
    silent = tuple(np.full_like(a, -1.0) if i < 3 else a for i, a in enumerate(detector_outputs(g, "raw_")))
    nets["insightface_det"] = FixedOutputNetwork(silent)
    with pytest.raises(NoFaceError, match="portrait.png: no face found"):
        register_frames([g["img"]], True, nets, resolve_options(), source="portrait.png")
