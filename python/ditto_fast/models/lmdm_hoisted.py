"""A guided LMDM step with its step- and clip-invariant work hoisted out (DITTO_SPEC §4.6).

Within one clip the DDIM loop calls the guided model 50 times with the same `cond` and
`cond_frame` and a fixed table of time steps. Everything that depends only on those is computed
once here instead of 100 times (50 steps × 2 guidance passes):

- per schedule (`prepare_schedule`, reusable across clips): time embeddings, the cross-attention
  keys/values of the 2 time tokens, and the unconditional pass's null-condition keys/values and
  FiLM modulations;
- per clip (`prepare_clip`): the condition encoder, the cross-attention keys/values of the 80
  condition tokens, the conditional pass's FiLM modulations for every step and the first
  frame's share of the input projection;
- per step (`forward`): both guidance passes as one batch-2 decoder call.

This is exact algebra (LayerNorm and rotary act per token, so memory rows can be projected
separately; a linear map of a concatenation is the sum of its parts); only float summation
order differs from `GuidedLMDM`.

Caches are stacked over the decoder layers (leading axis L) so that a clip is a handful of
tensors: `ClipPreparation` and `GuidedStepFromCache` are the same computation as modules with
tensor inputs and outputs only, the form ONNX export needs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .lmdm import NUM_TIME_TOKENS, FiLMDecoderLayer, GuidedLMDM, MotionDecoder, apply_rotary, classifier_free_guidance

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


def _stack_layers(per_layer: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Per-layer (keys, values) pairs → keys (L, ...) and values (L, ...)."""
    keys, values = zip(*per_layer)
    return torch.stack(keys), torch.stack(values)


