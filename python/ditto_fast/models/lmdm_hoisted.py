"""A guided LMDM step with its step- and clip-invariant work hoisted out (DITTO_SPEC §4.6).

Within one clip the DDIM loop calls the guided model 50 times with the same `cond` and
`cond_frame` and a fixed table of time steps. Everything that depends only on those is computed
once here instead of 100 times (50 steps × 2 guidance passes):

- per schedule (`prepare_schedule`, reusable across clips): time embeddings, the cross-attention
  keys/values of the 2 time tokens, and the unconditional pass's null-condition keys/values and
  FiLM modulations;
- per clip (`prepare_clip`): the condition encoder, the cross-attention keys/values of the 80
  condition tokens and the conditional pass's FiLM modulations for every step;
- per step (`forward`): both guidance passes as one batch-2 decoder call.

This is exact algebra (LayerNorm and rotary act per token, so memory rows can be projected
separately); only float summation order differs from `GuidedLMDM`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .lmdm import NUM_TIME_TOKENS, FiLMDecoderLayer, GuidedLMDM, apply_rotary, classifier_free_guidance

_QUERY, _KEY, _VALUE = 0, 1, 2


def _in_projection(attention: nn.MultiheadAttention, part: int) -> tuple[Tensor, Tensor]:
    """Weight and bias of the query, key or value in-projection: views into the packed parameters."""
    rows = slice(part * attention.embed_dim, (part + 1) * attention.embed_dim)
    return attention.in_proj_weight[rows], attention.in_proj_bias[rows]


def _split_heads(v: Tensor, num_heads: int) -> Tensor:
    """(B, N, D) → (B, heads, N, D/heads)."""
    return v.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def _memory_keys_values(layer: FiLMDecoderLayer, rotated: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-attention keys (from rotated memory rows) and values (from unrotated ones), split into heads."""
    attention = layer.multihead_attn
    keys = F.linear(rotated, *_in_projection(attention, _KEY))
    values = F.linear(memory, *_in_projection(attention, _VALUE))
    return _split_heads(keys, attention.num_heads), _split_heads(values, attention.num_heads)


