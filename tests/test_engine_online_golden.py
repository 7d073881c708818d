"""The streaming engine against the reference's online driver, for every a2m_online_* run of the
golden set (golden README §5.5): the run's audio pushed into a `StreamSession` with the run's
chunksize and settings, the stub networks of README §3, frames taken as they come, at the
reference's online length (`end_with_audio=False`: its flush runs past the audio).

Keys compared here: n_written_frames and n_emitted (frames the session hands out),
emit_frame_idx (the source frame whose f_s reached the warp network), stitch_x_s and
stitch_x_d (the keypoints that reached it: x_s bit-exact; x_d atol 1e-5, README §4, as the
stitched keypoints are up to 2.4e-7 from the reference's torch evaluation of the stub).
Inputs: params_json, audio, src_* and smoothed_src_x_s_info_* (the avatar), noise_seed, N_d.
The driver's motion keys are compared in test_stage_online_motion.py, emit_ctrl_json in
test_stage_stitch.py.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from a2m_cases import ONLINE_RUNS, RecordingWarp, chunksize, golden_avatar, golden_networks, render_options
from golden_stubs import STITCH_ATOL, assert_close, assert_golden_equal, load_golden

from ditto_fast.engine.online import StreamSession


@pytest.fixture(scope="module")
def weights():
    return load_golden("stub_weights.npz")


@pytest.mark.parametrize("path", ONLINE_RUNS)
def test_streamed_frames_carry_the_reference_keypoints(path, weights) -> None:
    case = load_golden(path)
    warp = RecordingWarp()
    failures: list[BaseException] = []

    with StreamSession(golden_networks(weights, warp), golden_avatar(case), render_options(case),
                       chunksize=chunksize(case), end_with_audio=False) as session:
        def feed() -> None:
            try:
                session.push(np.array(case["audio"]))
                session.end()
            except BaseException as exc:  # re-raised below, in the test's thread
                failures.append(exc)

        feeder = threading.Thread(target=feed)
        feeder.start()
        written = sum(1 for _ in session.frames(timeout=60))
        feeder.join()
    assert not failures, failures

    assert written == int(case["n_written_frames"]) == int(case["n_emitted"])
    np.testing.assert_array_equal(warp.source_frame, case["emit_frame_idx"])
    assert_golden_equal(np.stack(warp.x_s), case["stitch_x_s"], f"{case.stem} stitch_x_s")
    assert_close(np.stack(warp.x_d), case["stitch_x_d"], STITCH_ATOL, f"{case.stem} stitch_x_d")
