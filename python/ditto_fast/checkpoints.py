"""Finding an official-layout Ditto checkpoint tree and the file each backend loads from it.

    root/
      ditto_cfg/      v0.4_hubert_cfg_trt.pkl, v0.4_hubert_cfg_trt_online.pkl, v0.4_hubert_cfg_pytorch.pkl
      ditto_onnx/     <network>.onnx (+ warp_network_ori.onnx)
      ditto_trt_*/    <network>_fp16.engine | <network>_fp32.engine, one folder per GPU family
      ditto_pytorch/  models/*.pth, aux_models/*

The offline and online configs name TensorRT engines (`decoder_fp16.engine`); the same
network stem names the ONNX file (`decoder.onnx`), which is how the ONNX backends use those
configs too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ditto_fast.config import DittoConfig, load_config

ConfigKind = Literal["offline", "online", "pytorch"]

CONFIG_FILES: dict[str, str] = {
    "offline": "v0.4_hubert_cfg_trt.pkl",
    "online": "v0.4_hubert_cfg_trt_online.pkl",
    "pytorch": "v0.4_hubert_cfg_pytorch.pkl",
}
CFG_DIR, ONNX_DIR, PYTORCH_DIR, TRT_PREFIX = "ditto_cfg", "ditto_onnx", "ditto_pytorch", "ditto_trt_"
# onnxruntime has no GridSample3D, so it prefers the native-GridSample export of the warp net.
NATIVE_WARP_ONNX = "warp_network_ori.onnx"
# Written at the root of every tree `ditto-fast synth` makes: its weights are not the official ones.
SYNTHETIC_MARKER = "SYNTHETIC.md"
LMDM_STEM = "lmdm_v0.4_hubert"

# The official ditto_pytorch/ files, by file stem: core networks as .pth, auxiliary networks
# as ONNX run by onnxruntime. The official tree has a MediaPipe task bundle for landmark478
# where this names the BlazeFace + FaceMesh pair, which ditto_fast runs in every config.
PYTORCH_FILES: dict[str, str] = {
    "insightface_det": "aux_models/det_10g.onnx",
    "landmark106": "aux_models/2d106det.onnx",
    "landmark203": "aux_models/landmark203.onnx",
    "hubert": "aux_models/hubert_streaming_fix_kv.onnx",
    "blaze_face": "aux_models/blaze_face.onnx",
    "face_mesh": "aux_models/face_mesh.onnx",
    "appearance_extractor": "models/appearance_extractor.pth",
    "motion_extractor": "models/motion_extractor.pth",
    "stitch_network": "models/stitch_network.pth",
    "warp_network": "models/warp_network.pth",
    "decoder": "models/decoder.pth",
    LMDM_STEM: "models/lmdm_v0.4_hubert.pth",
}

_PRECISION_SUFFIXES = ("_fp16", "_fp32")


def is_synthetic(root: str | Path) -> bool:
    """Whether the folder `root` was written by `ditto-fast synth` (its marker file is there)."""
    return (Path(root) / SYNTHETIC_MARKER).is_file()


class CheckpointError(FileNotFoundError):
    """A checkpoint tree or one of its files is missing."""


def file_stem(network: str) -> str:
    """The stem of a network's official files: LMDM's carry its version (`lmdm_v0.4_hubert`)."""
    return LMDM_STEM if network == "lmdm" else network


def network_stem(model_path: str | Path) -> str:
    """The network's file stem, whatever the format: `lmdm_v0.4_hubert_fp32.engine` and
    `lmdm_v0.4_hubert.onnx` both give `lmdm_v0.4_hubert`."""
    name = Path(model_path).name
    for extension in (".engine", ".trt", ".onnx", ".pth", ".pt"):
        if name.endswith(extension):
            name = name[: -len(extension)]
            break
    for suffix in _PRECISION_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class CheckpointTree:
    root: Path
    cfg_dir: Path
    onnx_dir: Path | None
    trt_dirs: tuple[Path, ...]
    pytorch_dir: Path | None

    @property
    def synthetic(self) -> bool:
        """Whether the tree holds synthetic weights (written by `ditto-fast synth`)."""
        return is_synthetic(self.root)

    def config_path(self, kind: ConfigKind) -> Path:
        if kind not in CONFIG_FILES:
            raise ValueError(f"config kind must be one of {sorted(CONFIG_FILES)}, got {kind!r}")
        path = self.cfg_dir / CONFIG_FILES[kind]
        if not path.is_file():
            raise CheckpointError(f"{path}: the {kind} config pickle is missing")
        return path

    def load_config(
        self,
        kind: ConfigKind = "offline",
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> DittoConfig:
        """Read one of the tree's configs, resolved against the folder its models live in."""
        return load_config(self.config_path(kind), self.data_root(kind), overrides)

    def data_root(self, kind: ConfigKind) -> Path:
        if kind == "pytorch":
            if self.pytorch_dir is None:
                raise CheckpointError(f"{self.root}: no {PYTORCH_DIR}/ folder")
            return self.pytorch_dir
        # The engine configs resolve against a TensorRT folder; without one, paths still
        # resolve (to files that do not exist) and backends map them by network stem.
        return self.trt_dirs[0] if self.trt_dirs else self.root

    def onnx_file(self, network: str, config: DittoConfig) -> Path:
        """The ONNX file of `network`, named by the stem the config gives it."""
        if self.onnx_dir is None:
            raise CheckpointError(f"{self.root}: no {ONNX_DIR}/ folder")
        stem = network_stem(config.model_path(network))
        if network == "warp_network" and (self.onnx_dir / NATIVE_WARP_ONNX).is_file():
            return self.onnx_dir / NATIVE_WARP_ONNX
        return _existing(self.onnx_dir / f"{stem}.onnx", network)

    def engine_file(self, network: str, config: DittoConfig, trt_dir: Path | None = None) -> Path:
        """The TensorRT engine of `network` in `trt_dir` (default: the tree's first)."""
        folder = trt_dir or (self.trt_dirs[0] if self.trt_dirs else None)
        if folder is None:
            raise CheckpointError(f"{self.root}: no {TRT_PREFIX}*/ folder")
        return _existing(folder / Path(config.model_path(network)).name, network)

    def torch_file(self, network: str, config: DittoConfig) -> Path:
        """The `.pth` of `network` named by the pytorch config (already resolved)."""
        return _existing(config.model_path(network), network)


