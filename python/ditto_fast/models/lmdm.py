"""LMDM, Ditto's motion diffusion transformer (DITTO_SPEC §4.6).

`MotionDecoder` is the denoiser: it predicts the clean 80-frame motion x0 from a noisy one,
conditioned on the clip's first frame (`cond_frame`), per-frame audio/control features
(`cond`) and the diffusion step. `GuidedLMDM` is one guided sampling step, the function the
reference exports as the ONNX graph `lmdm_v0.4_hubert`.

Submodule names follow the reference checkpoint (`checkpoint['model_state_dict']`), including
the 11 state-dict copies (model, 2 encoder and 8 decoder layers) of the one shared rotary
`freqs` buffer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ditto_fast.diffusion_schedule import cosine_alphas_cumprod

LAYER_NORM_EPS = 1e-5
ROTARY_THETA = 10000.0
TIME_EMBEDDING_PERIOD = 10000.0
GUIDANCE_WEIGHT = 2.0
NUM_TIME_TOKENS = 2


def rotate_adjacent_pairs(v: Tensor) -> Tensor:
    """Maps each pair (v[2i], v[2i+1]) of the last axis to (−v[2i+1], v[2i])."""
    pairs = v.unflatten(-1, (v.shape[-1] // 2, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def apply_rotary(v: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotates token vectors v (..., N, D) by the per-position angle tables cos/sin (N, D)."""
    return v * cos + rotate_adjacent_pairs(v) * sin


class RotaryEmbedding(nn.Module):
    """Rotary position embedding applied to whole token vectors, positions 0..N−1.

    The reference rotates the full model-width vectors *before* the attention in-projection
    (not per head after it), so this works on any (..., N, D) tensor.
    """

    freqs: Tensor

    def __init__(self, dim: int, theta: float = ROTARY_THETA) -> None:
        super().__init__()
        self.register_buffer("freqs", 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))

    def cos_sin(self, num_positions: int) -> tuple[Tensor, Tensor]:
        """cos and sin of the angles position·freq, (num_positions, D), each freq used for a pair of dims."""
        positions = torch.arange(num_positions, dtype=self.freqs.dtype, device=self.freqs.device)
        angles = torch.outer(positions, self.freqs)
        angles = torch.stack((angles, angles), dim=-1).flatten(-2)
        return angles.cos(), angles.sin()

    def forward(self, v: Tensor) -> Tensor:
        return apply_rotary(v, *self.cos_sin(v.shape[-2]))


