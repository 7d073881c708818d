"""The device-resident torch render path (ditto_fast.gpu), exercised on the CPU.

CUDA-only parts (streams, events, graph capture, the Triton paste kernel, pinned async copies) run
on their CPU stand-ins here; graph caching runs through a recording capture backend that calls the
real function, so what is checked is the cache and the static-buffer plumbing, not faked results.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from paste_reference import full_frame_paste  # noqa: E402

from ditto_fast import Avatar, Renderer  # noqa: E402
from ditto_fast._core import FrameRing  # noqa: E402
from ditto_fast.demo import write_demo_inputs  # noqa: E402
from ditto_fast.engine.offline import FrameRenderer  # noqa: E402
from ditto_fast.gpu.batched_render import BatchedRenderer, StitchedFrame, stitched_frames  # noqa: E402
from ditto_fast.gpu.graphs import GraphedFunction, default_capture  # noqa: E402
from ditto_fast.gpu.paste import TorchPasteBack, select_paste, torch_paste_back  # noqa: E402
from ditto_fast.gpu.paste_geometry import crop_footprint  # noqa: E402
from ditto_fast.gpu.precision import (  # noqa: E402
    FP16_IN_REFERENCE,
    FP32_IN_REFERENCE,
    DeviceNetwork,
    Precision,
    precision_for,
)
from ditto_fast.gpu.resident import ResidentSource, as_device_tensor, to_cupy, to_numpy  # noqa: E402
from ditto_fast.gpu.ring_writer import RingWriter  # noqa: E402
from ditto_fast.gpu.streams import DeviceEvent, DeviceStream  # noqa: E402
from ditto_fast.models.warp import WarpingNetwork  # noqa: E402
from ditto_fast.stages.avatar import MOTION_INFO_SHAPES  # noqa: E402
from ditto_fast.stages.motion import motion_dict_to_vector, motion_vector_to_dict  # noqa: E402
from ditto_fast.stages.paste import paste_mask, render_to_hwc  # noqa: E402
from ditto_fast.stages.stitch import keypoint_transform  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ROOT / "checkpoints" / "synthetic-tiny"
MASK = paste_mask()


# -- helpers ---------------------------------------------------------------------------------------

class RecordingCapture:
    """A capture backend for the CPU with a CUDA graph's contract: capturing runs `fn` once on the
    static inputs (its outputs become the static outputs); a replay runs the same `fn` again on
    whatever the static inputs hold and writes the static outputs."""

    def __init__(self) -> None:
        self.captured_shapes: list[tuple[tuple[int, ...], ...]] = []
        self.replays = 0

    def capture(self, fn, static_inputs):
        self.captured_shapes.append(tuple(tuple(t.shape) for t in static_inputs))
        outputs = fn(*static_inputs)

        def replay() -> None:
            self.replays += 1
            fresh = fn(*static_inputs)
            for static, new in zip(_as_tuple(outputs), _as_tuple(fresh)):
                static.copy_(new)

        return replay, outputs


def _as_tuple(outputs):
    return outputs if isinstance(outputs, tuple) else (outputs,)


def small_warp_network() -> WarpingNetwork:
    """A WarpingNetwork small enough for fp16 on the CPU: a (1, 4, 4, 16, 16) feature volume."""
    torch.manual_seed(0)
    dense = {"block_expansion": 4, "max_features": 8, "num_blocks": 2, "compress": 2, "mask_kernel_size": 3}
    return WarpingNetwork(block_expansion=4, num_down_blocks=1, reshape_channel=4, reshape_depth=4,
                          dense_motion_params=dense).eval()


def small_warp_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    kp_source = torch.rand(1, 21, 3, generator=generator) - 0.5
    return (torch.randn(1, 4, 4, 16, 16, generator=generator), kp_source,
            kp_source + 0.05 * torch.randn(1, 21, 3, generator=generator))


def crop_matrix(scale: float, degrees: float, tx: float, ty: float) -> np.ndarray:
    """Crop→frame matrix: rotate and scale the 512² crop, then move it to (tx, ty)."""
    angle = np.deg2rad(degrees)
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]])


def synthetic_avatar(num_frames: int = 2, size: tuple[int, int] = (96, 128)) -> Avatar:
    """An avatar of random parts with the registered shapes (no networks needed)."""
    rng = np.random.default_rng(0)
    motion = {k: rng.normal(0, 0.3, (num_frames, 1, *shape)).astype(np.float32)
              for k, shape in MOTION_INFO_SHAPES.items()}
    motion["scale"] += 1.5
    return Avatar(
        motion=motion,
        f_s=rng.normal(0, 1, (num_frames, 1, 32, 16, 64, 64)).astype(np.float32),
        m_c2o=np.stack([crop_matrix(0.15 + 0.02 * i, 7.0 * i, 20 + 3 * i, 5) for i in range(num_frames)]),
        eye_open=np.zeros((num_frames, 2), np.float32), eye_ball=np.zeros((num_frames, 6), np.float32),
        sc=np.zeros(63, np.float32), frames=rng.integers(0, 256, (num_frames, *size, 3), dtype=np.uint8),
        is_image=num_frames == 1,
    )


def take_frames(ring: FrameRing, count: int) -> list[np.ndarray]:
    frames = []
    for _ in range(count):
        with ring.take(timeout=5) as taken:
            frames.append(taken.array.copy())
    return frames


# -- precision -------------------------------------------------------------------------------------

def test_precision_policy_follows_the_reference_on_cuda_and_is_fp32_elsewhere():
    for name in FP16_IN_REFERENCE:
        assert precision_for(name, "cuda").compute_dtype == torch.float16
    for name in FP32_IN_REFERENCE:
        assert precision_for(name, "cuda") == Precision(torch.float32, name == "motion_extractor")
    assert precision_for("decoder", "cuda").channels_last and precision_for("warp_network", "cuda").channels_last
    assert not precision_for("stitch_network", "cuda").channels_last  # an MLP: no memory format
    assert {precision_for(n, "cpu") for n in FP16_IN_REFERENCE | FP32_IN_REFERENCE} == {Precision()}
    with pytest.raises(ValueError, match="unknown network 'face_mesh'"):
        precision_for("face_mesh", "cuda")


def test_channels_last_preparation_keeps_the_results():
    expected_module = small_warp_network()
    inputs = small_warp_inputs()
    with torch.inference_mode():
        expected = expected_module(*inputs)
    network = DeviceNetwork("warp_network", small_warp_network(), "cpu", Precision(channels_last=True))
    conv3d = network.module.dense_motion_network.mask.weight
    conv2d = network.module.third.conv.weight
    assert conv3d.is_contiguous(memory_format=torch.channels_last_3d) and not conv3d.is_contiguous()
    assert conv2d.is_contiguous(memory_format=torch.channels_last) and not conv2d.is_contiguous()
    (result,) = network(*inputs)
    assert result.dtype == torch.float32
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-5)


def test_fp16_policy_keeps_grid_sampling_fp32(monkeypatch):
    """Under fp16 autocast the warp network's grid_sample calls get fp32 grids, so CUDA autocast
    (which promotes grid_sample to its widest input) samples in fp32, as the reference's TRT engine."""
    inputs = small_warp_inputs()
    with torch.inference_mode():
        expected = small_warp_network()(*inputs)
    grids = []
    grid_sample = torch.nn.functional.grid_sample

    def recording_grid_sample(volume, grid, *args, **kwargs):
        grids.append((volume.dtype, grid.dtype))
        return grid_sample(volume, grid, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "grid_sample", recording_grid_sample)
    network = DeviceNetwork("warp_network", small_warp_network(), "cpu", Precision(torch.float16))
    (result,) = network(*inputs)
    assert len(grids) == 2 and all(grid == torch.float32 for _, grid in grids)
    assert grids[0][0] == torch.float16  # the compressed feature came out of an fp16 convolution
    assert result.dtype == torch.float32
    torch.testing.assert_close(result, expected, rtol=0.05, atol=0.02)


