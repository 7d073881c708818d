"""Hoisted LMDM sampling: `DDIMSampler` through a network's clip sampling (torch backend and the
exported hoisted ONNX graphs) gives the x0 of the plain per-step `GuidedLMDM` loop, plain
networks keep the per-step call, and misuse fails with messages that name the problem.

Tiny LMDM (models.TINY_KWARGS) with random weights, written like an official checkpoint.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from ditto_fast.backends.clip_sampling import clip_sampling_of  # noqa: E402
from ditto_fast.backends.onnx_clip_sampling import HoistedLmdmFiles  # noqa: E402
from ditto_fast.backends.onnxruntime import OnnxRuntimeNetwork  # noqa: E402
from ditto_fast.backends.torch import TorchNetwork  # noqa: E402
from ditto_fast.diffusion_schedule import ddim_tables  # noqa: E402
from ditto_fast.models.lmdm_hoisted import GuidedStepFromCache  # noqa: E402
from ditto_fast.stages.motion import CLIP_SHAPE, DDIMSampler, GaussianNoise  # noqa: E402
from ditto_fast.tools.export import ONNX_NAMES, export_network  # noqa: E402
from ditto_fast.tools.synthetic.torch_checkpoints import write_checkpoint  # noqa: E402

FULL_LOOP = 50  # the default number of sampling steps
TOLERANCE = 1e-5  # max |x0 hoisted − x0 plain|: only float summation order differs


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny model's matrices are too small for threads to pay; on a busy machine they cost seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lmdm_pth(tmp_path_factory):
    path = tmp_path_factory.mktemp("pytorch") / "lmdm_v0.4_hubert.pth"
    write_checkpoint("lmdm", path, "tiny", seed=5)
    return path


@pytest.fixture(scope="module")
def torch_lmdm(lmdm_pth) -> TorchNetwork:
    return TorchNetwork("lmdm", lmdm_pth)


@pytest.fixture(scope="module")
def exported(lmdm_pth, tmp_path_factory):
    """An ONNX folder holding the contract LMDM graph and its hoisted graphs."""
    out = tmp_path_factory.mktemp("onnx")
    export_network("lmdm", lmdm_pth, out)
    return out / ONNX_NAMES["lmdm"]


@pytest.fixture(scope="module")
def onnx_lmdm(exported) -> OnnxRuntimeNetwork:
    return OnnxRuntimeNetwork("lmdm", exported)


@pytest.fixture(scope="module")
def clip_inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """kp_cond (1, 265), cond (1, 80, 1103), x_T (1, 80, 265)."""
    rng = np.random.default_rng(2)
    return (rng.normal(0, 0.3, (1, 265)).astype(np.float32), rng.normal(0, 0.3, (1, 80, 1103)).astype(np.float32),
            GaussianNoise(3).draw())


class PlainCalls:
    """Only the `Network` call of `network`, counted: the sampler cannot see its clip sampling."""

    def __init__(self, network) -> None:
        self.network = network
        self.calls = 0

    def __call__(self, **arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        self.calls += 1
        return self.network(**arrays)


class CountedClipSampling:
    """`network`'s clip sampling, counted, with its plain call forbidden."""

    def __init__(self, network) -> None:
        self.inner = network.clip_sampling
        assert self.inner is not None, f"{network!r} offers no clip sampling"
        self.clip_sampling = self
        self.clips = self.steps = 0

    def __call__(self, **arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        raise AssertionError("plain LMDM call although the network offers clip sampling")

    def prepare_clip(self, *args):
        self.clips += 1
        return self.inner.prepare_clip(*args)

    def guided_step(self, *args):
        self.steps += 1
        return self.inner.guided_step(*args)


def plain_x0(network, steps: int, clip_inputs) -> np.ndarray:
    plain = PlainCalls(network)
    x0 = DDIMSampler.drawn_from(steps, GaussianNoise(4)).sample(plain, *clip_inputs)
    assert plain.calls == steps
    return x0


def hoisted_x0(network, steps: int, clip_inputs) -> np.ndarray:
    counted = CountedClipSampling(network)
    x0 = DDIMSampler.drawn_from(steps, GaussianNoise(4)).sample(counted, *clip_inputs)
    assert (counted.clips, counted.steps) == (1, steps)
    return x0


@pytest.fixture(scope="module")
def guided_x0(torch_lmdm, clip_inputs) -> dict[int, np.ndarray]:
    """x0 of the plain GuidedLMDM loop (torch), by number of steps."""
    return {steps: plain_x0(torch_lmdm, steps, clip_inputs) for steps in (FULL_LOOP, 7)}


@pytest.mark.parametrize("steps", [FULL_LOOP, 7])
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_hoisted_sampling_gives_the_guided_lmdm_x0(request, backend, steps, clip_inputs, guided_x0):
    network = request.getfixturevalue(f"{backend}_lmdm")
    x0 = hoisted_x0(network, steps, clip_inputs)
    assert np.abs(x0 - guided_x0[steps]).max() <= TOLERANCE


def test_the_tolerance_is_far_below_what_the_inputs_change(torch_lmdm, clip_inputs, guided_x0):
    kp_cond, cond, x_T = clip_inputs
    other = hoisted_x0(torch_lmdm, FULL_LOOP, (kp_cond, cond + 0.01, x_T))
    assert np.abs(other - guided_x0[FULL_LOOP]).max() > 100 * TOLERANCE


def test_torch_reuses_the_schedule_while_the_time_table_is_unchanged(torch_lmdm, clip_inputs):
    kp_cond, cond, _ = clip_inputs
    sampling = torch_lmdm.clip_sampling
    table = ddim_tables(FULL_LOOP).time_cond
    first = sampling.prepare_clip(kp_cond, cond, table)
    second = sampling.prepare_clip(kp_cond + 1, cond, table.copy())
    assert second.time_keys is first.time_keys
    other = sampling.prepare_clip(kp_cond, cond, ddim_tables(7).time_cond)
    assert other.time_keys is not first.time_keys and other.time_keys.shape[1] == 7


def test_plain_networks_are_called_once_per_step(clip_inputs):
    sampler = DDIMSampler.drawn_from(5, GaussianNoise(0))
    seen = []

    def lmdm(*, x, cond_frame, cond, time_cond):
        seen.append(time_cond)
        return np.zeros(CLIP_SHAPE, np.float32), x

    sampler.sample(lmdm, *clip_inputs)
    assert [t.dtype for t in seen] == [np.int64] * 5 and [t.shape for t in seen] == [(1,)] * 5
    assert [int(t[0]) for t in seen] == list(sampler.tables.time_cond)


def test_a_tree_without_hoisted_graphs_runs_the_plain_graph(exported, tmp_path, clip_inputs, guided_x0):
    shutil.copy(exported, tmp_path / exported.name)  # an official ditto_onnx/ has only this file
    network = OnnxRuntimeNetwork("lmdm", tmp_path / exported.name)
    assert network.clip_sampling is None and clip_sampling_of(network) is None
    x0 = DDIMSampler.drawn_from(FULL_LOOP, GaussianNoise(4)).sample(network, *clip_inputs)
    assert np.abs(x0 - guided_x0[FULL_LOOP]).max() <= TOLERANCE


def test_an_object_that_is_not_clip_sampling_is_refused():
    class Odd:
        clip_sampling = "hoisted"

    with pytest.raises(TypeError, match="clip_sampling is a str, which lacks prepare_clip"):
        clip_sampling_of(Odd())


def test_an_export_whose_hoisted_step_is_wrong_is_caught(lmdm_pth, tmp_path, monkeypatch):
    import ditto_fast.tools.export as export

    class ShiftedStep(GuidedStepFromCache):
        def forward(self, *inputs):
            pred_noise, x_start = super().forward(*inputs)
            return pred_noise, x_start + 1.0

    monkeypatch.setattr(export, "GuidedStepFromCache", ShiftedStep)
    with pytest.raises(ValueError, match="exported lmdm differs from torch"):
        export_network("lmdm", lmdm_pth, tmp_path)


def test_one_hoisted_graph_without_the_other_is_refused(exported, tmp_path):
    files = HoistedLmdmFiles.beside(exported)
    shutil.copy(exported, tmp_path / exported.name)
    shutil.copy(files.prepare, tmp_path / files.prepare.name)
    missing = tmp_path / files.step.name
    with pytest.raises(FileNotFoundError, match=f"{missing}: missing, but {files.prepare.name} is there"):
        OnnxRuntimeNetwork("lmdm", tmp_path / exported.name)


def test_a_hoisted_graph_with_other_tensors_is_refused(exported, tmp_path):
    files = HoistedLmdmFiles.beside(exported)
    shutil.copy(exported, tmp_path / exported.name)
    shutil.copy(files.prepare, tmp_path / files.prepare.name)
    shutil.copy(files.prepare, tmp_path / files.step.name)  # the wrong graph under the step's name
    with pytest.raises(ValueError, match=f"{tmp_path / files.step.name}: hoisted LMDM graph inputs are"):
        OnnxRuntimeNetwork("lmdm", tmp_path / exported.name)


def test_hoisted_graphs_beside_another_lmdm_graph_are_refused(exported, tmp_path):
    files = HoistedLmdmFiles.beside(exported)
    other = onnx.load(str(exported))  # other weights under the same name, as an official file copied over it
    bias = next(i for i in other.graph.initializer if len(i.dims) == 1)
    bias.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(bias) + 1.0, bias.name))
    onnx.save(other, str(tmp_path / exported.name))
    for path in (files.prepare, files.step):
        shutil.copy(path, tmp_path / path.name)
    with pytest.raises(ValueError, match=f"{tmp_path / files.prepare.name}: not exported with the LMDM graph beside"):
        OnnxRuntimeNetwork("lmdm", tmp_path / exported.name)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_step_outside_the_time_table_is_refused(request, backend, clip_inputs):
    sampling = request.getfixturevalue(f"{backend}_lmdm").clip_sampling
    kp_cond, cond, x_T = clip_inputs
    clip = sampling.prepare_clip(kp_cond, cond, ddim_tables(7).time_cond)
    with pytest.raises(IndexError, match="step 7 is outside the clip's time table of 7 steps"):
        sampling.guided_step(x_T, clip, 7)
