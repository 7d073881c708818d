"""The one frame renderer: stitch → warp → decode → paste-back → ring slot, for offline jobs and
live streams alike, on any device and backend, batch 1..N.

Per block of driving motion (a clip offline, a chunk live), the motion stitch runs once for the
whole block (`MotionStitch.stitch_clip`); then warp and decoder run `batch_size` frames at a
time through the job's own executors (backends/base.py), and each frame is pasted back into the
buffer its `RingWriter` hands out (runtime/ring_writer.py):

- host executors (onnxruntime on the CPU): NumPy end to end; the source's arrays are views of
  the Avatar's, and paste-back (the C++ kernel) writes straight into the ring slot. With the
  official ONNX files the batch is 1 (their warp network has a fixed batch of one), and the
  output is byte-identical to the reference's.
- device executors (torch, TensorRT, onnxruntime with IO binding): the source is uploaded once,
  keypoints go up per batch, warp + decode run on the renderer's stream (replayed from one CUDA
  graph per batch size on CUDA; a short last batch is padded to reuse it), paste-back runs on
  the device (Triton on CUDA), and each frame leaves the device once, into its slot.

Batched convolutions may round differently from single-frame ones (±1 grey level at batch > 1).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import numpy as np

from ditto_fast.avatar import Avatar
from ditto_fast.backends.base import Network, executor_of
from ditto_fast.ops.paste_back import PasteBack
from ditto_fast.options import RenderOptions
from ditto_fast.pipeline.device_source import DeviceSource
from ditto_fast.runtime.ring_writer import Committed, ring_writer
from ditto_fast.stages.frame_index import mirror_index
from ditto_fast.stages.stitch import MotionStitch

log = logging.getLogger(__name__)


class FrameRenderer:
    """Renders blocks of driving motion into ring slots for one job (see the module docstring).
    One job, one thread: the executors and the stitch state are the job's own."""

    def __init__(self, networks: Mapping[str, Network], avatar: Avatar, options: RenderOptions, num_frames: int,
                 *, batch_size: int = 1, paste_threads: int = 0, graphs: bool = True, capture: Any = None) -> None:
        """`graphs` switches CUDA graphs of warp + decode off; `capture` replaces the device's
        default capture backend (runtime/graphs.py; CUDA graphs on CUDA, none elsewhere)."""
        if batch_size < 1:
            raise ValueError(f"FrameRenderer: batch_size must be at least 1, got {batch_size}")
        self.avatar = avatar
        self.stitch = MotionStitch(networks["stitch_network"])
        self.stitch.setup(
            avatar.motion_info(0), is_image=avatar.is_image, N_d=num_frames, use_d_keys=options.use_d_keys,
            relative_d=options.relative_d, drive_eye=options.drive_eye, delta_eye_arr=options.delta_eye_arr,
            delta_eye_open_n=options.delta_eye_open_n, fade_type=options.fade_type,
            fade_out_keys=options.fade_out_keys, flag_stitching=options.flag_stitching,
            ch_x_s_info=options.ch_info.motion_info(0) if options.ch_info is not None else None,
            ctrl_info=options.ctrl_info, overall_ctrl_info=options.overall_ctrl_info, seed=options.seed,
        )
        self.stitch.setup_frames(num_frames, options.fade_in, options.fade_out, options.ctrl_info)
        warp_network = networks["warp_network"]
        self.warp, self.decoder = executor_of(warp_network), executor_of(networks["decoder"])
        if (self.warp.array_kind, self.warp.device) != (self.decoder.array_kind, self.decoder.device):
            raise ValueError(f"FrameRenderer: the warp network runs on {self.warp.device} "
                             f"({self.warp.array_kind}), the decoder on {self.decoder.device} "
                             f"({self.decoder.array_kind}); they must share a device")
        self.array_kind, self.device = self.warp.array_kind, self.warp.device
        fixed = getattr(warp_network, "max_batch", None)  # what its file takes; None: any batch
        if fixed is not None and batch_size > fixed:
            log.warning("%s takes batches of %d frames only; rendering %d at a time, not %d",
                        warp_network.path, fixed, fixed, batch_size)
            batch_size = fixed
        self.batch_size = batch_size
        self.source = DeviceSource.from_avatar(avatar, self.array_kind, self.device)
        self.paste = PasteBack(threads=paste_threads)
        self._device = _DeviceWork(self, graphs, capture) if self.array_kind == "torch" else None

    def writer(self, ring: Any, committed: Committed | None = None) -> Any:
        """The ring writer for this renderer's frames: up to two batches' copies in flight."""
        return ring_writer(ring, self.array_kind, self.device, max_in_flight=2 * self.batch_size,
                           committed=committed)

    def stitch_block(self, first_index: int, motion: np.ndarray) -> tuple[list[int], np.ndarray, np.ndarray]:
        """Source frame of each output frame and the keypoints x_s, x_d (n, 21, 3) of frames
        first_index, first_index+1, ... of (n, 265) driving motion, stitched in one pass."""
        indices = np.arange(first_index, first_index + len(motion))
        sources = [mirror_index(int(index), self.avatar.num_frames) for index in indices]
        x_s, x_d = self.stitch.stitch_clip(self.avatar.motion_rows(sources), motion, indices)
        return sources, x_s, x_d

    def render_block(self, writer: Any, first_index: int, motion: np.ndarray) -> None:
        """Render frames first_index, first_index+1, ... of (n, 265) driving motion (after the
        output clamp) into `writer` (from `self.writer`), in order."""
        sources, x_s, x_d = self.stitch_block(first_index, motion)
        with self._device.activate() if self._device is not None else nullcontext():
            for start in range(0, len(sources), self.batch_size):
                batch = slice(start, start + self.batch_size)
                images = self._warp_decode(sources[batch], x_s[batch], x_d[batch])
                for row, source in enumerate(sources[batch]):
                    with writer.frame(first_index + start + row) as out:
                        # The decoder's (1, 3, S, S) output goes in as it is: paste-back converts it.
                        self.paste(self.source.frames[source], images[row:row + 1], self.source.m_c2o[source],
                                   out=out)

    def _warp_decode(self, sources: list[int], x_s: np.ndarray, x_d: np.ndarray) -> Any:
        """Decoder output (B, 3, S, S) of B frames: their source frames and keypoints."""
        if self._device is not None:
            return self._device.warp_decode(sources, x_s, x_d)
        (feature,) = self.warp(feature_3d=self.source.host_features(sources), kp_source=x_s, kp_driving=x_d)
        (image,) = self.decoder(feature=feature)
        return image