def _cross_attend_cached(layer: FiLMDecoderLayer, queries: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """`FiLMDecoderLayer.cross_attend` with the memory already projected to keys and values."""
    attention = layer.multihead_attn
    q = _split_heads(F.linear(layer.rotary(queries), *_in_projection(attention, _QUERY)), attention.num_heads)
    attended = F.scaled_dot_product_attention(q, keys, values)
    return attention.out_proj(attended.transpose(1, 2).flatten(-2))


def _input_projection_columns(decoder: MotionDecoder) -> tuple[Tensor, Tensor]:
    """The input projection's weight columns that act on x and on the repeated first frame."""
    weight = decoder.input_projection.weight
    half = weight.shape[1] // 2
    return weight[:, :half], weight[:, half:]


def _at_step(table: Tensor, step: Tensor, dim: int) -> Tensor:
    """The slice of `table` at `step` (1,) along `dim`; a tensor index so an exported graph takes the step as input."""
    return table.index_select(dim, step).squeeze(dim)


@dataclass(frozen=True)
class ScheduleCache:
    """Condition-independent constants for one table of time steps (valid while the weights are unchanged)."""

    time_cond: Tensor  # (S,) int64
    time_vec: Tensor  # (S, D): the time vector before the pooled condition is added
    time_keys: Tensor  # (L, S, heads, 2, D/heads)
    time_values: Tensor
    null_keys: Tensor  # (L, 1, heads, frames, D/heads)
    null_values: Tensor
    null_modulations: Tensor  # (L, 3 FiLMs, S, 1, 2D)


@dataclass(frozen=True)
class ClipCache:
    """Everything a step reads; batch rows of the memory and modulations are [unconditional; conditional]."""

    time_cond: Tensor  # (S,) int64, the schedule's time table
    frame_projection: Tensor  # (B, D): cond_frame's share of the input projection, bias included
    memory_keys: Tensor  # (L, 2B, heads, frames, D/heads): condition-token keys
    memory_values: Tensor
    time_keys: Tensor  # (L, S, heads, 2, D/heads): time-token keys of every step
    time_values: Tensor
    modulations: Tensor  # (L, 3 FiLMs, S, 2B, 2D)

    def prepared(self) -> tuple[Tensor, ...]:
        """The tensors computed from the inputs (all fields after time_cond) in field order, so
        `ClipCache(time_cond, *prepared)` rebuilds the cache."""
        return tuple(getattr(self, f.name) for f in fields(self)[1:])


PREPARED_NAMES: tuple[str, ...] = tuple(f.name for f in fields(ClipCache)[1:])
# The axis of each ClipCache tensor that runs over the time table's S steps (free in exported graphs).
STEPS_AXIS: dict[str, int] = {"time_cond": 0, "time_keys": 1, "time_values": 1, "modulations": 2}


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

    def _condition_memory(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys/values (L, B, heads, frames, D/heads) of condition tokens (B, frames, D)."""
        decoder = self.guided.model
        cos, sin = self._memory_rotary()
        memory = decoder.norm_cond(tokens)
        rotated = apply_rotary(memory, cos[:decoder.seq_frames], sin[:decoder.seq_frames])
        return _stack_layers([_memory_keys_values(layer, rotated, memory) for layer in self._layers])

    def _modulations(self, t_vec: Tensor) -> Tensor:
        """Every FiLM's [scale | shift] for time vectors t_vec (..., D) → (L, 3, ..., 2D)."""
        return torch.stack([torch.stack([film.modulation(t_vec) for film in layer.films]) for layer in self._layers])

    @torch.no_grad()
    def prepare_schedule(self, time_cond: Tensor | np.ndarray) -> ScheduleCache:
        """Precomputes everything that depends only on the time steps (S,) and the weights."""
        decoder = self.guided.model
        device = decoder.null_cond_hidden.device
        time_cond = torch.as_tensor(time_cond, dtype=torch.int64, device=device)
        if time_cond.ndim != 1 or time_cond.shape[0] == 0:
            raise ValueError(f"HoistedLMDM.prepare_schedule: time_cond must be a non-empty 1-D table of steps, "
                             f"got shape {tuple(time_cond.shape)}")
        time_vec, time_tokens = decoder.time_features(time_cond)
        cos, sin = self._memory_rotary()
        time_memory = decoder.norm_cond(time_tokens)
        rotated = apply_rotary(time_memory, cos[decoder.seq_frames:], sin[decoder.seq_frames:])
        time_keys, time_values = _stack_layers([_memory_keys_values(layer, rotated, time_memory)
                                                for layer in self._layers])
        null_tokens, null_hidden = decoder.null_condition(1)
        null_keys, null_values = self._condition_memory(null_tokens)
        # (S, 1, D) like the conditional pass's (S, B, D): an exported graph then holds each FiLM weight once
        null_modulations = self._modulations((time_vec + null_hidden)[:, None, :])
        return ScheduleCache(time_cond=time_cond, time_vec=time_vec, time_keys=time_keys, time_values=time_values,
                             null_keys=null_keys, null_values=null_values, null_modulations=null_modulations)

    @torch.no_grad()
    def prepare_clip(self, cond_frame: Tensor, cond: Tensor, schedule: ScheduleCache) -> ClipCache:
        """Runs the condition encoder once and precomputes the clip's keys/values and modulations."""
        decoder = self.guided.model
        batch = cond.shape[0]
        tokens, hidden = decoder.encode_condition(cond)
        cond_keys, cond_values = self._condition_memory(tokens)
        cond_modulations = self._modulations(schedule.time_vec[:, None, :] + hidden[None, :, :])  # (L, 3, S, B, 2D)
        null_modulations = schedule.null_modulations.expand(-1, -1, -1, batch, -1)
        _, frame_columns = _input_projection_columns(decoder)
        return ClipCache(
            time_cond=schedule.time_cond,
            frame_projection=F.linear(cond_frame, frame_columns, decoder.input_projection.bias),
            memory_keys=torch.cat((schedule.null_keys.expand(-1, batch, -1, -1, -1), cond_keys), dim=1),
            memory_values=torch.cat((schedule.null_values.expand(-1, batch, -1, -1, -1), cond_values), dim=1),
            time_keys=schedule.time_keys, time_values=schedule.time_values,
            modulations=torch.cat((null_modulations, cond_modulations), dim=3))

    @torch.no_grad()
    def forward(self, x: Tensor, clip: ClipCache, step: int | Tensor) -> tuple[Tensor, Tensor]:
        """(pred_noise, x_start) for x (B, frames, F) at `step`, an index into the clip's time table."""
        decoder = self.guided.model
        batch = x.shape[0]
        if clip.frame_projection.shape[0] != batch:
            raise ValueError(f"HoistedLMDM: x has batch {batch} but the clip was prepared for batch "
                             f"{clip.frame_projection.shape[0]}")
        steps = clip.time_cond.shape[0]
        if not isinstance(step, Tensor) and not 0 <= step < steps:  # an exported graph's step is a tensor
            raise IndexError(f"HoistedLMDM: step {step} is outside the clip's time table of {steps} steps")
        index = torch.as_tensor(step, dtype=torch.int64, device=x.device).reshape(1)
        x_columns, _ = _input_projection_columns(decoder)
        h = F.linear(x, x_columns) + clip.frame_projection[:, None, :]
        h = torch.cat((h, h))  # both guidance passes start from the same tokens
        per_layer = zip(self._layers, clip.memory_keys, clip.memory_values, _at_step(clip.time_keys, index, 1),
                        _at_step(clip.time_values, index, 1), _at_step(clip.modulations, index, 2))
        for layer, memory_keys, memory_values, time_keys, time_values, modulations in per_layer:
            keys = torch.cat((memory_keys, time_keys.expand(2 * batch, -1, -1, -1)), dim=2)
            values = torch.cat((memory_values, time_values.expand(2 * batch, -1, -1, -1)), dim=2)
            h = layer.block(h, partial(_cross_attend_cached, layer, keys=keys, values=values), modulations.unbind(0))
        unconditional, conditional = decoder.final_layer(h).chunk(2)
        x_start = classifier_free_guidance(unconditional, conditional)
        time_cond = _at_step(clip.time_cond, index, 0).expand(batch)
        return self.guided.noise_from_start(x, x_start, time_cond), x_start


class ClipPreparation(nn.Module):
    """`prepare_schedule` + `prepare_clip` as one tensors-only module (an export form):
    (cond_frame (B, F), cond (B, frames, C), time_cond (S,)) → `ClipCache.prepared()`."""

    def __init__(self, hoisted: HoistedLMDM) -> None:
        super().__init__()
        self.hoisted = hoisted

    def forward(self, cond_frame: Tensor, cond: Tensor, time_cond: Tensor) -> tuple[Tensor, ...]:
        return self.hoisted.prepare_clip(cond_frame, cond, self.hoisted.prepare_schedule(time_cond)).prepared()


class GuidedStepFromCache(nn.Module):
    """The hoisted step as a tensors-only module (an export form):
    (x, time_cond (S,), step () int64, *`ClipCache.prepared()`) → (pred_noise, x_start)."""

    def __init__(self, hoisted: HoistedLMDM) -> None:
        super().__init__()
        self.hoisted = hoisted

    def forward(self, x: Tensor, time_cond: Tensor, step: Tensor, *prepared: Tensor) -> tuple[Tensor, Tensor]:
        return self.hoisted(x, ClipCache(time_cond, *prepared), step)
