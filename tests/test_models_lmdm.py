"""LMDM (motion diffusion transformer), its hoisted sampling step and the DDIM schedule.

Network tests use a tiny model (random weights) so they run in seconds; the full-size checks
are limited to the state-dict layout. Tests that compare against the reference data
(tests/data/reference) skip when it is absent.

Golden: ddim_tables.npz (golden README §5.8), every steps{S}_ group. Compared: np_alphas_cumprod,
torch_alphas_cumprod (the module buffer), torch_sqrt_recip1m / recipm1_alphas_cumprod (within
1 ulp, see the test), steps_list, steps{S}_time_pairs, steps{S}_time_cond, steps{S}_np_alpha_next_sqrt
/ _np_sigma / _np_c (exact). Not comparable: steps{S}_torch_alpha_next_sqrt / _sigma / _c are the
tables of the reference's PyTorch sampler; ditto_fast samples with the NumPy (ONNX/TRT path) tables
on every backend, so it computes no torch-path tables (they differ from the NumPy ones by up to
7.7e-5, at steps25 c).
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from golden_stubs import golden_cases, load_golden

from conftest import REFERENCE
from ditto_fast.diffusion_schedule import (
    MAX_BETA,
    cosine_alphas_cumprod,
    cosine_betas,
    ddim_tables,
    ddim_time_pairs,
)
from ditto_fast.models.checkpoint_format import load_state
from ditto_fast.models.lmdm import GuidedLMDM, MotionDecoder
from ditto_fast.models.lmdm_hoisted import HoistedLMDM

REF = REFERENCE
TINY = dict(latent_dim=32, ff_dim=64, num_layers=2, num_heads=4, num_cond_layers=2)
FRAMES, MOTION, AUDIO = 80, 265, 1103


def _ref_json(name: str) -> dict:
    path = REF / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return json.loads(path.read_text())


def _inputs(batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, FRAMES, MOTION, generator=g), torch.randn(batch, MOTION, generator=g),
            torch.randn(batch, FRAMES, AUDIO, generator=g))


@pytest.fixture(scope="module")
def guided() -> GuidedLMDM:
    torch.manual_seed(1)
    return GuidedLMDM(**TINY).eval()


# ---------------------------------------------------------------- NumPy reference of DITTO_SPEC §4.6

def _linear(sd: dict, name: str, v: np.ndarray) -> np.ndarray:
    return v @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def _layer_norm(sd: dict, name: str, v: np.ndarray) -> np.ndarray:
    centred = v - v.mean(-1, keepdims=True)
    normed = centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + 1e-5)
    return normed * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def _gelu(v: np.ndarray) -> np.ndarray:
    return 0.5 * v * (1.0 + np.vectorize(math.erf)(v / math.sqrt(2.0)))


def _mish(v: np.ndarray) -> np.ndarray:
    return v * np.tanh(np.logaddexp(0.0, v))


def _rotary(v: np.ndarray) -> np.ndarray:
    """Positions 0..N−1; angle p·10000^(−2⌊j/2⌋/D) on dim j; pair (a, b) → (−b, a)."""
    n, d = v.shape[-2:]
    angle = np.arange(n)[:, None] * 10000.0 ** (-2.0 * (np.arange(d) // 2) / d)[None, :]
    rotated = np.empty_like(v)
    rotated[..., 0::2] = -v[..., 1::2]
    rotated[..., 1::2] = v[..., 0::2]
    return v * np.cos(angle) + rotated * np.sin(angle)


def _attention(sd: dict, name: str, q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int) -> np.ndarray:
    w, b = sd[f"{name}.in_proj_weight"], sd[f"{name}.in_proj_bias"]
    d = w.shape[1]

    def project(x: np.ndarray, part: int) -> np.ndarray:
        y = x @ w[part * d:(part + 1) * d].T + b[part * d:(part + 1) * d]
        return y.reshape(*y.shape[:2], heads, d // heads)

    scores = np.einsum("bnhe,bmhe->bhnm", project(q, 0), project(k, 1)) / math.sqrt(d // heads)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bhnm,bmhe->bnhe", weights, project(v, 2)).reshape(*q.shape[:2], d)
    return _linear(sd, f"{name}.out_proj", out)


def _numpy_motion_decoder(module: MotionDecoder, x: torch.Tensor, cond_frame: torch.Tensor, cond: torch.Tensor,
                          t: torch.Tensor, drop: bool, heads: int) -> np.ndarray:
    sd = {k: v.detach().double().numpy() for k, v in module.state_dict().items()}
    x, cond_frame, cond = (a.double().numpy() for a in (x, cond_frame, cond))
    batch, dim = x.shape[0], sd["null_cond_hidden"].shape[1]
    n_enc = len({k.split(".")[1] for k in sd if k.startswith("cond_encoder.")})
    n_dec = len({k.split(".")[2] for k in sd if k.startswith("seqTransDecoder.stack.")})
    frames = np.repeat(cond_frame[:, None], x.shape[1], 1)
    h = _linear(sd, "input_projection", np.concatenate([x, frames], -1))
    if drop:
        c = np.repeat(sd["null_cond_embed"], batch, 0)
        hidden = np.repeat(sd["null_cond_hidden"], batch, 0)
    else:
        c = _linear(sd, "cond_projection", cond)
        for i in range(n_enc):
            p = f"cond_encoder.{i}"
            y = _layer_norm(sd, f"{p}.norm1", c)
            c = c + _attention(sd, f"{p}.self_attn", _rotary(y), _rotary(y), y, heads)
            y = _layer_norm(sd, f"{p}.norm2", c)
            c = c + _linear(sd, f"{p}.linear2", _gelu(_linear(sd, f"{p}.linear1", y)))
        pooled = _layer_norm(sd, "non_attn_cond_projection.0", c.mean(1))
        pooled = _linear(sd, "non_attn_cond_projection.1", pooled)
        hidden = _linear(sd, "non_attn_cond_projection.3", pooled / (1.0 + np.exp(-pooled)))
    half = dim // 2
    angle = t.double().numpy()[:, None] * np.exp(-np.arange(half) * math.log(10000.0) / (half - 1))[None]
    t_hidden = _mish(_linear(sd, "time_mlp.1", np.concatenate([np.sin(angle), np.cos(angle)], -1)))
    t_vec = _linear(sd, "to_time_cond.0", t_hidden) + hidden
    t_tokens = _linear(sd, "to_time_tokens.0", t_hidden).reshape(batch, 2, dim)
    memory = _layer_norm(sd, "norm_cond", np.concatenate([c, t_tokens], 1))
    for i in range(n_dec):
        p = f"seqTransDecoder.stack.{i}"

        def film(k: int, v: np.ndarray) -> np.ndarray:
            scale_shift = _linear(sd, f"{p}.film{k}.block.1", _mish(t_vec))[:, None]
            return (1.0 + scale_shift[..., :dim]) * v + scale_shift[..., dim:]

        y = _layer_norm(sd, f"{p}.norm1", h)
        h = h + film(1, _attention(sd, f"{p}.self_attn", _rotary(y), _rotary(y), y, heads))
        y = _layer_norm(sd, f"{p}.norm2", h)
        h = h + film(2, _attention(sd, f"{p}.multihead_attn", _rotary(y), _rotary(memory), memory, heads))
        y = _layer_norm(sd, f"{p}.norm3", h)
        h = h + film(3, _linear(sd, f"{p}.linear2", _gelu(_linear(sd, f"{p}.linear1", y))))
    return _linear(sd, "final_layer", h)


# ---------------------------------------------------------------- MotionDecoder

def test_state_dict_has_the_reference_keys_and_shapes():
    expected = _ref_json("param_shapes.json")["networks"]["lmdm"]
    state = MotionDecoder().state_dict()
    assert [(k, list(v.shape)) for k, v in state.items()] == list(expected.items())
    # One shared rotary module, listed under the model, its 2 encoder and 8 decoder layers.
    assert sum(k.endswith("rotary.freqs") for k in state) == 11


def test_parameter_count_matches_the_reference():
    expected = _ref_json("measurements.json")["networks"]["lmdm_one_step_guided"]["params"]
    assert sum(p.numel() for p in MotionDecoder().parameters()) == expected == 47_788_297


def test_rotary_frequencies_are_the_spec_ones():
    freqs = MotionDecoder(**TINY).rotary.freqs.double().numpy()
    np.testing.assert_allclose(freqs, 10000.0 ** (-2.0 * np.arange(16) / 32), rtol=1e-6)


@pytest.mark.parametrize("drop", [False, True])
def test_forward_matches_a_numpy_implementation_of_the_spec(guided, drop):
    x, cond_frame, cond = _inputs(batch=2)
    t = torch.tensor([3, 999])
    with torch.no_grad():
        out = guided.model(x, cond_frame, cond, t, drop=drop)
    assert out.shape == (2, FRAMES, MOTION) and out.dtype == torch.float32
    expected = _numpy_motion_decoder(guided.model, x, cond_frame, cond, t, drop, TINY["num_heads"])
    np.testing.assert_allclose(out.numpy(), expected, atol=2e-5 * np.abs(expected).max())


def test_unconditional_pass_ignores_cond(guided):
    x, cond_frame, cond = _inputs()
    other_cond = torch.randn_like(cond)
    t = torch.tensor([500])
    with torch.no_grad():
        assert torch.equal(guided.model(x, cond_frame, cond, t, drop=True),
                           guided.model(x, cond_frame, other_cond, t, drop=True))
        assert not torch.allclose(guided.model(x, cond_frame, cond, t),
                                  guided.model(x, cond_frame, other_cond, t))


# ---------------------------------------------------------------- GuidedLMDM

def test_guided_step_mixes_both_passes_and_derives_the_noise(guided):
    x, cond_frame, cond = _inputs(batch=3, seed=2)
    t = torch.tensor([0, 19, 999])
    with torch.no_grad():
        pred_noise, x_start = guided(x, cond_frame, cond, t)
        unconditional = guided.model(x, cond_frame, cond, t, drop=True).double().numpy()
        conditional = guided.model(x, cond_frame, cond, t, drop=False).double().numpy()
    assert pred_noise.shape == x_start.shape == (3, FRAMES, MOTION)
    np.testing.assert_allclose(x_start.numpy(), unconditional + 2.0 * (conditional - unconditional),
                               atol=1e-5)
    x_t, x0 = x.double().numpy(), x_start.double().numpy()
    alpha_bar = cosine_alphas_cumprod()[t.numpy()][:, None, None]
    # The reference's float32 coefficients √(1/(1−ᾱ)) and √(1/ᾱ − 1), as its ONNX graph holds them.
    one = np.float32(1.0)
    a, b = np.sqrt(one / (one - alpha_bar)), np.sqrt(one / alpha_bar - one)
    reference_order = a.astype(np.float64) * x_t - x0 / b.astype(np.float64)
    np.testing.assert_allclose(pred_noise.numpy(), reference_order, rtol=1e-6,
                               atol=1e-6 * np.abs(reference_order).max())
    # The same up to float32 rounding of 1/ᾱ − 1, which costs up to 7e-4 relative at t = 0 (5.5e-6 at t = 19).
    alpha_bar = alpha_bar.astype(np.float64)
    exact = (x_t - np.sqrt(alpha_bar) * x0) / np.sqrt(1.0 - alpha_bar)
    np.testing.assert_allclose(pred_noise.numpy(), exact, atol=1e-3 * np.abs(exact).max())
    np.testing.assert_allclose(pred_noise.numpy()[1:], exact[1:], atol=1e-5 * np.abs(exact[1:]).max())


def test_noise_coefficient_tables_match_the_reference_buffers(guided):
    golden = load_golden("ddim_tables.npz")
    np.testing.assert_array_equal(guided.alphas_cumprod.numpy(), golden["torch_alphas_cumprod"])
    # Within 1 ulp: torch's CPU float32 sqrt is not always correctly rounded, and how often
    # it is off depends on the CPU's vector unit (the reference tables were made with it).
    for ours, theirs in ((guided.sqrt_recip_one_minus_alphas_cumprod, "torch_sqrt_recip1m_alphas_cumprod"),
                         (guided.sqrt_recip_alphas_cumprod_minus_one, "torch_sqrt_recipm1_alphas_cumprod")):
        np.testing.assert_allclose(ours.numpy(), golden[theirs], rtol=1.2e-7, atol=0)


@pytest.mark.parametrize("batch", [1, 2])
def test_hoisted_step_equals_the_guided_step(guided, batch):
    hoisted = HoistedLMDM(guided)
    x, cond_frame, cond = _inputs(batch=batch, seed=3)
    time_cond = ddim_tables(10).time_cond
    clip = hoisted.prepare_clip(cond_frame, cond, hoisted.prepare_schedule(time_cond))
    for step in (0, 4, 9):
        with torch.no_grad():
            t = torch.full((batch,), int(time_cond[step]))
            expected_noise, expected_x0 = guided(x, cond_frame, cond, t)
        pred_noise, x_start = hoisted(x, clip, step)
        assert (x_start - expected_x0).abs().max() <= 1e-5
        np.testing.assert_allclose(pred_noise.numpy(), expected_noise.numpy(), rtol=1e-4,
                                   atol=1e-5 * expected_noise.abs().max().item())


def test_guided_step_exports_to_onnx(guided, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    x, cond_frame, cond = _inputs(seed=4)
    time_cond = torch.tensor([959])
    path = tmp_path / "lmdm_tiny.onnx"
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated, and it warns about nn.MultiheadAttention's shape checks.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(guided, (x, cond_frame, cond, time_cond), str(path), opset_version=17, dynamo=False,
                          input_names=["x", "cond_frame", "cond", "time_cond"],
                          output_names=["pred_noise", "x_start"])
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"x": x.numpy(), "cond_frame": cond_frame.numpy(), "cond": cond.numpy(),
                                 "time_cond": time_cond.numpy()})
    with torch.no_grad():
        expected = guided(x, cond_frame, cond, time_cond)
    assert [o.name for o in session.get_outputs()] == ["pred_noise", "x_start"]
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4)


# ---------------------------------------------------------------- checkpoint loading

def _official_checkpoint(seed: int) -> dict:
    torch.manual_seed(seed)
    return {"model_state_dict": MotionDecoder(**TINY).state_dict(), "epoch": 0}


def test_checkpoint_loads_into_decoder_and_guided_model():
    checkpoint = _official_checkpoint(seed=5)
    decoder, guided_model = MotionDecoder(**TINY), GuidedLMDM(**TINY)
    load_state("lmdm", decoder, checkpoint)
    load_state("lmdm", guided_model.model, checkpoint)
    for module in (decoder, guided_model.model):
        for key, value in module.state_dict().items():
            assert torch.equal(value, checkpoint["model_state_dict"][key]), key


def _broken(edit) -> dict:
    checkpoint = _official_checkpoint(seed=6)
    edit(checkpoint["model_state_dict"])
    return checkpoint


@pytest.mark.parametrize("edit, fragments", [
    (lambda sd: sd.__setitem__("final_layer.weight", torch.zeros(265, 33)),
     ["lmdm: state dict key 'final_layer.weight': expected shape [265, 32], found shape [265, 33]"]),
    (lambda sd: sd.pop("seqTransDecoder.stack.1.rotary.freqs"),
     ["key 'seqTransDecoder.stack.1.rotary.freqs': expected shape [16], found nothing"]),
    (lambda sd: sd.__setitem__("abs_pos_encoding.pe", torch.zeros(3)),
     ["key 'abs_pos_encoding.pe': expected nothing, found shape [3]"]),
])
def test_broken_checkpoint_is_rejected_and_leaves_weights_untouched(edit, fragments):
    decoder = MotionDecoder(**TINY)
    before = {k: v.clone() for k, v in decoder.state_dict().items()}
    with pytest.raises(ValueError) as error:
        load_state("lmdm", decoder, _broken(edit))
    for fragment in fragments:
        assert fragment in str(error.value)
    assert all(torch.equal(v, before[k]) for k, v in decoder.state_dict().items())


def test_checkpoint_without_model_state_dict_is_rejected():
    with pytest.raises(ValueError, match="model_state_dict"):
        load_state("lmdm", MotionDecoder(**TINY), _official_checkpoint(seed=7)["model_state_dict"])


# ---------------------------------------------------------------- schedule

def test_alphas_cumprod_matches_the_reference_exactly():
    expected = np.asarray(_ref_json("constants.json")["alphas_cumprod_f32"], dtype=np.float32)
    ours = cosine_alphas_cumprod()
    assert ours.dtype == np.float32 and ours.shape == (1000,)
    np.testing.assert_array_equal(ours, expected)


def test_ddim_50_step_tables_match_the_reference_exactly():
    expected = _ref_json("constants.json")["ddim"]
    tables = ddim_tables(expected["sampling_timesteps"], eta=expected["eta"])
    np.testing.assert_array_equal(tables.time_pairs, np.asarray(expected["time_pairs"]))
    for ours, key in ((tables.alpha_next_sqrt, "alpha_next_sqrt_f32"), (tables.sigma, "sigma_f32"),
                      (tables.c, "c_f32")):
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours, np.asarray(expected[key], dtype=np.float32), err_msg=key)


def test_alphas_cumprod_match_the_golden_numpy_table():
    golden = load_golden("ddim_tables.npz")
    np.testing.assert_array_equal(cosine_alphas_cumprod(), golden["np_alphas_cumprod"])
    assert sorted(golden["steps_list"].tolist()) == golden.indices("steps")


@pytest.mark.parametrize(("path", "steps"), golden_cases("ddim_tables*.npz", "steps"))
def test_ddim_tables_match_the_golden_numpy_tables(path, steps):
    golden = load_golden(path)
    tables = ddim_tables(steps)
    np.testing.assert_array_equal(tables.time_pairs, golden[f"steps{steps}_time_pairs"])
    np.testing.assert_array_equal(tables.time_cond, golden[f"steps{steps}_time_cond"])
    for name in ("alpha_next_sqrt", "sigma", "c"):
        np.testing.assert_array_equal(getattr(tables, name), golden[f"steps{steps}_np_{name}"],
                                      err_msg=f"{steps} steps, {name}")


def test_schedule_shape_and_ddim_invariants():
    betas = cosine_betas()
    assert betas.dtype == np.float32 and betas.min() >= 0 and betas[-1] == np.float32(MAX_BETA)
    tables = ddim_tables(50)
    assert tables.time_pairs[0].tolist() == [999, 979] and tables.time_pairs[-1].tolist() == [19, -1]
    alpha_next = cosine_alphas_cumprod()[tables.time_pairs[:-1, 1]].astype(np.float64)
    # DDIM keeps the marginal variance: ᾱ_next + c² + σ² = 1.
    c, sigma = tables.c.astype(np.float64), tables.sigma.astype(np.float64)
    np.testing.assert_allclose(alpha_next + c ** 2 + sigma ** 2, 1.0, atol=1e-6)
    np.testing.assert_allclose(tables.alpha_next_sqrt, np.sqrt(alpha_next), rtol=1e-6)


def test_ddim_time_pairs_rejects_impossible_step_counts():
    with pytest.raises(ValueError, match="num_steps"):
        ddim_time_pairs(0)