class _DeviceWork:
    """The device side of a FrameRenderer whose executors take torch tensors: its own stream, and
    warp + decode as one function of (source indices, x_s, x_d), graphed per batch size on CUDA.
    A graph reads the source at the addresses it had at capture: the source is fixed for the
    renderer's life, which is why it lives here and is never replaced."""

    def __init__(self, renderer: FrameRenderer, graphs: bool, capture: Any) -> None:
        from ditto_fast.runtime.graphs import GraphedFunction, default_capture
        from ditto_fast.runtime.streams import DeviceStream

        self.renderer = renderer
        self.stream = DeviceStream(renderer.device)
        capture = default_capture(renderer.device) if capture is None else capture
        self.graph = GraphedFunction(self._run, capture, enabled=graphs)

    def activate(self) -> Any:
        self.stream.wait_for_current()  # uploads and work the caller queued before this block
        return self.stream.activate()

    def _run(self, sources: Any, kp_source: Any, kp_driving: Any) -> Any:
        renderer = self.renderer
        f_s = renderer.source.f_s.index_select(0, sources)
        (feature,) = renderer.warp(feature_3d=f_s, kp_source=kp_source, kp_driving=kp_driving)
        (image,) = renderer.decoder(feature=feature)
        return image

    def warp_decode(self, sources: list[int], x_s: np.ndarray, x_d: np.ndarray) -> Any:
        import torch

        from ditto_fast.runtime.transfers import upload

        count, device = len(sources), self.renderer.device
        indices = np.asarray(sources, dtype=np.int64)
        if self.graph.graphed and count < self.renderer.batch_size:
            # Padded with the last frame: one graph serves every batch, short ones too.
            pad = self.renderer.batch_size - count
            indices = np.concatenate([indices, np.repeat(indices[-1:], pad)])
            x_s = np.concatenate([x_s, np.repeat(x_s[-1:], pad, axis=0)])
            x_d = np.concatenate([x_d, np.repeat(x_d[-1:], pad, axis=0)])
        with torch.inference_mode():
            images = self.graph(upload(indices, device), upload(np.ascontiguousarray(x_s, np.float32), device),
                                upload(np.ascontiguousarray(x_d, np.float32), device))
        return images[:count]
