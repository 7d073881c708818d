"""mp4 encoding cost per frame (VideoWriter: copy, yuv420p conversion, libx264 at crf 18, mux) for
x264 presets ultrafast / veryfast / medium at 512², 1432² and 1080p, side by side.

Content moves every frame, as a render does: a textured background panning by a few pixels, a
face-sized disc whose pattern changes shape, and a little temporal noise. (A static frame costs
x264 almost nothing and would flatter every preset.) 50 frames per clip amortise the encoder's
start-up and its flush. `extra_info`: wall ms/frame, CPU ms/frame (all of the process's threads:
the x264 work a preset costs, whatever the machine's load), the file's KiB/frame, and its luma
PSNR against the input (every 5th frame), the size and quality a preset buys at crf 18.

Encoder thread against inline encoding, side by side (the library has no inline option:
`VideoWriter` always encodes on its own thread, as `Renderer.render_to_file` and the online writer
use it; `InlineWriter` below is the same writer encoding inside `write()`):

- "render + encode 1432²" (the CPU question, 2 cores): the real offline render on
  checkpoints/synthetic-tiny (its networks on onnxruntime, the CPU paste-back) of the demo portrait
  upscaled to 1432² (an image avatar: the face moves on a still background, as in a real render),
  from precomputed HuBERT features of 2 s of demo speech, each frame written as `render_to_file`
  does (`Renderer()` defaults: thread budget = the cores, x264's own thread count), for presets
  veryfast and medium; `no-encoder` takes the frames and drops them (the render alone). Render and
  x264 compete for the same cores here; synthetic-tiny's render is dominated by its tiny warp
  network, so the share of the encoder differs from a real checkpoint's.
- "30 ms render wait + encode 1432" (a GPU host's shape): a 30 ms wait per frame (GIL released, no
  CPU used, like a GPU render) before each `write()` of moving content.
"""

from __future__ import annotations

import os
import time

import av
import numpy as np
import pytest

from ditto_fast.stages.writer import VideoWriter

SIZES = {"512": (512, 512), "1432": (1432, 1432), "1080p": (1080, 1920)}
PRESETS = ("ultrafast", "veryfast", "medium")
FRAMES = 50
ROUNDS = 3
RENDER_WAIT_S = 0.030


