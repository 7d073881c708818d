"""Ditto's config pickle (`ditto_cfg/*.pkl`): structure, overrides and model path resolution.

The pickle is a dict of three dicts: `base_cfg` (one entry per auxiliary or rendering network),
`audio2motion_cfg` (LMDM and the condition layout) and `default_kwargs` (defaults of the
render options). Paths inside are resolved the way the reference resolves them: a path naming
an existing file is kept, anything else is taken relative to the data root.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ditto_fast.safe_pickle import load_plain_pickle

TOP_LEVEL_KEYS = ("base_cfg", "audio2motion_cfg", "default_kwargs")

# base_cfg entry -> the network(s) it configures. landmark478 is BlazeFace + FaceMesh.
BASE_ENTRIES: dict[str, tuple[str, ...]] = {
    "insightface_det_cfg": ("insightface_det",),
    "landmark106_cfg": ("landmark106",),
    "landmark203_cfg": ("landmark203",),
    "landmark478_cfg": ("blaze_face", "face_mesh"),
    "appearance_extractor_cfg": ("appearance_extractor",),
    "motion_extractor_cfg": ("motion_extractor",),
    "stitch_network_cfg": ("stitch_network",),
    "warp_network_cfg": ("warp_network",),
    "decoder_cfg": ("decoder",),
    "hubert_cfg": ("hubert",),
}
# landmark478 names its files with these keys instead of `model_path`.
LANDMARK478_PATH_KEYS = {
    "blaze_face": "blaze_face_model_path",
    "face_mesh": "face_mesh_model_path",
}
LANDMARK478_OPTIONAL_PATH_KEYS = ("task_path", *LANDMARK478_PATH_KEYS.values())

# audio2motion_cfg keys the condition handler and LMDM read.
CONDITION_KEYS = ("use_emo", "use_sc", "use_eye_open", "use_eye_ball", "seq_frames")
LMDM_KEYS = ("model_path", "device", "motion_feat_dim", "audio_feat_dim", "seq_frames")


class ConfigError(ValueError):
    """The config pickle lacks a key the pipeline needs, or holds a value of the wrong kind."""


@dataclass(frozen=True)
class DittoConfig:
    path: Path
    data_root: Path
    base_cfg: dict[str, dict[str, Any]]
    audio2motion_cfg: dict[str, Any]
    default_kwargs: dict[str, Any]

    def model_path(self, network: str) -> Path:
        """Resolved file of `network` as this config names it."""
        if network == "lmdm":
            return Path(self.audio2motion_cfg["model_path"])
        for entry, networks in BASE_ENTRIES.items():
            if network in networks:
                cfg = self.base_cfg.get(entry)
                if cfg is None:
                    break
                key = LANDMARK478_PATH_KEYS.get(network, "model_path")
                if not cfg.get(key):
                    raise ConfigError(f"{self.path}: base_cfg.{entry} has no {key}")
                return Path(cfg[key])
        raise ConfigError(f"{self.path}: no entry configures the network {network!r}")

    @property
    def online(self) -> bool:
        return bool(self.default_kwargs.get("online_mode", False))

    def condition_settings(self) -> dict[str, Any]:
        return {key: self.audio2motion_cfg[key] for key in CONDITION_KEYS}

    def lmdm_settings(self) -> dict[str, Any]:
        return {key: self.audio2motion_cfg[key] for key in LMDM_KEYS}


def _resolve(path: str, data_root: Path) -> str:
    # The reference's rule: an existing file wins, otherwise the path is under the data root.
    return path if Path(path).is_file() else str(data_root / path)


def _require_dict(value: Any, where: str, path: Path) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {where} must be a dict, found {type(value).__name__}")
    return value


def parse_config(
    raw: Mapping[str, Any],
    path: Path,
    data_root: str | Path,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> DittoConfig:
    """Validate a loaded config dict, apply `overrides` and resolve model paths.

    `overrides` maps a top-level key to entries written into it, as the reference's
    `StreamSDK(cfg_pkl, data_root, **kwargs)` does with its keyword arguments; non-dict values
    are ignored there, and are an error here because they would be silently dropped.
    """
    data_root = Path(data_root)
    cfg = copy.deepcopy(dict(_require_dict(raw, "the top level", path)))
    missing = [key for key in TOP_LEVEL_KEYS if key not in cfg]
    if missing:
        raise ConfigError(f"{path}: missing top-level keys {missing} (expected {list(TOP_LEVEL_KEYS)})")
    for key, entries in (overrides or {}).items():
        if key not in cfg:
            raise ConfigError(f"{path}: cannot override unknown top-level key {key!r}")
        section = _require_dict(cfg[key], key, path)
        section.update(_require_dict(entries, f"the override of {key}", path))

    base = _require_dict(cfg["base_cfg"], "base_cfg", path)
    for entry, settings in base.items():
        settings = _require_dict(settings, f"base_cfg.{entry}", path)
        if entry == "landmark478_cfg":
            for key in LANDMARK478_OPTIONAL_PATH_KEYS:
                if settings.get(key):
                    settings[key] = _resolve(settings[key], data_root)
        elif "model_path" not in settings:
            raise ConfigError(f"{path}: base_cfg.{entry} has no model_path")
        else:
            settings["model_path"] = _resolve(settings["model_path"], data_root)

    a2m = _require_dict(cfg["audio2motion_cfg"], "audio2motion_cfg", path)
    absent = [key for key in (*CONDITION_KEYS, *LMDM_KEYS, "w2f_type") if key not in a2m]
    if absent:
        raise ConfigError(f"{path}: audio2motion_cfg lacks {sorted(set(absent))}")
    if a2m["w2f_type"] != "hubert":
        raise ConfigError(
            f"{path}: audio2motion_cfg.w2f_type is {a2m['w2f_type']!r}; only 'hubert' exists"
        )
    if "hubert_cfg" not in base:
        raise ConfigError(f"{path}: base_cfg has no hubert_cfg (w2f_type is 'hubert')")
    a2m["model_path"] = _resolve(a2m["model_path"], data_root)

    return DittoConfig(
        path=path,
        data_root=data_root,
        base_cfg=base,
        audio2motion_cfg=a2m,
        default_kwargs=dict(_require_dict(cfg["default_kwargs"], "default_kwargs", path)),
    )


def load_config(
    cfg_pkl: str | Path,
    data_root: str | Path,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> DittoConfig:
    """Read a Ditto config pickle safely and resolve it against `data_root`."""
    path = Path(cfg_pkl)
    return parse_config(load_plain_pickle(path), path, data_root, overrides)