def test_device_network_needs_a_torch_module():
    class OnnxLike:
        name = "decoder"
        device = "cpu"

    with pytest.raises(TypeError, match="not a torch-backend network"):
        DeviceNetwork.from_torch_network(OnnxLike())


# -- resident source and interop -------------------------------------------------------------------

def test_resident_source_holds_the_avatar_per_source_frame():
    avatar = synthetic_avatar(num_frames=2)
    resident = ResidentSource.from_avatar(avatar, "cpu")
    assert resident.num_frames == 2 and resident.frame_size == (96, 128) and not resident.is_image
    assert resident.f_s.shape == (2, 32, 16, 64, 64) and resident.f_s.dtype == torch.float32
    for i in range(2):
        np.testing.assert_array_equal(to_numpy(resident.f_s[i]), avatar.f_s[i, 0])
        np.testing.assert_array_equal(to_numpy(resident.frames[i]), avatar.frames[i])
        expected_kp = keypoint_transform(avatar.motion_info(i))[0].astype(np.float32)
        np.testing.assert_array_equal(to_numpy(resident.kp_source[i]), expected_kp)
    np.testing.assert_array_equal(resident.m_c2o, avatar.m_c2o)
    np.testing.assert_array_equal(to_numpy(resident.mask), MASK)


def test_numpy_and_dlpack_arrays_become_tensors_without_a_copy_on_the_cpu():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = as_device_tensor(array, "cpu")
    tensor[0, 0] = 42
    assert array[0, 0] == 42 and to_numpy(tensor)[0, 0] == 42

    class DlpackProducer:  # stands in for a CuPy array: only the DLPack protocol
        def __init__(self, tensor):
            self._tensor = tensor

        def __dlpack__(self, **kwargs):
            return self._tensor.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return self._tensor.__dlpack_device__()

    source = torch.zeros(4)
    viewed = as_device_tensor(DlpackProducer(source), "cpu")
    viewed += 1
    assert source.tolist() == [1, 1, 1, 1]
    with pytest.raises(TypeError, match="neither a NumPy array nor a DLPack producer"):
        as_device_tensor([1, 2], "cpu")


