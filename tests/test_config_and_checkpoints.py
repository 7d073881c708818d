"""Config pickles (safe loading, structure, path resolution) and checkpoint tree discovery."""

from __future__ import annotations

import os
import pickle
import time

import numpy as np
import pytest

from ditto_fast.checkpoints import CheckpointError, find_tree, network_stem
from ditto_fast.config import ConfigError, parse_config
from ditto_fast.safe_pickle import UnsafePickleError, load_plain_pickle

ENGINES = {
    "insightface_det_cfg": "insightface_det_fp16.engine",
    "landmark106_cfg": "landmark106_fp16.engine",
    "landmark203_cfg": "landmark203_fp16.engine",
    "appearance_extractor_cfg": "appearance_extractor_fp16.engine",
    "motion_extractor_cfg": "motion_extractor_fp32.engine",
    "stitch_network_cfg": "stitch_network_fp16.engine",
    "warp_network_cfg": "warp_network_fp16.engine",
    "decoder_cfg": "decoder_fp16.engine",
    "hubert_cfg": "hubert_fp32.engine",
}


def engine_config() -> dict:
    """A config dict with the reference's structure (DITTO_SPEC §2.3)."""
    base = {entry: {"model_path": name, "device": "cuda"} for entry, name in ENGINES.items()}
    base["landmark478_cfg"] = {
        "blaze_face_model_path": "blaze_face_fp16.engine",
        "face_mesh_model_path": "face_mesh_fp16.engine",
        "task_path": None,
        "device": "cuda",
    }
    return {
        "base_cfg": base,
        "audio2motion_cfg": {
            "model_path": "lmdm_v0.4_hubert_fp32.engine", "device": "cuda",
            "motion_feat_dim": 265, "audio_feat_dim": 1103, "seq_frames": 80,
            "use_emo": True, "use_sc": True, "use_eye_open": True, "use_eye_ball": True,
            "w2f_type": "hubert",
        },
        "default_kwargs": {"overlap_v2": 10, "v_min_max_for_clip": np.zeros((2, 265), np.float32)},
    }


def write_pickle(path, obj, protocol=pickle.HIGHEST_PROTOCOL):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_data_and_numpy_arrays_load_under_every_protocol(tmp_path, protocol):
    data = engine_config()
    data["default_kwargs"]["scalars"] = (np.float32(1.5), np.int64(3), np.dtype("float16"))
    loaded = load_plain_pickle(write_pickle(tmp_path / "c.pkl", data, protocol))
    assert loaded["base_cfg"] == data["base_cfg"]
    np.testing.assert_array_equal(loaded["default_kwargs"]["v_min_max_for_clip"],
                                  data["default_kwargs"]["v_min_max_for_clip"])
    assert loaded["default_kwargs"]["scalars"] == data["default_kwargs"]["scalars"]


def test_numpy_1_style_module_names_load(tmp_path):
    # Files written under NumPy < 2 name numpy.core.multiarray; rewrite a NumPy-2 pickle so.
    raw = pickle.dumps({"a": np.arange(4.0)}, protocol=2)
    assert b"numpy._core.multiarray" in raw
    path = tmp_path / "old.pkl"
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    np.testing.assert_array_equal(load_plain_pickle(path)["a"], np.arange(4.0))


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/ditto_fast_pwned",))


@pytest.mark.parametrize("payload", [_Payload(), {1, 2}, pickle.PickleError("x")],
                         ids=["os.system", "set", "exception"])
def test_anything_but_plain_data_is_refused(tmp_path, payload):
    path = write_pickle(tmp_path / "evil.pkl", {"base_cfg": payload}, protocol=2)
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl: refusing to load.*may be unsafe"):
        load_plain_pickle(path)
    assert not os.path.exists("/tmp/ditto_fast_pwned")