def _existing(path: str | Path, network: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model file of {network} is missing")
    return path


# The official download's engines (TensorRT 8.6 builds for Ampere and later GPUs).
SHIPPED_TRT_DIR = "ditto_trt_Ampere_Plus"


def _engine_folder_order(folder: Path) -> tuple[bool, float, str]:
    """Engines built on this machine (`ditto-fast build-engines`) before the shipped ones, newest
    first: a folder someone built is the one meant for this GPU and TensorRT version."""
    return folder.name == SHIPPED_TRT_DIR, -folder.stat().st_mtime, folder.name


# The synthetic-tiny tree that checkpoint paths default to. A wheel ships it as package data at
# PACKAGE_TREE, relative to the ditto_fast package (CMakeLists.txt installs it there;
# tests/test_package_data.py checks that the two agree); an editable install or a source tree
# reads it from the checkout, at SOURCE_TREE relative to the repository root.
PACKAGE_TREE = "data/synthetic-tiny"
SOURCE_TREE = "checkpoints/synthetic-tiny"


def default_tree_candidates() -> tuple[Path, ...]:
    """Where the default tree may be, in the order `default_tree` looks: the package data of each
    folder of the ditto_fast package, then the source checkout holding this file. Never the
    current directory."""
    import ditto_fast  # this module's own package: already imported

    package_dirs = dict.fromkeys(Path(folder).resolve() for folder in ditto_fast.__path__)
    source_root = Path(__file__).resolve().parents[2]  # python/ditto_fast/checkpoints.py
    return (*(folder / PACKAGE_TREE for folder in package_dirs), source_root / SOURCE_TREE)


def default_tree() -> Path:
    """The synthetic-tiny tree a Renderer loads when given none: the wheel's package data, else
    the source checkout's `checkpoints/synthetic-tiny` (editable installs, source trees)."""
    candidates = default_tree_candidates()
    for folder in candidates:
        if (folder / CFG_DIR).is_dir():
            return folder
    raise CheckpointError(
        f"the default checkpoint tree synthetic-tiny is missing (looked in {', '.join(map(str, candidates))}); "
        "pass a checkpoint tree (`ditto-fast synth --size tiny --out DIR` writes a synthetic one)"
    )


def find_tree(root: str | Path) -> CheckpointTree:
    """Locate the parts of a checkpoint tree under `root`."""
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"{root}: checkpoint folder does not exist")
    cfg_dir = root / CFG_DIR
    onnx_dir = root / ONNX_DIR
    pytorch_dir = root / PYTORCH_DIR
    trt_dirs = tuple(sorted((p for p in root.glob(f"{TRT_PREFIX}*") if p.is_dir()), key=_engine_folder_order))
    has_models = onnx_dir.is_dir() or pytorch_dir.is_dir() or bool(trt_dirs)
    if not cfg_dir.is_dir() or not has_models:
        raise CheckpointError(
            f"{root}: not a Ditto checkpoint tree: expected {CFG_DIR}/ and at least one of "
            f"{ONNX_DIR}/, {TRT_PREFIX}*/, {PYTORCH_DIR}/"
        )
    return CheckpointTree(
        root=root,
        cfg_dir=cfg_dir,
        onnx_dir=onnx_dir if onnx_dir.is_dir() else None,
        trt_dirs=trt_dirs,
        pytorch_dir=pytorch_dir if pytorch_dir.is_dir() else None,
    )
