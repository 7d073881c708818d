"""Warp + decode of a batch of frames whose sources may differ: the frames of one job, or the due
frames of many live sessions gathered into one call (serving/engine.py).

Each frame brings its own source feature volume f_s (1, 32, 16, 64, 64) and its keypoints; the
batch is warped and decoded in one call of each network, `batch_size` frames at most (capped at
what the warp network's file takes: the official ONNX files take one frame).

- host executors (onnxruntime on the CPU): NumPy; a batch of one passes its f_s view through
  without a copy.
- device executors (torch, TensorRT, onnxruntime with IO binding): the batch runs on this
  object's own stream, replayed from one CUDA graph per batch size on CUDA (a short batch is
  padded with its last frame to reuse it); the graph copies its inputs into its own buffers, so
  frames of any source, resident anywhere on the device, can share a batch.

One thread calls it at a time: the executors and graphs are this object's own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np

from ditto_fast.backends.base import Network, executor_of

log = logging.getLogger(__name__)


class WarpDecode:
    """The warp and decoder networks of one job (or of one session engine) as a batched call."""

    def __init__(self, networks: Mapping[str, Network], batch_size: int = 1, *, graphs: bool = True,
                 capture: Any = None) -> None:
        """`graphs` switches CUDA graphs off; `capture` replaces the device's default capture
        backend (runtime/graphs.py; CUDA graphs on CUDA, none elsewhere)."""
        if batch_size < 1:
            raise ValueError(f"WarpDecode: batch_size must be at least 1, got {batch_size}")
        warp_network = networks["warp_network"]
        self.warp, self.decoder = executor_of(warp_network), executor_of(networks["decoder"])
        if (self.warp.array_kind, self.warp.device) != (self.decoder.array_kind, self.decoder.device):
            raise ValueError(f"WarpDecode: the warp network runs on {self.warp.device} "
                             f"({self.warp.array_kind}), the decoder on {self.decoder.device} "
                             f"({self.decoder.array_kind}); they must share a device")
        self.array_kind, self.device = self.warp.array_kind, self.warp.device
        fixed = getattr(warp_network, "max_batch", None)  # what its file takes; None: any batch
        if fixed is not None and batch_size > fixed:
            log.warning("%s takes batches of %d frames only; rendering %d at a time, not %d",
                        warp_network.path, fixed, fixed, batch_size)
            batch_size = fixed
        self.batch_size = batch_size
        self._device = _DeviceBatch(self, graphs, capture) if self.array_kind == "torch" else None

    def activate(self) -> Any:
        """A context in which to call this object and use its outputs (its stream, on a device)."""
        return self._device.activate() if self._device is not None else nullcontext()

    def __call__(self, features: Sequence[Any], x_s: np.ndarray, x_d: np.ndarray) -> Any:
        """Decoder output (B, 3, S, S) of B ≤ batch_size frames: each frame's f_s (1, 32, 16, 64, 64)
        and keypoints x_s, x_d (B, 21, 3)."""
        if not 1 <= len(features) <= self.batch_size:
            raise ValueError(f"WarpDecode: a batch holds 1 to {self.batch_size} frames, got {len(features)}")
        if self._device is not None:
            return self._device(features, x_s, x_d)
        f_s = features[0] if len(features) == 1 else np.concatenate(features)
        (feature,) = self.warp(feature_3d=f_s, kp_source=x_s, kp_driving=x_d)
        (image,) = self.decoder(feature=feature)
        return image


class _DeviceBatch:
    """The device side of a WarpDecode whose executors take torch tensors: its own stream, and
    warp + decode as one function of (f_s, x_s, x_d), graphed per batch size on CUDA."""

    def __init__(self, owner: WarpDecode, graphs: bool, capture: Any) -> None:
        from ditto_fast.runtime.graphs import GraphedFunction, default_capture
        from ditto_fast.runtime.streams import DeviceStream

        self.owner = owner
        self.stream = DeviceStream(owner.device)
        capture = default_capture(owner.device) if capture is None else capture
        self.graph = GraphedFunction(self._run, capture, enabled=graphs)

    def activate(self) -> Any:
        self.stream.wait_for_current()  # uploads and work the caller queued before this batch
        return self.stream.activate()

    def _run(self, f_s: Any, kp_source: Any, kp_driving: Any) -> Any:
        (feature,) = self.owner.warp(feature_3d=f_s, kp_source=kp_source, kp_driving=kp_driving)
        (image,) = self.owner.decoder(feature=feature)
        return image

    def __call__(self, features: Sequence[Any], x_s: np.ndarray, x_d: np.ndarray) -> Any:
        import torch

        from ditto_fast.runtime.transfers import upload

        count, device = len(features), self.owner.device
        if self.graph.graphed and count < self.owner.batch_size:
            # Padded with the last frame: one graph serves every batch, short ones too.
            pad = self.owner.batch_size - count
            features = [*features, *([features[-1]] * pad)]
            x_s = np.concatenate([x_s, np.repeat(x_s[-1:], pad, axis=0)])
            x_d = np.concatenate([x_d, np.repeat(x_d[-1:], pad, axis=0)])
        with torch.inference_mode():
            f_s = features[0] if len(features) == 1 else torch.cat(list(features))
            images = self.graph(f_s, upload(np.ascontiguousarray(x_s, np.float32), device),
                                upload(np.ascontiguousarray(x_d, np.float32), device))
        return images[:count]
