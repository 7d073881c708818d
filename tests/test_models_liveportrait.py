"""The five LivePortrait-derived networks: checkpoint layout, I/O contract, folding, warp geometry, stitching.

Full-size networks are only built on the meta device (keys, shapes, parameter counts); every
forward pass uses the TINY_KWARGS variants.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from torch import nn

from conftest import REFERENCE
from ditto_fast.models import NETWORK_CLASSES, TINY_KWARGS, build_network
from ditto_fast.models.checkpoint_format import STITCH_ENTRY, load_state
from ditto_fast.models.folding import fold_batch_norm_into_conv, fold_for_inference, fold_spectral_norms
from ditto_fast.models.warp import identity_grid, keypoint_gaussians, sample_volume

REF_DIR = REFERENCE
# LMDM has its own tests (test_models_lmdm.py): its checkpoint holds the inner MotionDecoder.
NAMES = [name for name in NETWORK_CLASSES if name != "lmdm"]
NUM_KP = 21

# (inputs, outputs) shapes of the I/O contract, batch 1, float32.
CONTRACT: dict[str, tuple[list[tuple[int, ...]], list[tuple[int, ...]]]] = {
    "appearance_extractor": ([(1, 3, 256, 256)], [(1, 32, 16, 64, 64)]),
    "motion_extractor": ([(1, 3, 256, 256)], [(1, 66), (1, 66), (1, 66), (1, 3), (1, 63), (1, 1), (1, 63)]),
    "warp_network": ([(1, 32, 16, 64, 64), (1, NUM_KP, 3), (1, NUM_KP, 3)], [(1, 256, 64, 64)]),
    "decoder": ([(1, 256, 64, 64)], [(1, 3, 512, 512)]),
    "stitch_network": ([(1, NUM_KP, 3), (1, NUM_KP, 3)], [(1, NUM_KP, 3)]),
}


def reference_json(name: str) -> dict:
    path = REF_DIR / name
    if not path.is_file():
        pytest.skip(f"{path} is not available on this machine")
    return json.loads(path.read_text())


def contract_inputs(name: str, generator: torch.Generator) -> list[torch.Tensor]:
    """Random inputs in each tensor's natural range: images in [0,1], keypoints in [-0.8,0.8]."""
    inputs = []
    for shape in CONTRACT[name][0]:
        if len(shape) == 3:  # keypoints
            inputs.append(torch.rand(shape, generator=generator) * 1.6 - 0.8)
        elif shape[1] == 3:  # image
            inputs.append(torch.rand(shape, generator=generator))
        else:
            inputs.append(torch.randn(shape, generator=generator))
    return inputs


def randomise_inference_state(module: nn.Module, generator: torch.Generator) -> None:
    """Give BatchNorms non-trivial running stats and affine terms, and spectral norms converged u, v."""
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                n = sub.num_features
                sub.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                sub.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
                sub.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                sub.bias.copy_(torch.randn(n, generator=generator) * 0.2)
            if hasattr(sub, "weight_orig"):
                matrix = sub.weight_orig.flatten(1)
                u, v = sub.weight_u, sub.weight_v
                for _ in range(5):  # power iteration, as training would have run
                    v.copy_(nn.functional.normalize(matrix.T @ u, dim=0))
                    u.copy_(nn.functional.normalize(matrix @ v, dim=0))