def test_unreadable_pickles_get_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pkl: config pickle not found"):
        load_plain_pickle(tmp_path / "missing.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(pickle.UnpicklingError, match="junk.pkl: not a readable config pickle"):
        load_plain_pickle(tmp_path / "junk.pkl")


def test_paths_resolve_like_the_reference(tmp_path):
    existing = tmp_path / "elsewhere" / "my_decoder.onnx"
    existing.parent.mkdir()
    existing.write_bytes(b"")
    raw = engine_config()
    raw["base_cfg"]["decoder_cfg"]["model_path"] = str(existing)
    config = parse_config(raw, tmp_path / "c.pkl", tmp_path / "root")
    assert config.model_path("decoder") == existing  # an existing file is kept
    assert config.model_path("warp_network") == tmp_path / "root" / "warp_network_fp16.engine"
    assert config.model_path("blaze_face") == tmp_path / "root" / "blaze_face_fp16.engine"
    assert config.model_path("lmdm") == tmp_path / "root" / "lmdm_v0.4_hubert_fp32.engine"
    assert config.base_cfg["landmark478_cfg"]["task_path"] is None  # empty paths stay empty
    assert raw["base_cfg"]["warp_network_cfg"]["model_path"] == "warp_network_fp16.engine"
    assert config.lmdm_settings()["audio_feat_dim"] == 1103
    assert config.condition_settings()["seq_frames"] == 80
    assert not config.online


def test_overrides_write_into_sections(tmp_path):
    config = parse_config(engine_config(), tmp_path / "c.pkl", tmp_path,
                          overrides={"default_kwargs": {"online_mode": True}})
    assert config.online and config.default_kwargs["overlap_v2"] == 10
    with pytest.raises(ConfigError, match="unknown top-level key 'nope'"):
        parse_config(engine_config(), tmp_path / "c.pkl", tmp_path, overrides={"nope": {}})


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda c: c.pop("default_kwargs"), "missing top-level keys ['default_kwargs']"),
        (lambda c: c["base_cfg"]["decoder_cfg"].pop("model_path"), "base_cfg.decoder_cfg has no model_path"),
        (lambda c: c["audio2motion_cfg"].pop("seq_frames"), "audio2motion_cfg lacks ['seq_frames']"),
        (lambda c: c["audio2motion_cfg"].update(w2f_type="wavlm"), "only 'hubert' exists"),
        (lambda c: c.update(base_cfg=[]), "base_cfg must be a dict, found list"),
    ],
)
def test_malformed_configs_are_named(tmp_path, mutate, message):
    raw = engine_config()
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        parse_config(raw, tmp_path / "c.pkl", tmp_path)
    assert str(info.value).startswith(str(tmp_path / "c.pkl"))
    assert message in str(info.value)


@pytest.mark.parametrize(
    "path,stem",
    [("lmdm_v0.4_hubert_fp32.engine", "lmdm_v0.4_hubert"), ("a/decoder_fp16.engine", "decoder"),
     ("decoder.onnx", "decoder"), ("models/warp_network.pth", "warp_network"), ("x_fp16", "x")],
)
def test_network_stems(path, stem):
    assert network_stem(path) == stem


def make_tree(root):
    for kind, name in (("offline", "v0.4_hubert_cfg_trt.pkl"),
                       ("online", "v0.4_hubert_cfg_trt_online.pkl")):
        raw = engine_config()
        raw["default_kwargs"]["online_mode"] = kind == "online"
        write_pickle(root / "ditto_cfg" / name, raw)
    onnx_dir = root / "ditto_onnx"
    onnx_dir.mkdir(parents=True)
    for stem in ("decoder", "warp_network", "lmdm_v0.4_hubert", "blaze_face"):
        (onnx_dir / f"{stem}.onnx").write_bytes(b"")
    (root / "ditto_trt_Ampere_Plus").mkdir()
    (root / "ditto_trt_Ampere_Plus" / "decoder_fp16.engine").write_bytes(b"")
    return root


def test_tree_discovery_and_file_resolution(tmp_path):
    tree = find_tree(make_tree(tmp_path))
    assert tree.onnx_dir == tmp_path / "ditto_onnx"
    assert tree.trt_dirs == (tmp_path / "ditto_trt_Ampere_Plus",)
    assert tree.pytorch_dir is None
    offline, online = tree.load_config("offline"), tree.load_config("online")
    assert not offline.online and online.online
    assert tree.onnx_file("decoder", offline) == tmp_path / "ditto_onnx" / "decoder.onnx"
    assert tree.onnx_file("lmdm", offline).name == "lmdm_v0.4_hubert.onnx"
    assert tree.onnx_file("blaze_face", offline).name == "blaze_face.onnx"
    assert tree.onnx_file("warp_network", offline).name == "warp_network.onnx"
    (tmp_path / "ditto_onnx" / "warp_network_ori.onnx").write_bytes(b"")
    assert tree.onnx_file("warp_network", offline).name == "warp_network_ori.onnx"
    assert tree.engine_file("decoder", offline).name == "decoder_fp16.engine"
    with pytest.raises(CheckpointError, match="hubert.onnx: model file of hubert is missing"):
        tree.onnx_file("hubert", offline)
    with pytest.raises(CheckpointError, match="the pytorch config pickle is missing"):
        tree.load_config("pytorch")


def test_engines_built_here_come_before_the_shipped_ones(tmp_path):
    make_tree(tmp_path)
    older, newer = tmp_path / "ditto_trt_h100_old", tmp_path / "ditto_trt_custom"
    for age, folder in ((200, older), (100, newer)):
        folder.mkdir()
        os.utime(folder, (time.time() - age, time.time() - age))
    assert find_tree(tmp_path).trt_dirs == (newer, older, tmp_path / "ditto_trt_Ampere_Plus")


def test_not_a_tree(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint folder does not exist"):
        find_tree(tmp_path / "nope")
    (tmp_path / "ditto_cfg").mkdir()
    with pytest.raises(CheckpointError, match="not a Ditto checkpoint tree"):
        find_tree(tmp_path)
