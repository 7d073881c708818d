"""The StreamSDK shim runs the reference's offline script sequence and makes the same video."""

from __future__ import annotations

import math
import pathlib

import av
import numpy as np
import pytest

from ditto_fast import Renderer
from ditto_fast.compat import StreamSDK, tree_root_for
from ditto_fast.stages.audio import load_audio
from ditto_fast.tools.demo import write_demo_inputs

TINY = pathlib.Path(__file__).resolve().parents[1] / "checkpoints" / "synthetic-tiny"
CFG = TINY / "ditto_cfg" / "v0.4_hubert_cfg_trt.pkl"


def decoded_frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def reference_script(sdk: StreamSDK, audio_path, source_path, output_path, setup_kwargs, run_kwargs):
    """inference.run's offline branch, line for line, minus its ffmpeg mux."""
    sdk.setup(source_path, output_path, **setup_kwargs)
    audio = load_audio(audio_path)  # librosa.core.load(audio_path, sr=16000)
    num_f = math.ceil(len(audio) / 16000 * 25)
    sdk.setup_Nd(N_d=num_f, fade_in=run_kwargs.get("fade_in", -1), fade_out=run_kwargs.get("fade_out", -1),
                 ctrl_info=run_kwargs.get("ctrl_info", {}))
    assert not sdk.online_mode
    aud_feat = sdk.wav2feat.wav2feat(audio)
    sdk.audio2motion_queue.put(aud_feat)
    sdk.close()
    return num_f


def test_reference_call_sequence_makes_the_renderers_video(tmp_path):
    portrait, speech = write_demo_inputs(tmp_path, seconds=1.2)
    sdk = StreamSDK(str(CFG), str(TINY / "ditto_onnx"))
    out = tmp_path / "out.mp4"
    num_f = reference_script(sdk, speech, portrait, out, {"seed": 0, "emo": 3}, {"fade_in": 5})
    assert sdk.tmp_output_path == pathlib.Path(f"{out}.tmp.mp4") and sdk.tmp_output_path.is_file()
    shim_frames = decoded_frames(sdk.tmp_output_path)
    assert len(shim_frames) == num_f
    with av.open(str(sdk.tmp_output_path)) as container:
        assert not container.streams.audio  # video only: the script muxes the audio itself
    direct = Renderer(TINY).render_to_file(portrait, speech, tmp_path / "direct.mp4", seed=0, emo=3, N_d=num_f,
                                           fade_in=5)
    assert all(np.array_equal(a, b) for a, b in zip(shim_frames, decoded_frames(direct.path), strict=True))


def test_setup_nd_replaces_setup_ctrl_info_and_unknown_keys_warn(tmp_path):
    portrait, _ = write_demo_inputs(tmp_path, seconds=0.5)
    sdk = StreamSDK(str(CFG), str(TINY / "ditto_onnx"))
    with pytest.warns(UserWarning, match=r"ignores unknown options \['print_cfg'\]"):
        sdk.setup(portrait, tmp_path / "o.mp4", ctrl_info={3: {"delta_yaw": 5.0}}, print_cfg=True)
    sdk.setup_Nd(10)
    assert sdk.options.ctrl_info == {} and sdk.options.N_d == 10
    with pytest.raises(RuntimeError, match="no audio features were queued"):
        sdk.close()


def test_config_overrides_and_tree_location(tmp_path):
    sdk = StreamSDK(str(CFG), str(TINY / "ditto_onnx"), default_kwargs={"overlap_v2": 20})
    assert sdk.default_kwargs["overlap_v2"] == 20
    assert tree_root_for(TINY / "ditto_onnx") == TINY and tree_root_for(TINY) == TINY
