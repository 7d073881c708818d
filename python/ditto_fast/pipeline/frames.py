"""Offline frames in batches on one device: warp (B) → decode (B) → paste-back → ring slots.

The input is the motion stitch's driving keypoints for B frames; the source side (f_s, source
keypoints, backgrounds, mask) is already resident (resident.py). Warp and decoder run as one
fixed-shape step per batch size, replayed from a CUDA graph on CUDA (graphs.py); paste-back runs
per frame (its window depends on the frame's crop matrix) with the Triton kernel on CUDA, or the
torch version (paste.py); each finished frame leaves the device once, into a ring slot
(ring_writer.py). All device work is queued on the renderer's own stream.

On the CPU everything runs eagerly in fp32 and equals the per-frame `FrameRenderer` to within
±1 grey level (batched convolutions may round differently from single-frame ones).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch

from ditto_fast.backends.base import Network
from ditto_fast.engine.offline import FrameRenderer
from ditto_fast.gpu.graphs import CaptureBackend, GraphedFunction, default_capture
from ditto_fast.gpu.paste import PasteFn, select_paste
from ditto_fast.gpu.precision import DeviceNetwork
from ditto_fast.gpu.resident import ResidentSource, upload
from ditto_fast.gpu.ring_writer import RingWriter
from ditto_fast.gpu.streams import DeviceStream
from ditto_fast.stages.avatar import Avatar

DEFAULT_BATCH_SIZE = 8
DeviceFn = Callable[..., tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class StitchedFrame:
    """One output frame ready to render: its index, its (mirrored) source frame, and the stitched
    driving keypoints x_d, (21, 3) or (1, 21, 3) float32."""

    index: int
    source: int
    kp_driving: np.ndarray


def stitched_frames(renderer: FrameRenderer, motion_blocks: Iterable[np.ndarray],
                    first_index: int = 0) -> Iterator[StitchedFrame]:
    """Output frames `first_index`, `first_index` + 1, ... from blocks of (n, 265) driving motion,
    each block stitched in one pass by `renderer.stitch_block`, as `render_clip_into` does."""
    index = first_index
    for motion in motion_blocks:
        sources, _, x_d = renderer.stitch_block(index, motion)
        for row, source in enumerate(sources):
            yield StitchedFrame(index + row, source, x_d[row])
        index += len(sources)


class BatchedRenderer:
    """Renders stitched frames B at a time into a `RingWriter`.

    `warp` and `decoder` take and return device tensors (e.g. `DeviceNetwork`s): warp(f_s (B, 32, 16,
    64, 64), x_s (B, 21, 3), x_d (B, 21, 3)) → (feature (B, 256, 64, 64),), decoder(feature) →
    (image (B, 3, S, S),). `graphs` switches graphs of warp + decode on or off; `capture` replaces
    the device's default capture (CUDA graphs on CUDA, none elsewhere); `paste` replaces the
    device's default paste-back (same signature as `paste.torch_paste_back`).
    """

    def __init__(self, warp: DeviceFn, decoder: DeviceFn, source: ResidentSource, *,
                 batch_size: int = DEFAULT_BATCH_SIZE, graphs: bool = True, capture: CaptureBackend | None = None,
                 paste: PasteFn | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"BatchedRenderer: batch_size must be at least 1, got {batch_size}")
        self.warp, self.decoder, self.source = warp, decoder, source
        self.device = source.device
        self.batch_size = batch_size
        self.paste = select_paste(self.device) if paste is None else paste
        self.stream = DeviceStream(self.device)
        capture = default_capture(self.device) if capture is None else capture
        self.warp_decode = GraphedFunction(self._warp_decode, capture, enabled=graphs)

    @classmethod
    def from_networks(cls, networks: Mapping[str, Network], avatar: Avatar, **options: object) -> BatchedRenderer:
        """From torch-backend networks (warp_network, decoder) on their device, under the precision
        policy (their modules are shared and prepared in place), with `avatar` uploaded there;
        `options` as for the constructor."""
        warp = DeviceNetwork.from_torch_network(networks["warp_network"])
        decoder = DeviceNetwork.from_torch_network(networks["decoder"])
        if decoder.device != warp.device:
            raise ValueError(f"BatchedRenderer: the warp network is on {warp.device}, the decoder on {decoder.device}")
        return cls(warp, decoder, ResidentSource.from_avatar(avatar, warp.device), **options)

    def _warp_decode(self, sources: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        """Source frame indices (B,) int64 and x_d (B, 21, 3) → decoder output (B, 3, S, S). A CUDA
        graph of it reads the resident source at the addresses it had at capture, which is why
        `source` is fixed for the renderer's life."""
        f_s = self.source.f_s.index_select(0, sources)
        kp_source = self.source.kp_source.index_select(0, sources)
        (feature,) = self.warp(f_s, kp_source, kp_driving)
        (image,) = self.decoder(feature)
        return image

    def render(self, frames: Iterable[StitchedFrame], writer: RingWriter) -> None:
        """Render `frames` in batches of `batch_size` (the last one may be smaller)."""
        for batch in _batches(frames, self.batch_size):
            self.render_batch(batch, writer)

    def render_batch(self, frames: Sequence[StitchedFrame], writer: RingWriter) -> None:
        """Render up to `batch_size` frames and hand each to `writer`."""
        if not 1 <= len(frames) <= self.batch_size:
            raise ValueError(f"BatchedRenderer: a batch holds 1 to {self.batch_size} frames, got {len(frames)}")
        sources = [frame.source for frame in frames]
        if not all(0 <= s < self.source.num_frames for s in sources):
            raise ValueError(f"BatchedRenderer: source frames {sources} outside the source's "
                             f"{self.source.num_frames} frames")
        kp_driving = np.stack([np.asarray(f.kp_driving, dtype=np.float32).reshape(-1, 3) for f in frames])
        if kp_driving.shape[1:] != (21, 3):
            raise ValueError(f"BatchedRenderer: kp_driving must hold 21 keypoints per frame, got {kp_driving.shape[1]}")
        height, width = self.source.frame_size
        self.stream.wait_for_current()  # uploads and work the caller queued before this batch
        with torch.inference_mode(), self.stream.activate():
            images = self.warp_decode(upload(np.array(sources, dtype=np.int64), self.device),
                                      upload(kp_driving, self.device))
            for frame, image in zip(frames, images):
                out = torch.empty((height, width, 3), dtype=torch.uint8, device=self.device)
                self.paste(self.source.frames[frame.source], image[None], self.source.mask,
                           self.source.m_c2o[frame.source], out=out)
                writer.write(frame.index, out)


def _batches(frames: Iterable[StitchedFrame], size: int) -> Iterator[list[StitchedFrame]]:
    iterator = iter(frames)
    while batch := list(islice(iterator, size)):
        yield batch