def tiny(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    module = build_network(name, **TINY_KWARGS[name])
    randomise_inference_state(module, torch.Generator().manual_seed(seed))
    return module.eval()


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


# --- full-size layout (meta device: no memory, no init cost) -------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_keys_and_shapes_match_reference(name):
    expected = reference_json("param_shapes.json")["networks"][name]
    with torch.device("meta"):
        module = build_network(name)
    actual = {key: list(value.shape) for key, value in module.state_dict().items()}
    assert sorted(set(expected) - set(actual)) == [], "keys missing from our module"
    assert sorted(set(actual) - set(expected)) == [], "keys our module has but the checkpoint lacks"
    wrong = {key: (actual[key], shape) for key, shape in expected.items() if actual[key] != shape}
    assert wrong == {}, "key: (ours, reference)"


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_match_measurements(name):
    measured = reference_json("measurements.json")["networks"][name]
    with torch.device("meta"):
        module = build_network(name)
    assert sum(p.numel() for p in module.parameters()) == measured["params"]
    assert sum(b.numel() for b in module.buffers()) == measured["buffers"]


def test_contract_table_agrees_with_io_contract():
    models = reference_json("io_contract.json")["models"]
    for name, (inputs, outputs) in CONTRACT.items():
        assert [tuple(t["shape"]) for t in models[name]["inputs"]] == inputs, name
        assert [tuple(t["shape"]) for t in models[name]["outputs"]] == outputs, name


def test_build_network_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown network 'hubert'"):
        build_network("hubert")


# --- tiny variants: contract and folding ---------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_tiny_network_keeps_io_contract(name):
    module = tiny(name)
    with torch.no_grad():
        outputs = module(*contract_inputs(name, torch.Generator().manual_seed(1)))
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    assert [tuple(o.shape) for o in outputs] == CONTRACT[name][1]
    assert all(o.dtype == torch.float32 and torch.isfinite(o).all() for o in outputs)
    full_params = sum(p.numel() for p in build_network(name, **TINY_KWARGS[name]).parameters())
    with torch.device("meta"):
        assert full_params < sum(p.numel() for p in build_network(name).parameters())


def test_decoder_output_is_a_sigmoid():
    with torch.no_grad():
        image = tiny("decoder")(*contract_inputs("decoder", torch.Generator().manual_seed(2)))
    assert 0.0 < image.min() and image.max() < 1.0


@pytest.mark.parametrize(
    ("name", "norms_left"),
    [("appearance_extractor", TINY_KWARGS["appearance_extractor"]["num_resblocks"]), ("warp_network", 0),
     ("decoder", 0)],
)
def test_folding_keeps_outputs(name, norms_left):
    module = tiny(name)
    inputs = contract_inputs(name, torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = module(*inputs)
        fold_for_inference(module)
        after = module(*inputs)
    assert relative_error(after, before) <= 1e-5
    # Folding must really have happened: only the pre-activation res-block norms may stay.
    batch_norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(batch_norms) == norms_left
    assert not any(key.endswith(("weight_orig", "weight_u", "weight_v")) for key in module.state_dict())


def test_spectral_norm_folds_to_the_eval_formula():
    conv = nn.utils.spectral_norm(nn.Conv2d(5, 4, kernel_size=3))
    randomise_inference_state(conv, torch.Generator().manual_seed(4))
    weight = conv.weight_orig.detach().numpy().astype(np.float64)
    u, v = conv.weight_u.numpy().astype(np.float64), conv.weight_v.numpy().astype(np.float64)
    sigma = u @ (weight.reshape(4, -1) @ v)
    assert fold_spectral_norms(conv) == 1
    np.testing.assert_allclose(conv.weight.detach().numpy(), weight / sigma, rtol=1e-6)


def test_batch_norm_folds_into_a_conv_without_bias():
    conv, norm = nn.Conv2d(3, 6, kernel_size=3, bias=False), nn.BatchNorm2d(6)
    randomise_inference_state(norm, torch.Generator().manual_seed(5))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = norm.eval()(conv(x))
        fold_batch_norm_into_conv(conv, norm)
        assert relative_error(conv(x), expected) <= 1e-5


# --- warp geometry -------------------------------------------------------------------------


def numpy_identity_grid(depth: int, height: int, width: int) -> np.ndarray:
    axes = [2 * (np.arange(n, dtype=np.float64) / (n - 1)) - 1 for n in (depth, height, width)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    return np.stack([x, y, z], axis=-1)


@pytest.mark.parametrize("favoured", [0, 6])
def test_deformation_is_the_favoured_candidate_motion(favoured):
    """With the softmax mask saturated on one candidate, D is exactly that candidate's sparse motion:
    the identity grid for entry 0, grid - x_d[k-1] + x_s[k-1] for entry k."""
    warp = tiny("warp_network")
    with torch.no_grad():
        warp.dense_motion_network.mask.bias.zero_()
        warp.dense_motion_network.mask.bias[favoured] = 1e4
        feature, kp_source, kp_driving = contract_inputs("warp_network", torch.Generator().manual_seed(6))
        deformation, occlusion = warp.dense_motion(feature, kp_source, kp_driving)
    expected = numpy_identity_grid(16, 64, 64)
    if favoured > 0:
        expected = expected - kp_driving[0, favoured - 1].numpy() + kp_source[0, favoured - 1].numpy()
    assert deformation.shape == (1, 16, 64, 64, 3)
    np.testing.assert_allclose(deformation[0].numpy(), expected, atol=1e-6)
    assert occlusion.shape == (1, 1, 64, 64)
    assert 0.0 < occlusion.min() and occlusion.max() < 1.0


def numpy_resample_axis(values: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """1-D linear interpolation at normalised coords, align_corners=False, zero outside."""
    n = len(values)
    position = ((coords + 1) * n - 1) / 2
    left = np.floor(position).astype(int)
    frac = position - left
    padded = np.concatenate([[0.0], values, [0.0]])  # index -1 and n read zero
    return (1 - frac) * padded[np.clip(left, -1, n) + 1] + frac * padded[np.clip(left + 1, -1, n) + 1]


def test_sampling_the_identity_grid_keeps_the_half_voxel_mismatch():
    """A separable volume a_d ⊗ a_h ⊗ a_w sampled at the align_corners=True identity grid with
    align_corners=False sampling is the outer product of the 1-D resampled factors."""
    rng = np.random.default_rng(7)
    factors = [rng.uniform(0.5, 1.5, n) for n in (4, 5, 6)]
    volume = np.einsum("d,h,w->dhw", *factors)
    grid = identity_grid(4, 5, 6, torch.float32, torch.device("cpu"))
    sampled = sample_volume(torch.tensor(volume, dtype=torch.float32)[None, None], grid[None])[0, 0]
    resampled = [numpy_resample_axis(f, 2 * (np.arange(len(f)) / (len(f) - 1)) - 1) for f in factors]
    np.testing.assert_allclose(sampled.numpy(), np.einsum("d,h,w->dhw", *resampled), rtol=1e-5)
    assert not np.allclose(sampled.numpy(), volume, rtol=1e-3)  # the mismatch is really there


def test_keypoint_gaussians_use_variance_0_01():
    grid = identity_grid(3, 4, 5, torch.float32, torch.device("cpu"))
    keypoints = torch.tensor([[[0.1, -0.2, 0.3], [-0.5, 0.5, 0.0]]])
    actual = keypoint_gaussians(grid, keypoints)[0].numpy()
    offsets = numpy_identity_grid(3, 4, 5)[None] - keypoints[0].numpy()[:, None, None, None, :]
    np.testing.assert_allclose(actual, np.exp(-(offsets**2).sum(-1) / 0.02), rtol=1e-5, atol=1e-30)


# --- stitching -----------------------------------------------------------------------------


def test_stitching_applies_the_mlp_delta_as_specified():
    stitch = build_network("stitch_network").eval()
    rng = np.random.default_rng(8)
    kp_source = rng.uniform(-1, 1, (2, NUM_KP, 3)).astype(np.float32)
    kp_driving = rng.uniform(-1, 1, (2, NUM_KP, 3)).astype(np.float32)
    with torch.no_grad():
        actual = stitch(torch.from_numpy(kp_source), torch.from_numpy(kp_driving)).numpy()

    linears = [layer for layer in stitch.mlp if isinstance(layer, nn.Linear)]
    hidden = np.concatenate([kp_source.reshape(2, -1), kp_driving.reshape(2, -1)], axis=1).astype(np.float64)
    for index, layer in enumerate(linears):
        hidden = hidden @ layer.weight.detach().numpy().T + layer.bias.detach().numpy()
        if index < len(linears) - 1:
            hidden = np.maximum(hidden, 0)
    expected = kp_driving + hidden[:, : 3 * NUM_KP].reshape(2, NUM_KP, 3)
    expected[:, :, :2] += hidden[:, None, 3 * NUM_KP : 3 * NUM_KP + 2]
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


# --- checkpoint loading --------------------------------------------------------------------


def test_load_state_from_a_file_matches_the_unfolded_module(tmp_path):
    source = tiny("appearance_extractor", seed=9)
    path = tmp_path / "appearance_extractor.pth"
    torch.save(source.state_dict(), path)
    image = contract_inputs("appearance_extractor", torch.Generator().manual_seed(10))[0]
    with torch.no_grad():
        expected = source(image)
        loaded = load_state("appearance_extractor", tiny("appearance_extractor", seed=11), path)
        assert relative_error(loaded(image), expected) <= 1e-5
    assert not loaded.training
    assert not any(".norm." in key or "norm2" in key for key in loaded.state_dict())


def test_load_state_unwraps_the_stitch_checkpoint():
    source = tiny("stitch_network", seed=12)
    checkpoint = {
        STITCH_ENTRY: {f"module.{key}": value for key, value in source.state_dict().items()},
        "retarget_mouth": {"module.mlp.0.weight": torch.zeros(1)},
    }
    loaded = load_state("stitch_network", tiny("stitch_network", seed=13), checkpoint)
    kp_source, kp_driving = contract_inputs("stitch_network", torch.Generator().manual_seed(14))
    with torch.no_grad():
        torch.testing.assert_close(loaded(kp_source, kp_driving), source(kp_source, kp_driving))


def test_load_state_names_a_missing_stitch_entry():
    with pytest.raises(ValueError, match=f"stitch_network: checkpoint has no '{STITCH_ENTRY}' dict"):
        load_state("stitch_network", tiny("stitch_network"), {"retarget_mouth": {}})


@pytest.mark.parametrize(
    ("break_state", "message"),
    [
        (lambda s: s.update({"conv_img.0.bias": torch.zeros(5)}),
         "decoder: state dict key 'conv_img.0.bias': expected shape [12], found shape [5]"),
        (lambda s: s.pop("up_1.conv_s.weight_v"),
         "decoder: state dict key 'up_1.conv_s.weight_v': expected shape [8], found nothing"),
        (lambda s: s.update({"fc.extra": torch.zeros(2, 3)}),
         "decoder: state dict key 'fc.extra': expected nothing, found shape [2, 3]"),
    ],
    ids=["wrong-shape", "missing", "unexpected"],
)
def test_load_state_rejects_a_broken_state_dict(break_state, message):
    state = dict(tiny("decoder").state_dict())
    break_state(state)
    with pytest.raises(ValueError, match=re.escape(message)):
        load_state("decoder", tiny("decoder"), state)