def _cross_attend_cached(layer: FiLMDecoderLayer, queries: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """`FiLMDecoderLayer.cross_attend` with the memory already projected to keys and values."""
    attention = layer.multihead_attn
    q = _split_heads(F.linear(layer.rotary(queries), *_in_projection(attention, _QUERY)), attention.num_heads)
    attended = F.scaled_dot_product_attention(q, keys, values)
    return attention.out_proj(attended.transpose(1, 2).flatten(-2))


@dataclass(frozen=True)
class ScheduleCache:
    """Condition-independent constants for one table of time steps (valid while the weights are unchanged)."""

    time_cond: Tensor  # (S,) int64
    time_vec: Tensor  # (S, D): the time vector before the pooled condition is added
    time_keys: list[Tensor]  # per layer (S, heads, 2, D/heads)
    time_values: list[Tensor]
    null_keys: list[Tensor]  # per layer (1, heads, frames, D/heads)
    null_values: list[Tensor]
    null_modulations: list[list[Tensor]]  # per layer, per FiLM: (S, 2D)


@dataclass(frozen=True)
class ClipCache:
    """Constants of one clip; batch rows are [unconditional pass; conditional pass]."""

    schedule: ScheduleCache
    cond_frame: Tensor  # (2B, F)
    cond_keys: list[Tensor]  # per layer (2B, heads, frames, D/heads)
    cond_values: list[Tensor]
    modulations: list[list[Tensor]]  # per layer, per FiLM: (S, 2B, 2D)


class HoistedLMDM(nn.Module):
    """The same function as `GuidedLMDM`, sharing its modules and weights, for a DDIM loop.

    Usage: `schedule = prepare_schedule(time_cond_table)` once, `clip = prepare_clip(cond_frame,
    cond, schedule)` per clip, then `pred_noise, x_start = hoisted(x, clip, step_index)` per step.
    """

    def __init__(self, guided: GuidedLMDM) -> None:
        super().__init__()
        self.guided = guided

    @property
    def _layers(self) -> list[FiLMDecoderLayer]:
        return list(self.guided.model.decoder_layers)

    def _memory_rotary(self) -> tuple[Tensor, Tensor]:
        """Rotary tables of the full memory: condition tokens, then the time tokens."""
        decoder = self.guided.model
        return decoder.rotary.cos_sin(decoder.seq_frames + NUM_TIME_TOKENS)

    def _condition_memory(self, tokens: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per-layer cross-attention keys/values of condition tokens (B, frames, D), positions 0..frames−1."""
        decoder = self.guided.model
        cos, sin = self._memory_rotary()
        memory = decoder.norm_cond(tokens)
        rotated = apply_rotary(memory, cos[:decoder.seq_frames], sin[:decoder.seq_frames])
        return [_memory_keys_values(layer, rotated, memory) for layer in self._layers]

    @torch.no_grad()
    def prepare_schedule(self, time_cond: Tensor | np.ndarray) -> ScheduleCache:
        """Precomputes everything that depends only on the time steps (S,) and the weights."""
        decoder = self.guided.model
        device = decoder.null_cond_hidden.device
        time_cond = torch.as_tensor(time_cond, dtype=torch.int64, device=device)
        time_vec, time_tokens = decoder.time_features(time_cond)
        cos, sin = self._memory_rotary()
        time_memory = decoder.norm_cond(time_tokens)
        rotated = apply_rotary(time_memory, cos[decoder.seq_frames:], sin[decoder.seq_frames:])
        time_kv = [_memory_keys_values(layer, rotated, time_memory) for layer in self._layers]
        null_tokens, null_hidden = decoder.null_condition(1)
        null_kv = self._condition_memory(null_tokens)
        return ScheduleCache(
            time_cond=time_cond, time_vec=time_vec,
            time_keys=[k for k, _ in time_kv], time_values=[v for _, v in time_kv],
            null_keys=[k for k, _ in null_kv], null_values=[v for _, v in null_kv],
            null_modulations=[[film.modulation(time_vec + null_hidden) for film in layer.films]
                              for layer in self._layers])

    @torch.no_grad()
    def prepare_clip(self, cond_frame: Tensor, cond: Tensor, schedule: ScheduleCache) -> ClipCache:
        """Runs the condition encoder once and precomputes the clip's keys/values and modulations."""
        batch = cond.shape[0]
        tokens, hidden = self.guided.model.encode_condition(cond)
        cond_kv = self._condition_memory(tokens)
        steps = schedule.time_vec.shape[0]
        cond_time_vec = schedule.time_vec[:, None, :] + hidden[None, :, :]  # (S, B, D)
        modulations = [
            [torch.cat((null[:, None, :].expand(steps, batch, -1), film.modulation(cond_time_vec)), dim=1)
             for film, null in zip(layer.films, null_mods)]
            for layer, null_mods in zip(self._layers, schedule.null_modulations)]
        return ClipCache(
            schedule=schedule, cond_frame=torch.cat((cond_frame, cond_frame)),
            cond_keys=[torch.cat((null.expand(batch, -1, -1, -1), keys))
                       for null, (keys, _) in zip(schedule.null_keys, cond_kv)],
            cond_values=[torch.cat((null.expand(batch, -1, -1, -1), values))
                         for null, (_, values) in zip(schedule.null_values, cond_kv)],
            modulations=modulations)

    @torch.no_grad()
    def forward(self, x: Tensor, clip: ClipCache, step: int) -> tuple[Tensor, Tensor]:
        """(pred_noise, x_start) for x (B, frames, F) at `step`, an index into the schedule's time table."""
        decoder = self.guided.model
        schedule = clip.schedule
        both = 2 * x.shape[0]
        if clip.cond_frame.shape[0] != both:
            raise ValueError(f"HoistedLMDM: x has batch {x.shape[0]} but the clip was prepared for batch "
                             f"{clip.cond_frame.shape[0] // 2}")
        h = decoder.project_input(torch.cat((x, x)), clip.cond_frame)
        for index, layer in enumerate(self._layers):
            keys = torch.cat((clip.cond_keys[index],
                              schedule.time_keys[index][step].expand(both, -1, -1, -1)), dim=2)
            values = torch.cat((clip.cond_values[index],
                                schedule.time_values[index][step].expand(both, -1, -1, -1)), dim=2)
            h = layer.block(h, partial(_cross_attend_cached, layer, keys=keys, values=values),
                            [modulation[step] for modulation in clip.modulations[index]])
        unconditional, conditional = decoder.final_layer(h).chunk(2)
        x_start = classifier_free_guidance(unconditional, conditional)
        time_cond = schedule.time_cond[step].expand(x.shape[0])
        return self.guided.noise_from_start(x, x_start, time_cond), x_start
