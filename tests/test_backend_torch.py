"""torch backend: layout recognition, strict loading with folding, the Network protocol."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ditto_fast.backends.base import Network  # noqa: E402
from ditto_fast.backends.torch import TorchNetwork  # noqa: E402
from ditto_fast.contract import MODELS  # noqa: E402
from ditto_fast.models import TINY_KWARGS, build_network  # noqa: E402
from ditto_fast.safe_pickle import UnsafePickleError  # noqa: E402


def save_checkpoint(tmp_path, name: str, module) -> str:
    """Write `module` in the official checkpoint format of `name`."""
    state = module.state_dict()
    if name == "stitch_network":  # official: a DataParallel state dict under this key
        state = {"retarget_shoulder": {f"module.{k}": v for k, v in state.items()}}
    if name == "lmdm":  # official: a training checkpoint holding the MotionDecoder
        state = {"model_state_dict": module.model.state_dict(), "epoch": 0}
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    return path


def contract_inputs(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {t.name: rng.uniform(-0.5, 0.5, t.shape).astype(t.dtype) for t in MODELS[name].inputs}
    if name == "lmdm":
        arrays["time_cond"] = np.array([979], np.int64)
    return arrays


def randomise_batch_norms(module) -> None:
    # Fresh BatchNorms have identity statistics; random ones make the folding observable.
    generator = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)


@pytest.mark.parametrize("name", ["appearance_extractor", "warp_network", "stitch_network", "lmdm"])
def test_tiny_checkpoint_runs_like_the_unfolded_module(tmp_path, name):
    torch.manual_seed(0)
    reference = build_network(name, **TINY_KWARGS[name])
    randomise_batch_norms(reference)
    reference.eval()
    net = TorchNetwork(name, save_checkpoint(tmp_path, name, reference))
    assert isinstance(net, Network)
    assert net.layout == "synthetic-tiny"
    inputs = contract_inputs(name)
    with torch.no_grad():
        expected = reference(*(torch.from_numpy(inputs[t.name]) for t in MODELS[name].inputs))
    expected = expected if isinstance(expected, tuple) else (expected,)
    outputs = net(**inputs)
    assert len(outputs) == len(expected)
    for out, want in zip(outputs, expected):
        np.testing.assert_allclose(out, want.numpy(), rtol=1e-4, atol=1e-5)
    assert [t.shape for t in net.outputs] == [t.shape for t in MODELS[name].outputs]


@pytest.mark.parametrize("name", ["appearance_extractor", "stitch_network", "lmdm"])
def test_official_layout_is_recognised(tmp_path, name):
    net = TorchNetwork(name, save_checkpoint(tmp_path, name, build_network(name)))
    assert net.layout == "official"


def test_other_layouts_are_refused_with_the_first_difference(tmp_path):
    odd = build_network("stitch_network", hidden_sizes=(32, 32, 8))
    path = save_checkpoint(tmp_path, "stitch_network", odd)
    with pytest.raises(ValueError) as info:
        TorchNetwork("stitch_network", path)
    message = str(info.value)
    assert message.startswith(f"{path}: stitch_network checkpoint matches no known layout")
    assert "key 'mlp.0.weight' is [32, 126], expected [128, 126]" in message


def test_unsafe_and_corrupt_checkpoints(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch /tmp/ditto_fast_pwned_pth",))

    evil = tmp_path / "decoder.pth"
    torch.save({"x": Payload()}, evil)
    with pytest.raises(UnsafePickleError, match="decoder.pth: refusing to load.*may be unsafe"):
        TorchNetwork("decoder", evil)
    assert not os.path.exists("/tmp/ditto_fast_pwned_pth")
    junk = tmp_path / "warp_network.pth"
    junk.write_bytes(b"junk")
    with pytest.raises(ValueError, match="warp_network.pth: not a readable PyTorch checkpoint"):
        TorchNetwork("warp_network", junk)
    with pytest.raises(FileNotFoundError, match="model file of decoder is missing"):
        TorchNetwork("decoder", tmp_path / "none.pth")
    with pytest.raises(ValueError, match="the torch backend has no module for 'hubert'"):
        TorchNetwork("hubert", evil)