def moving_frames(height: int, width: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` RGB frames that all differ: panning texture, a deforming disc, temporal noise."""
    rng = np.random.default_rng(seed)
    pan = 64
    y, x = np.mgrid[0:height + pan, 0:width + pan].astype(np.float32)
    texture = np.stack([128 + 45 * np.sin(x / (23 + 7 * c) + y / (31 + 5 * c))
                        + 30 * np.sin((x - 0.6 * y) / (9 + 2 * c)) for c in range(3)], axis=-1)
    background = np.clip(texture + rng.normal(0, 4, texture.shape), 0, 255).astype(np.uint8)
    del x, y, texture
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy -= height / 2
    xx -= width / 2
    disc = yy**2 + xx**2 < (0.25 * min(height, width)) ** 2
    yy, xx = yy[disc], xx[disc]
    frames = []
    for i in range(count):
        t = i / 25
        frame = background[i % pan:i % pan + height, 2 * i % pan:2 * i % pan + width].copy()
        pattern = 128 + 60 * np.sin(xx / (12 + 3 * np.sin(t)) + 2 * t) * np.cos(yy / 15 - t)
        frame[disc] = pattern.astype(np.uint8)[:, None]
        frame += rng.integers(0, 3, frame.shape, dtype=np.uint8)
        frames.append(frame)
    return frames


@pytest.fixture(scope="module", params=list(SIZES))
def clip(request: pytest.FixtureRequest) -> tuple[str, list[np.ndarray]]:
    return request.param, moving_frames(*SIZES[request.param], FRAMES)


def encode(path, frames: list[np.ndarray], writer_class: type[VideoWriter] = VideoWriter,
           render_wait_s: float = 0.0, cpu_seconds: list[float] | None = None, **options) -> None:
    """Write `frames` to `path`; appends the process's CPU time for it to `cpu_seconds`."""
    started = time.process_time()
    height, width = frames[0].shape[:2]
    with writer_class(path, width, height, **options) as writer:
        for frame in frames:
            if render_wait_s:
                time.sleep(render_wait_s)
            writer.write(frame)
    if cpu_seconds is not None:
        cpu_seconds.append(time.process_time() - started)


def luma(rgb_or_frame) -> np.ndarray:
    frame = rgb_or_frame if isinstance(rgb_or_frame, av.VideoFrame) else av.VideoFrame.from_ndarray(rgb_or_frame)
    return frame.reformat(format="gray").to_ndarray().astype(np.float64)


def luma_psnr(path, frames: list[np.ndarray], every: int = 5) -> float:
    with av.open(str(path)) as container:
        decoded = [frame for index, frame in enumerate(container.decode(video=0)) if index % every == 0]
    mse = np.mean([np.mean((luma(d) - luma(f)) ** 2) for d, f in zip(decoded, frames[::every], strict=True)])
    return float(10 * np.log10(255**2 / mse))


def report(benchmark, path, frames: int, cpu_seconds: list[float]) -> None:
    benchmark.extra_info.update(
        frames=frames,
        cpu_ms_per_frame=round(1000 * min(cpu_seconds) / frames, 2),
        kib_per_frame=round(path.stat().st_size / 1024 / frames, 1),
    )
    if benchmark.stats is not None:  # None under --benchmark-disable: nothing was timed
        benchmark.extra_info.update(ms_per_frame=round(1000 * benchmark.stats["mean"] / frames, 2),
                                    min_ms_per_frame=round(1000 * benchmark.stats["min"] / frames, 2))


@pytest.mark.parametrize("preset", PRESETS)
def test_encode(benchmark, clip, preset, tmp_path):
    size, frames = clip
    out = tmp_path / "o.mp4"
    benchmark.group = f"encode {size}, crf 18"
    benchmark.extra_info.update(size=size, preset=preset)
    cpu_seconds: list[float] = []
    benchmark.pedantic(encode, args=(out, frames), kwargs={"preset": preset, "cpu_seconds": cpu_seconds},
                       rounds=ROUNDS, iterations=1)
    report(benchmark, out, len(frames), cpu_seconds)
    benchmark.extra_info["luma_psnr_db"] = round(luma_psnr(out, frames), 2)


class InlineWriter(VideoWriter):
    """The same writer encoding inside `write()`: what the caller would wait for without the thread."""

    def write(self, rgb: np.ndarray) -> None:
        frame = self._copy_to_frame(rgb)
        frame.pts = self.frames
        self.encode_frame(frame)
        self.frames += 1


@pytest.fixture(scope="module")
def clip_1432() -> list[np.ndarray]:
    return moving_frames(*SIZES["1432"], FRAMES)


@pytest.mark.parametrize("writer_class", [VideoWriter, InlineWriter], ids=["encoder-thread", "inline"])
def test_render_and_encode(benchmark, clip_1432, writer_class, tmp_path):
    out = tmp_path / "o.mp4"
    benchmark.group = f"30 ms render wait + encode 1432, veryfast ({len(clip_1432)} frames)"
    cpu_seconds: list[float] = []
    benchmark.pedantic(encode, args=(out, clip_1432), rounds=ROUNDS, iterations=1,
                       kwargs={"writer_class": writer_class, "render_wait_s": RENDER_WAIT_S, "preset": "veryfast",
                               "cpu_seconds": cpu_seconds})
    report(benchmark, out, len(clip_1432), cpu_seconds)


@pytest.fixture(scope="module")
def real_render_1432():
    """(networks, 1432² avatar, options, HuBERT features of 2 s of speech) on synthetic-tiny."""
    import tempfile

    import cv2

    from ditto_fast import Renderer
    from ditto_fast.stages.audio_features import feature_extractor
    from ditto_fast.tools.demo import demo_portrait, demo_speech

    renderer = Renderer()
    with tempfile.TemporaryDirectory(prefix="ditto_fast_encoder_bench_") as scratch:
        portrait = f"{scratch}/portrait.png"
        upscaled = cv2.resize(demo_portrait(), SIZES["1432"][::-1], interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(portrait, cv2.cvtColor(upscaled, cv2.COLOR_RGB2BGR))
        avatar = renderer.register(portrait)
    features = np.concatenate(list(feature_extractor(renderer.networks).offline_blocks(demo_speech(FRAMES / 25))))
    return renderer, avatar, renderer.options(seed=0), features


def render_and_encode(path, renderer, avatar, options, features, writer_class, preset, cpu_seconds) -> int:
    """The offline render's frames into `writer_class` (None: dropped), as `render_to_file` writes them."""
    from ditto_fast.engine.offline import RenderJob

    started = time.process_time()
    job = RenderJob(renderer.networks, avatar, options, features=features, paste_threads=renderer.threads)
    frames = 0
    if writer_class is None:
        for _ in job:
            frames += 1
    else:
        height, width = job.info.frame_size
        with writer_class(path, width, height, preset=preset, threads=None) as writer:
            for frame in job:
                writer.write(frame.rgb)
                frames += 1
    cpu_seconds.append(time.process_time() - started)
    return frames


@pytest.mark.parametrize("writer", ["encoder-thread", "inline", "no-encoder"])
@pytest.mark.parametrize("preset", ["veryfast", "medium"])
def test_real_render_and_encode(benchmark, real_render_1432, writer, preset, tmp_path):
    if writer == "no-encoder" and preset != "veryfast":
        pytest.skip("the render alone does not depend on the preset")
    renderer, avatar, options, features = real_render_1432
    writer_class = {"encoder-thread": VideoWriter, "inline": InlineWriter, "no-encoder": None}[writer]
    out = tmp_path / "o.mp4"
    benchmark.group = f"render (synthetic-tiny, CPU) + encode 1432, {preset} ({len(features)} frames)"
    if writer == "no-encoder":
        benchmark.group = f"render (synthetic-tiny, CPU) + encode 1432, veryfast ({len(features)} frames)"
    cpu_seconds: list[float] = []
    frames = benchmark.pedantic(render_and_encode, rounds=ROUNDS, iterations=1,
                                args=(out, renderer, avatar, options, features, writer_class, preset, cpu_seconds))
    assert frames == len(features)
    benchmark.extra_info.update(writer=writer, preset=preset, frames=frames, cores=os.cpu_count(),
                                cpu_ms_per_frame=round(1000 * min(cpu_seconds) / frames, 2))
    if benchmark.stats is not None:
        benchmark.extra_info.update(ms_per_frame=round(1000 * benchmark.stats["median"] / frames, 2),
                                    min_ms_per_frame=round(1000 * benchmark.stats["min"] / frames, 2))
    if writer != "no-encoder":
        benchmark.extra_info["kib_per_frame"] = round(out.stat().st_size / 1024 / frames, 1)