def test_to_cupy_explains_what_is_missing():
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="to_cupy needs CuPy"):
            to_cupy(torch.zeros(2))
    else:
        with pytest.raises(ValueError, match="CuPy arrays live on CUDA devices"):
            to_cupy(torch.zeros(2))


# -- paste-back ------------------------------------------------------------------------------------

PASTE_CASES = {
    "inside": crop_matrix(0.45, 0.0, 60.3, 20.7),
    "rotated": crop_matrix(0.52, 17.0, 190.2, -30.4),
    "over the edge": crop_matrix(0.7, -31.0, 250.0, 120.0),
    "upscaled": crop_matrix(1.3, 5.0, -300.0, -250.0),
    "outside": crop_matrix(0.3, 0.0, 900.0, 900.0),
}


@pytest.mark.parametrize("case", PASTE_CASES)
def test_torch_paste_back_matches_the_reference(case):
    rng = np.random.default_rng(len(case))
    frame = rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)
    render = rng.uniform(-0.1, 1.1, (1, 3, 512, 512)).astype(np.float32)  # out-of-range values get clipped
    m_c2o = PASTE_CASES[case]
    expected = full_frame_paste(frame, render_to_hwc(render), MASK, m_c2o)
    result = torch_paste_back(torch.from_numpy(frame), torch.from_numpy(render), torch.from_numpy(MASK), m_c2o)
    difference = np.abs(result.numpy().astype(int) - expected)
    assert difference.max() <= 1, f"{case}: {np.count_nonzero(difference)} pixels differ, up to {difference.max()}"
    if case == "outside":
        assert crop_footprint(m_c2o, (512, 512), (300, 420)).empty
        np.testing.assert_array_equal(result.numpy(), frame)


