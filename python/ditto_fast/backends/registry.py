"""The networks of one checkpoint tree for one backend, loaded on first use.

`onnxruntime` runs every network from `ditto_onnx/`; `torch` runs the six core networks from
`ditto_pytorch/models/` and the auxiliary ones (detection, landmarks, HuBERT) from the ONNX
files its config names, as the reference's pytorch config does; `tensorrt` runs engines.
"""

from __future__ import annotations

import threading
from typing import Literal

from ditto_fast.backends.base import Network
from ditto_fast.checkpoints import CheckpointTree
from ditto_fast.contract import MODELS

Backend = Literal["auto", "onnxruntime", "torch", "tensorrt"]
BACKENDS = ("onnxruntime", "torch", "tensorrt")
TORCH_NETWORKS = frozenset({"appearance_extractor", "motion_extractor", "warp_network", "decoder",
                            "stitch_network", "lmdm"})


def resolve_backend(backend: Backend) -> str:
    """`auto` is onnxruntime: the one backend verified end to end on every machine so far."""
    if backend == "auto":
        return "onnxruntime"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    return backend


class NetworkSet:
    """Lazily loaded networks; safe to share between threads (each loads once)."""

    def __init__(self, tree: CheckpointTree, backend: Backend = "auto", device: str = "cpu") -> None:
        self.tree = tree
        self.backend = resolve_backend(backend)
        self.device = device
        self.config = tree.load_config("pytorch" if self.backend == "torch" else "offline")
        self._loaded: dict[str, Network] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> Network:
        if name not in MODELS:
            raise KeyError(f"no network {name!r}; networks are {sorted(MODELS)}")
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = self._load(name)
            return self._loaded[name]

    def _load(self, name: str) -> Network:
        if self.backend == "torch" and name in TORCH_NETWORKS:
            from ditto_fast.backends.torch import TorchNetwork

            return TorchNetwork(name, self.tree.torch_file(name, self.config), self.device)
        if self.backend == "tensorrt":
            from ditto_fast.backends.tensorrt import TensorRTNetwork

            return TensorRTNetwork(name, self.tree.engine_file(name, self.config), self.device)
        from ditto_fast.backends.onnxruntime import OnnxRuntimeNetwork

        path = (self.config.model_path(name) if self.backend == "torch"
                else self.tree.onnx_file(name, self.config))
        return OnnxRuntimeNetwork(name, path, self.device)