class SinusoidalTimeEmbedding(nn.Module):
    """[sin(t·f_i), cos(t·f_i)] with f_i = exp(−i·ln(10000)/(D/2 − 1)), (B,) → (B, D)."""

    freqs: Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        step = -math.log(TIME_EMBEDDING_PERIOD) / (half - 1)
        freqs = torch.exp(torch.arange(half, dtype=torch.float32) * step)
        # Derived from the size alone, so it stays out of the checkpoint's state dict.
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        angles = t.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class FiLM(nn.Module):
    """Feature-wise modulation (1 + scale)·v + shift, with [scale | shift] = Linear(Mish(t_vec))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Mish(), nn.Linear(dim, 2 * dim))

    def modulation(self, t_vec: Tensor) -> Tensor:
        """[scale | shift] for t_vec (..., D) → (..., 2D)."""
        return self.block(t_vec)

    @staticmethod
    def modulate(v: Tensor, modulation: Tensor) -> Tensor:
        """Applies a (B, 2D) modulation to tokens v (B, N, D)."""
        scale, shift = modulation[:, None, :].chunk(2, dim=-1)
        return (scale + 1) * v + shift

    def forward(self, v: Tensor, t_vec: Tensor) -> Tensor:
        return self.modulate(v, self.modulation(t_vec))


def feed_forward(v: Tensor, linear1: nn.Linear, linear2: nn.Linear) -> Tensor:
    return linear2(F.gelu(linear1(v)))


def _layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=LAYER_NORM_EPS)


class ConditionEncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer over the condition tokens, rotary on q and k only."""

    def __init__(self, dim: int, num_heads: int, ff_dim: int, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.linear1 = nn.Linear(dim, ff_dim)
        self.linear2 = nn.Linear(ff_dim, dim)
        self.norm1 = _layer_norm(dim)
        self.norm2 = _layer_norm(dim)
        self.rotary = rotary

    def forward(self, tokens: Tensor) -> Tensor:
        normed = self.norm1(tokens)
        rotated = self.rotary(normed)
        tokens = tokens + self.self_attn(rotated, rotated, normed, need_weights=False)[0]
        return tokens + feed_forward(self.norm2(tokens), self.linear1, self.linear2)


class FiLMDecoderLayer(nn.Module):
    """Pre-norm decoder layer: self-attention, cross-attention to the memory, feed-forward,
    each followed by its own FiLM from the time/condition vector."""

    def __init__(self, dim: int, num_heads: int, ff_dim: int, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.linear1 = nn.Linear(dim, ff_dim)
        self.linear2 = nn.Linear(ff_dim, dim)
        self.norm1 = _layer_norm(dim)
        self.norm2 = _layer_norm(dim)
        self.norm3 = _layer_norm(dim)
        self.film1 = FiLM(dim)
        self.film2 = FiLM(dim)
        self.film3 = FiLM(dim)
        self.rotary = rotary

    @property
    def films(self) -> tuple[FiLM, FiLM, FiLM]:
        return self.film1, self.film2, self.film3

    def cross_attend(self, queries: Tensor, memory: Tensor) -> Tensor:
        """Cross-attention; queries take positions 0..N−1 and the memory 0..M−1, values are not rotated."""
        return self.multihead_attn(self.rotary(queries), self.rotary(memory), memory, need_weights=False)[0]

    def block(self, h: Tensor, cross_attend: Callable[[Tensor], Tensor],
              modulations: Sequence[Tensor]) -> Tensor:
        """The layer with the cross-attention and the three FiLM modulations supplied by the caller,
        so a caller that precomputes memory keys/values or modulations runs the same layer."""
        normed = self.norm1(h)
        rotated = self.rotary(normed)
        h = h + FiLM.modulate(self.self_attn(rotated, rotated, normed, need_weights=False)[0], modulations[0])
        h = h + FiLM.modulate(cross_attend(self.norm2(h)), modulations[1])
        return h + FiLM.modulate(feed_forward(self.norm3(h), self.linear1, self.linear2), modulations[2])

    def forward(self, h: Tensor, memory: Tensor, t_vec: Tensor) -> Tensor:
        return self.block(h, partial(self.cross_attend, memory=memory),
                          [film.modulation(t_vec) for film in self.films])


class DecoderStack(nn.Module):
    def __init__(self, layers: Sequence[FiLMDecoderLayer]) -> None:
        super().__init__()
        self.stack = nn.ModuleList(layers)

    def forward(self, h: Tensor, memory: Tensor, t_vec: Tensor) -> Tensor:
        for layer in self.stack:
            h = layer(h, memory, t_vec)
        return h


class MotionDecoder(nn.Module):
    """The LMDM denoiser: (x (B,S,F), cond_frame (B,F), cond (B,S,C), t (B,) int64, drop) → x0 (B,S,F).

    drop=True is the unconditional pass of classifier-free guidance: the condition tokens and
    the pooled condition vector are replaced by the learned null embeddings, so `cond` is unused.
    """

    def __init__(self, motion_feat_dim: int = 265, audio_feat_dim: int = 1103, seq_frames: int = 80, *,
                 latent_dim: int = 512, ff_dim: int = 1024, num_layers: int = 8, num_heads: int = 8,
                 num_cond_layers: int = 2) -> None:
        super().__init__()
        self.seq_frames = seq_frames
        self.null_cond_embed = nn.Parameter(torch.randn(1, seq_frames, latent_dim))
        self.null_cond_hidden = nn.Parameter(torch.randn(1, latent_dim))
        # One rotary module shared by every layer, as in the reference: the checkpoint holds a
        # state-dict copy of its buffer under each layer.
        self.rotary = RotaryEmbedding(latent_dim)
        self.time_mlp = nn.Sequential(SinusoidalTimeEmbedding(latent_dim),
                                      nn.Linear(latent_dim, 4 * latent_dim), nn.Mish())
        self.to_time_cond = nn.Sequential(nn.Linear(4 * latent_dim, latent_dim))
        self.to_time_tokens = nn.Sequential(nn.Linear(4 * latent_dim, NUM_TIME_TOKENS * latent_dim),
                                            nn.Unflatten(-1, (NUM_TIME_TOKENS, latent_dim)))
        self.norm_cond = _layer_norm(latent_dim)
        # The first frame is concatenated to every frame (the reference has no absolute positions).
        self.input_projection = nn.Linear(2 * motion_feat_dim, latent_dim)
        self.cond_encoder = nn.Sequential(*[ConditionEncoderLayer(latent_dim, num_heads, ff_dim, self.rotary)
                                            for _ in range(num_cond_layers)])
        self.cond_projection = nn.Linear(audio_feat_dim, latent_dim)
        self.non_attn_cond_projection = nn.Sequential(_layer_norm(latent_dim),
                                                      nn.Linear(latent_dim, latent_dim), nn.SiLU(),
                                                      nn.Linear(latent_dim, latent_dim))
        # camelCase kept: it is part of the checkpoint's key names.
        self.seqTransDecoder = DecoderStack([FiLMDecoderLayer(latent_dim, num_heads, ff_dim, self.rotary)
                                             for _ in range(num_layers)])
        self.final_layer = nn.Linear(latent_dim, motion_feat_dim)

    @property
    def decoder_layers(self) -> nn.ModuleList:
        return self.seqTransDecoder.stack

    def encode_condition(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        """Condition tokens (B,S,D) and the pooled condition vector (B,D) of the conditional pass."""
        tokens = self.cond_encoder(self.cond_projection(cond))
        return tokens, self.non_attn_cond_projection(tokens.mean(dim=-2))

    def null_condition(self, batch: int) -> tuple[Tensor, Tensor]:
        """What replaces `encode_condition` in the unconditional pass."""
        return self.null_cond_embed.expand(batch, -1, -1), self.null_cond_hidden.expand(batch, -1)

    def time_features(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """The time vector before the condition is added (B,D), and the 2 time tokens (B,2,D)."""
        t_hidden = self.time_mlp(t)
        return self.to_time_cond(t_hidden), self.to_time_tokens(t_hidden)

    def project_input(self, x: Tensor, cond_frame: Tensor) -> Tensor:
        frames = cond_frame[:, None, :].expand(-1, x.shape[1], -1)
        return self.input_projection(torch.cat((x, frames), dim=-1))

    def forward(self, x: Tensor, cond_frame: Tensor, cond: Tensor, t: Tensor, drop: bool = False) -> Tensor:
        cond_tokens, cond_hidden = self.null_condition(x.shape[0]) if drop else self.encode_condition(cond)
        time_vec, time_tokens = self.time_features(t)
        memory = self.norm_cond(torch.cat((cond_tokens, time_tokens), dim=-2))
        h = self.seqTransDecoder(self.project_input(x, cond_frame), memory, time_vec + cond_hidden)
        return self.final_layer(h)


def classifier_free_guidance(unconditional: Tensor, conditional: Tensor,
                             weight: float = GUIDANCE_WEIGHT) -> Tensor:
    return unconditional + (conditional - unconditional) * weight


class GuidedLMDM(nn.Module):
    """One guided sampling step, as the reference ONNX graph `lmdm_v0.4_hubert`:
    (x, cond_frame, cond, time_cond) → (pred_noise, x_start).

    x_start mixes an unconditional and a conditional MotionDecoder pass (weight 2);
    pred_noise = √(1/(1−ᾱ_t))·x − x_start/√(1/ᾱ_t − 1), i.e. (x − √ᾱ_t·x_start)/√(1−ᾱ_t),
    with the coefficient tables precomputed in float32 like the reference's module buffers.
    """

    alphas_cumprod: Tensor
    sqrt_recip_one_minus_alphas_cumprod: Tensor
    sqrt_recip_alphas_cumprod_minus_one: Tensor

    def __init__(self, motion_feat_dim: int = 265, audio_feat_dim: int = 1103, seq_frames: int = 80,
                 **decoder_sizes: int) -> None:
        super().__init__()
        self.model = MotionDecoder(motion_feat_dim, audio_feat_dim, seq_frames, **decoder_sizes)
        alphas_cumprod = torch.from_numpy(cosine_alphas_cumprod())
        # Schedule constants, not learned: kept out of the state dict.
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)
        self.register_buffer("sqrt_recip_one_minus_alphas_cumprod", torch.sqrt(1.0 / (1.0 - alphas_cumprod)),
                             persistent=False)
        self.register_buffer("sqrt_recip_alphas_cumprod_minus_one", torch.sqrt(1.0 / alphas_cumprod - 1.0),
                             persistent=False)

    def noise_from_start(self, x_t: Tensor, x_start: Tensor, time_cond: Tensor) -> Tensor:
        """The noise that takes x_start to x_t at steps time_cond (B,)."""
        a = self.sqrt_recip_one_minus_alphas_cumprod[time_cond][:, None, None]
        b = self.sqrt_recip_alphas_cumprod_minus_one[time_cond][:, None, None]
        return a * x_t - x_start / b

    def forward(self, x: Tensor, cond_frame: Tensor, cond: Tensor,
                time_cond: Tensor) -> tuple[Tensor, Tensor]:
        unconditional = self.model(x, cond_frame, cond, time_cond, drop=True)
        conditional = self.model(x, cond_frame, cond, time_cond, drop=False)
        x_start = classifier_free_guidance(unconditional, conditional)
        return self.noise_from_start(x, x_start, time_cond), x_start