def test_paste_back_in_place_fp16_and_geometry_reuse():
    rng = np.random.default_rng(5)
    frame = rng.integers(0, 256, (200, 260, 3), dtype=np.uint8)
    render = rng.uniform(0, 1, (1, 3, 512, 512)).astype(np.float16)
    paste = TorchPasteBack()
    for m_c2o in (PASTE_CASES["inside"], PASTE_CASES["rotated"], PASTE_CASES["inside"]):
        expected = full_frame_paste(frame, render_to_hwc(render.astype(np.float32)), MASK, m_c2o)
        in_place = torch.from_numpy(frame.copy())
        returned = paste(in_place, torch.from_numpy(render), torch.from_numpy(MASK), m_c2o, out=in_place)
        assert returned is in_place
        assert np.abs(in_place.numpy().astype(int) - expected).max() <= 1
    with pytest.raises(ValueError, match="mask must be float32"):
        paste(torch.from_numpy(frame), torch.from_numpy(render), torch.from_numpy(MASK.astype(np.float64)),
              PASTE_CASES["inside"])
    assert isinstance(select_paste("cpu"), TorchPasteBack)


# -- streams and graphs ----------------------------------------------------------------------------

def test_streams_and_events_are_immediate_off_cuda():
    stream = DeviceStream("cpu")
    with stream.activate() as active:
        assert active is stream
    event = stream.record()
    assert event.query()
    event.synchronize()
    stream.wait(event)
    stream.wait_for_current()
    with pytest.raises(RuntimeError, match="before record"):
        DeviceEvent("cpu").query()


def test_graphs_capture_once_per_shape_and_replay_the_same_function():
    calls = []

    def fn(a, b):
        calls.append(tuple(a.shape))
        return a * 2 + b.sum(), a - 1

    capture = RecordingCapture()
    graphed = GraphedFunction(fn, capture)
    assert graphed.graphed
    rng = np.random.default_rng(0)
    for shape in [(2, 3), (4, 3), (2, 3), (4, 3), (2, 3)]:
        a, b = (torch.from_numpy(rng.normal(size=shape).astype(np.float32)) for _ in range(2))
        results = graphed(a, b)
        expected = fn(a, b)
        for result, wanted in zip(results, expected):
            torch.testing.assert_close(result, wanted, rtol=0, atol=0)
    assert capture.captured_shapes == [((2, 3), (2, 3)), ((4, 3), (4, 3))]
    assert capture.replays == 5
    assert len(graphed.captured) == 2

    # Replays hand back the graph's static outputs: the same tensors every time.
    a = torch.ones(2, 3)
    assert graphed(a, a)[0] is graphed(a, a)[0]

    graphed.enabled = False  # eager from now on, graphs released
    before = len(calls)
    out, _ = graphed(torch.ones(2, 3), torch.ones(2, 3))
    assert len(calls) == before + 1 and graphed.captured == () and not graphed.graphed
    torch.testing.assert_close(out, torch.full((2, 3), 8.0))

    graphed.enabled = True  # captures again on demand
    with graphed:
        graphed(torch.ones(2, 3), torch.ones(2, 3))
        assert len(capture.captured_shapes) == 3
    assert graphed.captured == ()  # leaving the block released them


def test_graphs_are_eager_without_a_capture_backend():
    assert default_capture("cpu") is None
    graphed = GraphedFunction(lambda x: x + 1, default_capture("cpu"))
    assert not graphed.graphed
    first, second = graphed(torch.zeros(2)), graphed(torch.zeros(2))
    assert first is not second and graphed.captured == ()
    with pytest.raises(TypeError, match="input 0 is a list"):
        GraphedFunction(lambda x: x, RecordingCapture())([1.0])


# -- ring writer -----------------------------------------------------------------------------------

