"""The one frame renderer: stitch → warp → decode → paste-back → ring slot, for offline jobs and
live streams alike, on any device and backend, batch 1..N.

Per block of driving motion (a clip offline, a chunk live), the motion stitch runs once for the
whole block (`MotionStitch.stitch_clip`); then warp and decoder run `batch_size` frames at a
time (pipeline/warp_decode.py: the job's own executors, graphs and stream on a device), and each
frame is pasted back into the buffer its `RingWriter` hands out (runtime/ring_writer.py):

- host executors (onnxruntime on the CPU): NumPy end to end; the source's arrays are views of
  the Avatar's, and paste-back (the C++ kernel) writes straight into the ring slot. With the
  official ONNX files the batch is 1 (their warp network has a fixed batch of one), and the
  output is byte-identical to the reference's.
- device executors (torch, TensorRT, onnxruntime with IO binding): the source is uploaded once,
  keypoints go up per batch, warp + decode run on the device, paste-back runs there too (Triton
  on CUDA), and each frame leaves the device once, into its slot.

The session engine (serving/engine.py) keeps one FrameRenderer per session for its stitch state
and source, and batches the due frames of all sessions through one shared `WarpDecode`.

Batched convolutions may round differently from single-frame ones (±1 grey level at batch > 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ditto_fast.avatar import Avatar
from ditto_fast.backends.base import Network
from ditto_fast.ops.paste_back import PasteBack
from ditto_fast.options import RenderOptions
from ditto_fast.pipeline.device_source import DeviceSource
from ditto_fast.pipeline.warp_decode import WarpDecode
from ditto_fast.runtime.ring_writer import Committed, ring_writer
from ditto_fast.stages.frame_index import mirror_index
from ditto_fast.stages.stitch import MotionStitch


class FrameRenderer:
    """Renders blocks of driving motion into ring slots for one job (see the module docstring).
    One job, one thread: the stitch state is the job's own, and so are the executors unless a
    shared `warp_decode` is given (whose owner then serialises its use)."""

    def __init__(self, networks: Mapping[str, Network], avatar: Avatar, options: RenderOptions, num_frames: int,
                 *, batch_size: int = 1, paste_threads: int = 0, graphs: bool = True, capture: Any = None,
                 warp_decode: WarpDecode | None = None) -> None:
        """`graphs` and `capture`: see WarpDecode; `warp_decode`: a shared one instead of this
        job's own (its batch size then applies)."""
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
        self.warp_decode = warp_decode or WarpDecode(networks, batch_size, graphs=graphs, capture=capture)
        self.array_kind, self.device = self.warp_decode.array_kind, self.warp_decode.device
        self.batch_size = self.warp_decode.batch_size
        self.source = DeviceSource.from_avatar(avatar, self.array_kind, self.device)
        self.paste = PasteBack(threads=paste_threads)

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

    def features(self, source: int) -> Any:
        """The f_s (1, 32, 16, 64, 64) of source frame `source`, as a view."""
        return self.source.f_s[source:source + 1]

    def paste_frame(self, source: int, image: Any, out: Any = None) -> Any:
        """Paste the decoder's (1, 3, S, S) output of a frame of source frame `source` into `out`
        (None: a new array on the renderer's device); returns the frame."""
        return self.paste(self.source.frames[source], image, self.source.m_c2o[source], out=out)

    def paste_to_host(self, source: int, image: Any) -> np.ndarray:
        """`paste_frame` into a new host array (a session engine's frames outlive any ring slot)."""
        frame = self.paste_frame(source, image)
        return frame if isinstance(frame, np.ndarray) else frame.cpu().numpy()

    def render_block(self, writer: Any, first_index: int, motion: np.ndarray) -> None:
        """Render frames first_index, first_index+1, ... of (n, 265) driving motion (after the
        output clamp) into `writer` (from `self.writer`), in order."""
        sources, x_s, x_d = self.stitch_block(first_index, motion)
        with self.warp_decode.activate():
            for start in range(0, len(sources), self.batch_size):
                batch = slice(start, start + self.batch_size)
                images = self.warp_decode([self.features(source) for source in sources[batch]], x_s[batch],
                                          x_d[batch])
                for row, source in enumerate(sources[batch]):
                    with writer.frame(first_index + start + row) as out:
                        self.paste_frame(source, images[row:row + 1], out)
