"""The offline engine against the reference's whole offline driver (a2m_pipeline_offline_0):
stub HuBERT → conditions → LMDM clips → fusion → stitch with fades and controls."""

from __future__ import annotations

import json

import numpy as np
import pytest
from golden_stubs import HubertStub, LmdmStub, StitchStub

from ditto_fast.engine.offline import RenderJob, motion_frames
from ditto_fast.options import resolve_options
from ditto_fast.stages.audio import offline_features
from ditto_fast.stages.avatar import MOTION_INFO_SHAPES, Avatar

MOTION_KEYS = ("scale", "pitch", "yaw", "roll", "t", "exp")


class RecordingWarp:
    """Records what reaches the warp network: the stitched keypoints and which source frame's
    f_s (each source frame's volume is filled with its index)."""

    def __init__(self) -> None:
        self.x_s, self.x_d, self.source_frame = [], [], []

    def __call__(self, *, feature_3d, kp_source, kp_driving):
        self.x_s.append(kp_source.copy())
        self.x_d.append(kp_driving.copy())
        self.source_frame.append(int(feature_3d.flat[0]))
        return (np.zeros((1, 256, 64, 64), np.float32),)


def zero_decoder(*, feature):
    return (np.zeros((1, 3, 512, 512), np.float32),)


@pytest.fixture(scope="module")
def case(shared_ref):
    return np.load(shared_ref / "golden" / "a2m_pipeline_offline_0.npz")


@pytest.fixture(scope="module")
def weights(shared_ref):
    return dict(np.load(shared_ref / "golden" / "stub_weights.npz"))


def golden_avatar(case) -> Avatar:
    n = case["src_M_c2o"].shape[0]
    f_s = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None, None, None],
                          (n, 1, 32, 16, 64, 64)).copy()
    return Avatar(
        motion={k: case[f"src_x_s_info_{k}"] for k in MOTION_INFO_SHAPES}, f_s=f_s, m_c2o=case["src_M_c2o"],
        eye_open=case["src_eye_open"], eye_ball=case["src_eye_ball"], sc=case["src_sc"],
        frames=case["src_frames"], is_image=bool(case["src_is_image"]),
    )


def golden_options(case):
    params = json.loads(str(case["params_json"]))
    run = params["run_kwargs"]
    return resolve_options({
        **params["setup_kwargs"],
        "ctrl_info": {int(k): v for k, v in run["ctrl_info"].items()},
        "fade_in": run["fade_in"], "fade_out": run["fade_out"], "N_d": int(case["N_d"]),
        "seed": int(case["noise_seed"]),  # the golden run seeded NumPy's generator with it
    })


def networks(weights, warp):
    return {"hubert": HubertStub(weights["hubert_v1"], weights["hubert_v2"]), "lmdm": LmdmStub(weights),
            "stitch_network": StitchStub(weights), "warp_network": warp, "decoder": zero_decoder}


def test_driving_motion_matches_the_reference(case, weights):
    nets = networks(weights, RecordingWarp())
    features = offline_features(case["audio"], nets["hubert"])
    motions = motion_frames(nets, golden_avatar(case), features, golden_options(case))
    assert len(motions) == int(case["n_emitted"])
    for key in MOTION_KEYS:
        np.testing.assert_allclose(np.stack([m[key] for m in motions]), case[f"emit_xd_{key}"], atol=1e-4)


def test_rendered_frames_carry_the_reference_keypoints(case, weights):
    warp = RecordingWarp()
    job = RenderJob(networks(weights, warp), golden_avatar(case), golden_options(case), audio=case["audio"])
    written = sum(1 for _ in job)
    assert written == int(case["n_written_frames"]) == job.info.num_frames
    np.testing.assert_array_equal(warp.source_frame, case["emit_frame_idx"])
    np.testing.assert_allclose(np.stack(warp.x_s), case["stitch_x_s"], atol=1e-5)
    np.testing.assert_allclose(np.stack(warp.x_d), case["stitch_x_d"], atol=1e-5)
