"""The three config pickles of a synthetic tree, with the official structure (DITTO_SPEC §2.3).

The official pickles' `default_kwargs` values are not published; the synthetic ones hold the
documented defaults of the render options plus the overlaps the maintainers state (10 frames
offline, 70 online), and are marked as synthetic so nothing mistakes them for the real ones.
"""

from __future__ import annotations

from typing import Any

from ditto_fast.checkpoints import LMDM_STEM, PYTORCH_FILES

# File stem -> the TensorRT precision in its engine name, as the reference converter chooses it
# (fp32 for the motion extractor, HuBERT and LMDM; fp16 elsewhere).
ENGINE_PRECISION: dict[str, str] = {
    "insightface_det": "fp16", "landmark106": "fp16", "landmark203": "fp16",
    "blaze_face": "fp16", "face_mesh": "fp16", "appearance_extractor": "fp16",
    "motion_extractor": "fp32", "stitch_network": "fp16", "warp_network": "fp16",
    "decoder": "fp16", "hubert": "fp32", "lmdm_v0.4_hubert": "fp32",
}
# base_cfg entries configured by one model_path, in the official order.
_SINGLE_FILE_ENTRIES = (
    ("insightface_det_cfg", "insightface_det"),
    ("landmark106_cfg", "landmark106"),
    ("landmark203_cfg", "landmark203"),
    ("appearance_extractor_cfg", "appearance_extractor"),
    ("motion_extractor_cfg", "motion_extractor"),
    ("stitch_network_cfg", "stitch_network"),
    ("warp_network_cfg", "warp_network"),
    ("decoder_cfg", "decoder"),
    ("hubert_cfg", "hubert"),
)
_AUX_NETWORKS = ("insightface_det", "landmark106", "landmark203", "hubert")

_SHARED_DEFAULTS: dict[str, Any] = {
    "synthetic": True,  # not a reference key: marks weights and defaults as made up
    "max_size": 1920,
    "crop_scale": 2.3,
    "crop_vx_ratio": 0,
    "crop_vy_ratio": -0.125,
    "crop_flag_do_rot": True,
    "smo_k_s": 13,
    "emo": 4,
    "sampling_timesteps": 50,
    "smo_k_d": 3,
    "relative_d": True,
    "flag_stitching": True,
}
OFFLINE_DEFAULTS = {**_SHARED_DEFAULTS, "online_mode": False, "overlap_v2": 10}
ONLINE_DEFAULTS = {**_SHARED_DEFAULTS, "online_mode": True, "overlap_v2": 70}


def _audio2motion(model_path: str) -> dict[str, Any]:
    return {
        "model_path": model_path, "device": "cuda",
        "motion_feat_dim": 265, "audio_feat_dim": 1103, "seq_frames": 80,
        "use_emo": True, "use_sc": True, "use_eye_open": True, "use_eye_ball": True,
        "w2f_type": "hubert",
    }


def engine_name(stem: str) -> str:
    return f"{stem}_{ENGINE_PRECISION[stem]}.engine"


def engine_config(online: bool) -> dict[str, Any]:
    """The offline or online config: every model named by its TensorRT engine file."""
    base = {entry: {"model_path": engine_name(stem), "device": "cuda"}
            for entry, stem in _SINGLE_FILE_ENTRIES}
    base["landmark478_cfg"] = {
        "blaze_face_model_path": engine_name("blaze_face"),
        "face_mesh_model_path": engine_name("face_mesh"),
        "task_path": None,
        "device": "cuda",
    }
    return {
        "base_cfg": base,
        "audio2motion_cfg": _audio2motion(engine_name(LMDM_STEM)),
        "default_kwargs": dict(ONLINE_DEFAULTS if online else OFFLINE_DEFAULTS),
    }


def pytorch_config() -> dict[str, Any]:
    """The pytorch config: paths relative to ditto_pytorch/, auxiliary nets on onnxruntime."""
    base = {}
    for entry, stem in _SINGLE_FILE_ENTRIES:
        base[entry] = {"model_path": PYTORCH_FILES[stem], "device": "cuda"}
        if stem in _AUX_NETWORKS:
            base[entry]["force_ori_type"] = True
    base["landmark478_cfg"] = {
        "blaze_face_model_path": PYTORCH_FILES["blaze_face"],
        "face_mesh_model_path": PYTORCH_FILES["face_mesh"],
        "task_path": None,
        "device": "cuda",
    }
    return {
        "base_cfg": base,
        "audio2motion_cfg": _audio2motion(PYTORCH_FILES[LMDM_STEM]),
        "default_kwargs": dict(OFFLINE_DEFAULTS),
    }
