"""One LMDM clip (50 DDIM steps) at full size (random weights) on the CPU: the plain per-step
guided call against hoisted clip sampling, for the torch backend and for the ONNX graphs
`export_network` writes (onnxruntime), side by side.

Both runtimes run with one intra-op thread: the comparison of interest is plain against hoisted
on the same runtime, and on a small shared machine a second thread mostly measures the other
processes (with two threads on a busy 2-core VM, torch's plain clip took minutes). The hoisted
torch rounds include the one schedule precomputation a sampler's first clip pays.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ditto_fast.backends.onnxruntime import OnnxRuntimeNetwork  # noqa: E402
from ditto_fast.backends.torch import TorchNetwork  # noqa: E402
from ditto_fast.stages.motion import DDIMSampler, GaussianNoise  # noqa: E402
from ditto_fast.tools.export import ONNX_NAMES, export_network  # noqa: E402
from ditto_fast.tools.synthetic.torch_checkpoints import write_checkpoint  # noqa: E402

STEPS = 50
ROUNDS = 2  # a full-size clip takes seconds; the whole suite stays under 3 minutes


class PlainCall:
    """Only the per-step `Network` call of a network, hiding its clip sampling from the sampler."""

    def __init__(self, network) -> None:
        self.network = network

    def __call__(self, **arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.network(**arrays)


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("lmdm")
    pth = folder / "lmdm_v0.4_hubert.pth"
    write_checkpoint("lmdm", pth, "full", seed=0)
    export_network("lmdm", pth, folder)  # the contract graph and the hoisted pair, checked against torch
    yield {"torch": TorchNetwork("lmdm", pth), "onnxruntime": OnnxRuntimeNetwork("lmdm", folder / ONNX_NAMES["lmdm"],
                                                                                  threads=1)}
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clip() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """kp_cond (1, 265), cond (1, 80, 1103), x_T (1, 80, 265)."""
    rng = np.random.default_rng(0)
    return (rng.normal(0, 0.3, (1, 265)).astype(np.float32), rng.normal(0, 0.3, (1, 80, 1103)).astype(np.float32),
            GaussianNoise(1).draw())


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
@pytest.mark.parametrize("sampling", ["plain", "hoisted"])
def test_lmdm_clip(benchmark, networks, clip, runtime, sampling):
    network = networks[runtime]
    assert network.clip_sampling is not None, f"{network!r} offers no hoisted sampling"
    lmdm = network if sampling == "hoisted" else PlainCall(network)
    sampler = DDIMSampler.drawn_from(STEPS, GaussianNoise(2))
    benchmark.group = f"LMDM clip of {STEPS} steps, {runtime}"
    benchmark.pedantic(sampler.sample, args=(lmdm, *clip), rounds=ROUNDS, iterations=1)
    if benchmark.stats is not None:  # None under --benchmark-disable: nothing was timed
        benchmark.extra_info.update(seconds_per_step=benchmark.stats["mean"] / STEPS)
