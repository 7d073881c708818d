"""The networks of one checkpoint tree for one backend and device, loaded on first use: the
registry of loaded weights that every job of a Renderer shares (each job takes its own
`executor()` of the networks it runs per frame).

`onnxruntime` runs every network from `ditto_onnx/`; `torch` runs the six core networks from
`ditto_pytorch/models/` and the auxiliary ones (detection, landmarks, HuBERT) from the ONNX
files its config names, as the reference's pytorch config does; `tensorrt` runs engines. The
auxiliary ONNX networks of a torch set run on `aux_device`: the CPU by default,
since the onnxruntime beside a GPU build of torch usually has only its CPU provider.
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


def check_device(device: str) -> str:
    """'cpu', 'cuda' or 'cuda:N'; anything else is refused with the accepted forms."""
    kind, _, index = str(device).partition(":")
    if kind == "cpu" and not index or kind == "cuda" and (not index or index.isdigit()):
        return str(device)
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


class NetworkSet:
    """Lazily loaded networks; safe to share between threads (each loads once)."""

    def __init__(self, tree: CheckpointTree, backend: Backend = "auto", device: str = "cpu",
                 threads: int | None = None, aux_device: str = "cpu") -> None:
        """`threads`: the onnxruntime sessions' intra-op threads (None: the usable cores)."""
        self.tree = tree
        self.backend = resolve_backend(backend)
        self.device = check_device(device)
        self.aux_device = check_device(aux_device)
        self.threads = threads
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

    def replace(self, name: str, network: Network) -> None:
        """Use `network` for `name` from now on instead of loading the tree's file: a seam for a
        caller's own executor (and for tests that substitute one network)."""
        if name not in MODELS:
            raise KeyError(f"no network {name!r}; networks are {sorted(MODELS)}")
        with self._lock:
            self._loaded[name] = network

    def loaded(self) -> tuple[str, ...]:
        """The names of the networks loaded so far."""
        with self._lock:
            return tuple(self._loaded)

    def _load(self, name: str) -> Network:
        if self.backend == "torch" and name in TORCH_NETWORKS:
            from ditto_fast.backends.torch import TorchNetwork

            return TorchNetwork(name, self.tree.torch_file(name, self.config), self.device)
        if self.backend == "tensorrt":
            from ditto_fast.backends.tensorrt import TensorRTNetwork

            return TensorRTNetwork(name, self.tree.engine_file(name, self.config), self.device)
        from ditto_fast.backends.onnxruntime import OnnxRuntimeNetwork

        if self.backend == "torch":
            return OnnxRuntimeNetwork(name, self.config.model_path(name), self.aux_device, self.threads)
        return OnnxRuntimeNetwork(name, self.tree.onnx_file(name, self.config), self.device, self.threads)
