"""The offline engine against the reference's whole offline driver, for every offline-driver run
of the golden set (golden README §5.5): a2m_offline_* (HuBERT features given) and
a2m_pipeline_offline_* (from the audio: stub HuBERT → conditions → LMDM clips → fusion → stitch
with fades and controls). Every setting comes from the run's own params_json and keys.

Keys compared here: res_final and emit_xd_* (the engine's motion setup; bit-exact, although
README §4 and the committed test allowed 1e-4), n_emitted, n_written_frames (frames the job
yields, its `info.num_frames`), emit_frame_idx (the source frame whose f_s reached the warp
network), stitch_x_s and stitch_x_d (the keypoints that reached it; atol 1e-5, the committed and
README tolerance: the float32 stitch is up to 2.4e-7 from the reference's torch evaluation), N_d
(the job's frame count).
Inputs: params_json, audio / aud_*, src_* and smoothed_src_x_s_info_* (the avatar), noise_seed,
v_min_max_for_clip. The clip-level keys are compared in test_stage_motion.py and
emit_ctrl_json in test_stage_stitch.py (the engine's per-frame controls are not public).
"""

from __future__ import annotations

import numpy as np
import pytest
from a2m_cases import (
    MOTION_KEYS,
    OFFLINE_RUNS,
    RecordingWarp,
    driving_features,
    golden_avatar,
    golden_networks,
    render_options,
)
from golden_stubs import STITCH_ATOL, assert_close, assert_golden_equal, load_golden

from ditto_fast.engine.motion_setup import motion_setup
from ditto_fast.engine.offline import RenderJob


@pytest.fixture(scope="module")
def weights():
    return load_golden("stub_weights.npz")


def _driving_input(case, networks) -> dict[str, np.ndarray]:
    """The run's audio when it has one (the engine computes the features), else its features."""
    if "audio" in case:
        return {"audio": np.array(case["audio"])}
    return {"features": driving_features(case, networks["hubert"])}


@pytest.mark.parametrize("path", OFFLINE_RUNS)
def test_driving_motion_matches_the_reference(path, weights) -> None:
    case = load_golden(path)
    nets = golden_networks(weights, RecordingWarp())
    condition, a2m = motion_setup(nets, golden_avatar(case), render_options(case))
    res = a2m.generate_offline(condition(driving_features(case, nets["hubert"]), 0))
    assert_golden_equal(res, case["res_final"], f"{case.stem} res_final")
    motions = a2m.to_frame_dicts(res)
    assert len(motions) == int(case["n_emitted"])
    for key in MOTION_KEYS:
        assert_golden_equal(np.stack([m[key] for m in motions]), case[f"emit_xd_{key}"], f"{case.stem} {key}")


@pytest.mark.parametrize("path", OFFLINE_RUNS)
def test_rendered_frames_carry_the_reference_keypoints(path, weights) -> None:
    case = load_golden(path)
    warp = RecordingWarp()
    nets = golden_networks(weights, warp)
    job = RenderJob(nets, golden_avatar(case), render_options(case), **_driving_input(case, nets))
    written = sum(1 for _ in job)
    assert written == int(case["n_written_frames"]) == int(case["n_emitted"]) == job.info.num_frames
    assert job.info.num_frames == int(case["N_d"])
    np.testing.assert_array_equal(warp.source_frame, case["emit_frame_idx"])
    assert_close(np.stack(warp.x_s), case["stitch_x_s"], STITCH_ATOL, f"{case.stem} stitch_x_s")
    assert_close(np.stack(warp.x_d), case["stitch_x_d"], STITCH_ATOL, f"{case.stem} stitch_x_d")
