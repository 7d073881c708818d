"""The device side of the one frame renderer (pipeline/frames.py on torch executors) and the
runtime under it (ditto_fast.runtime), exercised on the CPU.

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
from ditto_fast.avatar import MOTION_INFO_SHAPES  # noqa: E402
from ditto_fast.backends.torch import TorchExecutor  # noqa: E402
from ditto_fast.models.warp import WarpingNetwork  # noqa: E402
from ditto_fast.ops.paste_back import PasteBack, paste_mask, render_to_hwc  # noqa: E402
from ditto_fast.ops.paste_geometry import crop_footprint  # noqa: E402
from ditto_fast.ops.paste_torch import TorchPasteBack, torch_paste_back  # noqa: E402
from ditto_fast.pipeline.device_source import DeviceSource  # noqa: E402
from ditto_fast.pipeline.frames import FrameRenderer  # noqa: E402
from ditto_fast.runtime.graphs import GraphedFunction, default_capture  # noqa: E402
from ditto_fast.runtime.precision import (  # noqa: E402
    FP16_IN_REFERENCE,
    FP32_IN_REFERENCE,
    Precision,
    precision_for,
    prepare_module,
    run_under,
)
from ditto_fast.runtime.ring_writer import DeviceRingWriter, HostRingWriter, ring_writer  # noqa: E402
from ditto_fast.runtime.streams import DeviceEvent, DeviceStream  # noqa: E402
from ditto_fast.runtime.transfers import as_device_tensor  # noqa: E402
from ditto_fast.stages.motion import motion_dict_to_vector  # noqa: E402
from ditto_fast.tools.demo import write_demo_inputs  # noqa: E402

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
    precision = Precision(channels_last=True)
    module = prepare_module(small_warp_network(), "cpu", precision)
    conv3d = module.dense_motion_network.mask.weight
    conv2d = module.third.conv.weight
    assert conv3d.is_contiguous(memory_format=torch.channels_last_3d) and not conv3d.is_contiguous()
    assert conv2d.is_contiguous(memory_format=torch.channels_last) and not conv2d.is_contiguous()
    (result,) = run_under(precision, module, *inputs)
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
    precision = Precision(torch.float16)
    (result,) = run_under(precision, prepare_module(small_warp_network(), "cpu", precision), *inputs)
    assert len(grids) == 2 and all(grid == torch.float32 for _, grid in grids)
    assert grids[0][0] == torch.float16  # the compressed feature came out of an fp16 convolution
    assert result.dtype == torch.float32
    torch.testing.assert_close(result, expected, rtol=0.05, atol=0.02)


# -- the source on the device ----------------------------------------------------------------------

def test_device_source_views_the_avatar_on_the_host_and_uploads_it_for_torch():
    avatar = synthetic_avatar(num_frames=2)
    host = DeviceSource.from_avatar(avatar)
    assert host.num_frames == 2 and host.frame_size == (96, 128) and host.f_s.shape == (2, 32, 16, 64, 64)
    assert np.shares_memory(host.f_s, avatar.f_s) and np.shares_memory(host.frames, avatar.frames)
    one = host.host_features([1])
    assert one.shape == (1, 32, 16, 64, 64) and np.shares_memory(one, avatar.f_s)  # batch 1: a view
    np.testing.assert_array_equal(host.host_features([1, 0]), avatar.f_s[[1, 0], 0])
    device = DeviceSource.from_avatar(avatar, "torch", "cpu")
    assert device.f_s.dtype == torch.float32
    for i in range(2):
        np.testing.assert_array_equal(device.f_s[i].numpy(), avatar.f_s[i, 0])
        np.testing.assert_array_equal(device.frames[i].numpy(), avatar.frames[i])
    np.testing.assert_array_equal(device.m_c2o, avatar.m_c2o)
    with pytest.raises(ValueError, match="array_kind must be 'numpy' or 'torch', got 'cupy'"):
        DeviceSource.from_avatar(avatar, "cupy")


def test_numpy_and_dlpack_arrays_become_tensors_without_a_copy_on_the_cpu():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = as_device_tensor(array, "cpu")
    tensor[0, 0] = 42
    assert array[0, 0] == 42 and tensor.cpu().numpy()[0, 0] == 42

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
    # The one paste-back entry runs the torch version on CPU tensors and the C++ kernel on arrays.
    on_tensors = PasteBack()(torch.from_numpy(frame), torch.from_numpy(render), PASTE_CASES["inside"])
    on_arrays = PasteBack()(frame, render.astype(np.float32), PASTE_CASES["inside"])
    assert np.abs(on_tensors.numpy().astype(int) - on_arrays).max() <= 1


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


# -- ring writers ----------------------------------------------------------------------------------

def test_device_ring_writer_copies_reuses_its_buffers_and_commits_in_order():
    ring = FrameRing(4, 6, 5, 3, pinned=False)
    committed = []
    with DeviceRingWriter(ring, "cpu", max_in_flight=2, committed=committed.append) as writer:
        buffers = []
        for index in range(3):
            with writer.frame(index) as out:
                assert tuple(out.shape) == (6, 5, 3) and out.dtype == torch.uint8
                out.fill_(10 * index)
                buffers.append(out.data_ptr())
        with pytest.raises(RuntimeError, match="exploded"), writer.frame(3):
            raise RuntimeError("exploded")  # its buffer is given back, nothing is committed
    assert committed == [0, 1, 2]
    assert len(set(buffers)) < 3  # a buffer whose copy landed is reused, not reallocated
    for index, got in enumerate(take_frames(ring, 3)):
        assert (got == 10 * index).all()
    assert ring.counts()["free"] == 4
    assert DeviceRingWriter(FrameRing(2, 6, 5, 3, pinned=False), "cpu", max_in_flight=8).max_in_flight == 1


def test_host_ring_writer_hands_out_the_slot_itself():
    ring = FrameRing(2, 6, 5, 3, pinned=False)
    committed = []
    writer = ring_writer(ring, "numpy", committed=committed.append)
    assert isinstance(writer, HostRingWriter)
    with writer.frame(0) as out:
        out[...] = 7
    with pytest.raises(RuntimeError, match="exploded"), writer.frame(1):
        raise RuntimeError("exploded")
    assert committed == [0] and (take_frames(ring, 1)[0] == 7).all()
    assert isinstance(ring_writer(ring, "torch", "cpu"), DeviceRingWriter)


# -- the frame renderer on torch executors ---------------------------------------------------------

class ToyExecutor:
    """A torch-kind executor of a cheap function that depends on every input and batch entry."""

    array_kind = "torch"
    device = "cpu"

    def __init__(self, fn, inputs) -> None:
        self.fn, self.input_names, self.batches = fn, inputs, []

    def executor(self):
        return self

    def __call__(self, **tensors):
        self.batches.append(int(next(iter(tensors.values())).shape[0]))
        return self.fn(*(tensors[name] for name in self.input_names))


def _toy_warp(f_s, kp_source, kp_driving):
    """(B, 1, 64, 64)."""
    shift = (kp_driving - kp_source).sum(dim=(1, 2))[:, None, None, None]
    return (f_s.mean(dim=(1, 2))[:, None] + shift,)


def _toy_decoder(feature):
    image = torch.sigmoid(torch.nn.functional.interpolate(feature, size=(512, 512), mode="nearest"))
    return (torch.cat([image, 1 - image, image * image], dim=1),)


def toy_networks(stitch_network):
    return {"stitch_network": stitch_network,
            "warp_network": ToyExecutor(_toy_warp, ("feature_3d", "kp_source", "kp_driving")),
            "decoder": ToyExecutor(_toy_decoder, ("feature",))}


def render_frames(networks, avatar, options, motion, **renderer_options) -> list[np.ndarray]:
    renderer = FrameRenderer(networks, avatar, options, len(motion), **renderer_options)
    height, width = avatar.frame_size
    ring = FrameRing(len(motion) + 1, height, width, 3, pinned=False)
    with renderer.writer(ring) as writer:
        renderer.render_block(writer, 0, motion)
    return take_frames(ring, len(motion))


def neutral_motion(avatar: Avatar, frames: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    neutral = motion_dict_to_vector(avatar.motion_info(0))
    return np.stack([neutral + rng.normal(0, 0.05, neutral.shape).astype(np.float32) for _ in range(frames)])


def test_batches_and_graphs_change_nothing_and_a_short_batch_reuses_the_graph(tiny_torch_renderer):
    avatar = synthetic_avatar(num_frames=3)
    options = tiny_torch_renderer.options(seed=0)
    motion = neutral_motion(avatar, 5, seed=2)
    stitch = tiny_torch_renderer.networks["stitch_network"]
    alone = render_frames(toy_networks(stitch), avatar, options, motion)
    capture = RecordingCapture()
    networks = toy_networks(stitch)
    graphed = render_frames(networks, avatar, options, motion, batch_size=2, capture=capture)
    eager = render_frames(toy_networks(stitch), avatar, options, motion, batch_size=2, graphs=False)
    # Batches 2, 2 and a last one of 1 padded to 2: one captured shape serves all three.
    assert len(capture.captured_shapes) == 1 and capture.captured_shapes[0][0][0] == 2
    assert networks["warp_network"].batches == [2, 2, 2, 2]  # the capture, then three replays
    for index, (a, b, c) in enumerate(zip(alone, graphed, eager)):
        np.testing.assert_array_equal(a, b, err_msg=f"frame {index}")
        np.testing.assert_array_equal(a, c, err_msg=f"frame {index}")
    assert not np.array_equal(alone[0], alone[1])


def test_warp_and_decoder_must_share_a_device(tiny_torch_renderer):
    networks = toy_networks(tiny_torch_renderer.networks["stitch_network"])
    networks["decoder"].device = "cuda:1"
    with pytest.raises(ValueError, match="the warp network runs on cpu .torch., the decoder on cuda:1"):
        FrameRenderer(networks, synthetic_avatar(), tiny_torch_renderer.options(seed=0), 2)


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


class HostOnly:
    """A network seen through the NumPy protocol alone: the frame renderer runs it on the host."""

    def __init__(self, network) -> None:
        self.network = network

    def __call__(self, **arrays):
        return self.network(**arrays)


def test_device_path_equals_the_host_path(tiny_torch_renderer, video_avatar):
    """The same torch networks through the host path (NumPy, C++ paste-back into the slot) and the
    device path (torch tensors, torch paste-back, copy into the slot), at batch 1 and as one batch
    of two (sources 0 and 1): equal within the ±1 of batched convolutions."""
    networks, avatar = tiny_torch_renderer.networks, video_avatar
    options = tiny_torch_renderer.options(seed=0)
    motion = neutral_motion(avatar, 2, seed=4)
    host_networks = {name: HostOnly(networks[name]) for name in ("warp_network", "decoder")}
    host = render_frames({**host_networks, "stitch_network": networks["stitch_network"]}, avatar, options, motion)
    for batch_size in (1, 2):
        device = render_frames(networks, avatar, options, motion, batch_size=batch_size)
        for index, (got, wanted) in enumerate(zip(device, host)):
            difference = np.abs(got.astype(int) - wanted)
            assert difference.max() <= 1, f"batch {batch_size}, frame {index}: {np.count_nonzero(difference)} " \
                                          f"values differ, up to {difference.max()}"
    assert not np.array_equal(host[0], host[1])  # the frames do differ (sources 0 and 1)


def test_renderer_frame_batch_batches_offline_and_live(tmp_path):
    """`Renderer(frame_batch=3)` runs warp and decoder three frames at a time (a full batch, then
    a ragged one: no graphs off CUDA) offline and live, within ±1 of batch 1."""
    from ditto_fast.tools.demo import demo_speech

    portrait, _ = write_demo_inputs(tmp_path, seconds=1.0)
    per_frame = Renderer(TINY, backend="torch")
    batched = Renderer(TINY, backend="torch", frame_batch=3)
    avatar = per_frame.register(portrait)
    audio = demo_speech(0.16)  # 4 frames
    batches = []
    real = TorchExecutor.__call__

    def recording(self, **tensors):
        if self.network.name == "warp_network":
            batches.append(int(tensors["feature_3d"].shape[0]))
        return real(self, **tensors)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TorchExecutor, "__call__", recording)
        got = [frame.rgb.copy() for frame in batched.render(avatar, audio, seed=0, sampling_timesteps=5)]
        assert batches == [3, 1]
        batches.clear()
        with batched.stream(avatar, seed=0, sampling_timesteps=5) as stream:
            stream.push(audio)
            stream.end()
            live = sum(1 for _ in stream.frames(timeout=60))
        assert live > 0 and max(batches) == 3
    expected = [frame.rgb.copy() for frame in per_frame.render(avatar, audio, seed=0, sampling_timesteps=5)]
    assert len(got) == len(expected) == 4
    assert max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(got, expected)) <= 1


def test_a_batch_the_onnx_files_cannot_take_renders_one_frame_at_a_time(tmp_path, caplog):
    """The synthetic (and official) warp ONNX has a fixed batch of one: frame_batch is capped there,
    said in the log, and the frames are the per-frame path's, byte for byte."""
    from ditto_fast.tools.demo import demo_speech

    portrait, _ = write_demo_inputs(tmp_path, seconds=1.0)
    one, many = Renderer(TINY), Renderer(TINY, frame_batch=2)
    avatar = one.register(portrait)
    audio = demo_speech(0.12)
    with caplog.at_level("WARNING", logger="ditto_fast.pipeline.frames"):
        got = [frame.rgb.copy() for frame in many.render(avatar, audio, seed=0, sampling_timesteps=5)]
    assert "takes batches of 1 frames only" in caplog.text
    expected = [frame.rgb.copy() for frame in one.render(avatar, audio, seed=0, sampling_timesteps=5)]
    assert all(np.array_equal(a, b) for a, b in zip(got, expected)) and len(got) == len(expected)