def test_ring_writer_commits_frames_in_order():
    ring = FrameRing(4, 6, 5, 3, pinned=False)
    frames = [torch.full((6, 5, 3), 10 * i, dtype=torch.uint8) for i in range(3)]
    with RingWriter(ring, "cpu") as writer:
        for index, frame in enumerate(frames):
            writer.write(index, frame)
        with pytest.raises(ValueError, match=r"frame 9 is \(6, 5\) torch.uint8; the ring holds \(6, 5, 3\)"):
            writer.write(9, frames[0][..., 0])
    for got, sent in zip(take_frames(ring, 3), frames):
        np.testing.assert_array_equal(got, sent.numpy())
    assert ring.counts()["free"] == 4
    assert RingWriter(FrameRing(2, 6, 5, 3, pinned=False), "cpu", max_in_flight=8).max_in_flight == 1


# -- the batched render path -----------------------------------------------------------------------

def _toy_warp(f_s, kp_source, kp_driving):
    """Depends on every input and on the batch entry; cheap. (B, 1, 64, 64)."""
    shift = (kp_driving - kp_source).sum(dim=(1, 2))[:, None, None, None]
    return (f_s.mean(dim=(1, 2))[:, None] + shift,)


def _toy_decoder(feature):
    image = torch.sigmoid(torch.nn.functional.interpolate(feature, size=(512, 512), mode="nearest"))
    return (torch.cat([image, 1 - image, image * image], dim=1),)


def test_batches_gather_their_source_frames_and_graphs_change_nothing():
    avatar = synthetic_avatar(num_frames=3)
    resident = ResidentSource.from_avatar(avatar, "cpu")
    rng = np.random.default_rng(2)
    frames = [StitchedFrame(i, s, rng.normal(0, 0.3, (1, 21, 3)).astype(np.float32))
              for i, s in enumerate([0, 1, 2, 2, 1])]
    results = {}
    for graphs in (False, True):
        capture = RecordingCapture()
        renderer = BatchedRenderer(_toy_warp, _toy_decoder, resident, batch_size=2, graphs=graphs, capture=capture)
        ring = FrameRing(len(frames) + 1, 96, 128, 3, pinned=False)
        with RingWriter(ring, "cpu") as writer:
            renderer.render(frames, writer)
        results[graphs] = take_frames(ring, len(frames))
        assert len(capture.captured_shapes) == (2 if graphs else 0)  # batch sizes 2 and 1
    for graphed, eager in zip(results[True], results[False]):
        np.testing.assert_array_equal(graphed, eager)
    # Each frame as one would render it alone.
    for frame, got in zip(frames, results[False]):
        s = frame.source
        (feature,) = _toy_warp(resident.f_s[s:s + 1], resident.kp_source[s:s + 1], torch.from_numpy(frame.kp_driving))
        (image,) = _toy_decoder(feature)
        expected = torch_paste_back(resident.frames[s], image, resident.mask, avatar.m_c2o[s])
        np.testing.assert_array_equal(got, expected.numpy())
    with pytest.raises(ValueError, match="source frames \\[5\\] outside the source's 3 frames"):
        renderer.render_batch([StitchedFrame(0, 5, frames[0].kp_driving)], RingWriter(ring, "cpu"))


@pytest.fixture(scope="module")
def tiny_torch_renderer() -> Renderer:
    return Renderer(TINY, backend="torch")


@pytest.fixture(scope="module")
def video_avatar(tiny_torch_renderer, tmp_path_factory) -> Avatar:
    """The demo portrait registered, plus a second source frame: a darker background, a rotated
    and shrunk crop, and perturbed motion and features."""
    portrait, _ = write_demo_inputs(tmp_path_factory.mktemp("demo"), seconds=0.2)
    image = tiny_torch_renderer.register(portrait)
    rng = np.random.default_rng(3)
    height, width = image.frame_size
    centre = np.array([[1, 0, width / 2], [0, 1, height / 2], [0, 0, 1]])
    turn = crop_matrix(0.95, 6.0, 0, 0)
    second_crop = centre @ turn @ np.linalg.inv(centre) @ image.m_c2o[0]

    def two(array: np.ndarray, second: np.ndarray) -> np.ndarray:
        return np.concatenate([array, second[None].astype(array.dtype)])

    return Avatar(
        motion={k: two(v, v[0] + rng.normal(0, 0.02, v[0].shape)) for k, v in image.motion.items()},
        f_s=two(image.f_s, image.f_s[0] * 0.9), m_c2o=two(image.m_c2o, second_crop),
        eye_open=two(image.eye_open, image.eye_open[0]), eye_ball=two(image.eye_ball, image.eye_ball[0]),
        sc=image.sc, frames=two(image.frames, image.frames[0] // 2), is_image=False,
    )


def test_batched_render_equals_the_per_frame_renderer(tiny_torch_renderer, video_avatar):
    """Two frames (sources 0 and 1) as one batch against FrameRenderer, torch backend (ragged
    batches are covered by the toy networks above; these networks cost seconds per frame)."""
    networks, avatar = tiny_torch_renderer.networks, video_avatar
    options = tiny_torch_renderer.options(seed=0)
    rng = np.random.default_rng(4)
    neutral = motion_dict_to_vector(avatar.motion_info(0))
    motions = [motion_vector_to_dict(neutral + rng.normal(0, 0.05, neutral.shape).astype(np.float32))
               for _ in range(2)]
    height, width = avatar.frame_size

    per_frame = FrameRenderer(networks, avatar, options, len(motions))
    ring = FrameRing(len(motions) + 1, height, width, 3, pinned=False)
    per_frame.render_clip_into(ring, 0, np.stack([motion_dict_to_vector(m) for m in motions]))
    expected = take_frames(ring, len(motions))

    batched = BatchedRenderer.from_networks(networks, avatar, batch_size=2)
    stitch = FrameRenderer(networks, avatar, options, len(motions))
    ring = FrameRing(len(motions) + 1, height, width, 3, pinned=False)
    with RingWriter(ring, batched.device) as writer:
        blocks = [np.stack([motion_dict_to_vector(m) for m in motions])]
        batched.render(stitched_frames(stitch, blocks), writer)
    rendered = take_frames(ring, len(motions))

    for index, (got, wanted) in enumerate(zip(rendered, expected)):
        difference = np.abs(got.astype(int) - wanted)
        assert difference.max() <= 1, f"frame {index}: {np.count_nonzero(difference)} values differ, " \
                                      f"up to {difference.max()}"
    assert not np.array_equal(rendered[0], rendered[1])  # the frames do differ (sources 0 and 1)


def test_renderer_frame_batch_uses_the_batched_path(tmp_path):
    """`Renderer(frame_batch=3)` renders through BatchedRenderer (a full batch, then a ragged one)
    and gives the per-frame renderer's frames within ±1 grey level."""
    from ditto_fast import Renderer
    from ditto_fast.demo import demo_speech
    from ditto_fast.gpu import batched_render

    portrait, _ = write_demo_inputs(tmp_path, seconds=1.0)
    per_frame = Renderer(TINY, backend="torch")
    batched = Renderer(TINY, backend="torch", frame_batch=3)
    avatar = per_frame.register(portrait)
    audio = demo_speech(0.16)  # 4 frames
    batches = []
    real = batched_render.BatchedRenderer.render_batch
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batched_render.BatchedRenderer, "render_batch",
                      lambda self, frames, writer: (batches.append(len(frames)), real(self, frames, writer)))
        got = [frame.rgb.copy() for frame in batched.render(avatar, audio, seed=0, sampling_timesteps=5)]
    expected = [frame.rgb.copy() for frame in per_frame.render(avatar, audio, seed=0, sampling_timesteps=5)]
    assert batches == [3, 1]
    assert len(got) == len(expected) == 4
    assert max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(got, expected)) <= 1
    with pytest.raises(ValueError, match="frame_batch=2 needs the torch backend, not onnxruntime"):
        Renderer(TINY, backend="onnxruntime", frame_batch=2)
