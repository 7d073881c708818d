"""Reading the official Ditto PyTorch checkpoints into our modules.

appearance_extractor, motion_extractor, warp_network and decoder files are plain state dicts.
stitch_network.pth holds several retargeting MLPs; only `retarget_shoulder` is used, and its keys
carry a `module.` prefix (saved from a DataParallel wrapper). lmdm_v0.4_hubert.pth is a training
checkpoint whose `model_state_dict` holds the MotionDecoder weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ditto_fast.models.folding import fold_for_inference

STITCH_ENTRY = "retarget_shoulder"
LMDM_ENTRY = "model_state_dict"
_DATA_PARALLEL_PREFIX = "module."

Checkpoint = Mapping[str, Any] | str | os.PathLike[str]


def unwrap_state_dict(net_name: str, checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """The state dict for `net_name` inside `checkpoint` (a loaded object or a .pth path)."""
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{net_name}: checkpoint is a {type(checkpoint).__name__}, expected a dict")
    entry = {"stitch_network": STITCH_ENTRY, "lmdm": LMDM_ENTRY}.get(net_name)
    if entry is None:
        return dict(checkpoint)
    if not isinstance(checkpoint.get(entry), Mapping):
        raise ValueError(f"{net_name}: checkpoint has no {entry!r} dict (found {sorted(checkpoint)})")
    return {key.removeprefix(_DATA_PARALLEL_PREFIX): value for key, value in checkpoint[entry].items()}


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, torch.Tensor):
        return f"shape {list(value.shape)}"
    return f"a {type(value).__name__}"


def check_state_dict(net_name: str, module: nn.Module, state: Mapping[str, Any]) -> None:
    """Raise a one-line ValueError naming the first missing, unexpected or mis-shaped key."""
    expected = module.state_dict()
    mismatched = [
        key
        for key, want in expected.items()
        if not (isinstance(state.get(key), torch.Tensor) and state[key].shape == want.shape)
    ]
    mismatched += [key for key in state if key not in expected]
    if mismatched:
        key = mismatched[0]
        more = f" (and {len(mismatched) - 1} more mismatching keys)" if len(mismatched) > 1 else ""
        raise ValueError(
            f"{net_name}: state dict key {key!r}: expected {_describe(expected.get(key))}, "
            f"found {_describe(state.get(key))}{more}"
        )


def load_state(net_name: str, module: nn.Module, checkpoint: Checkpoint) -> nn.Module:
    """Load an official checkpoint into `module` (strict), then fold BatchNorm and spectral norm.

    Returns `module`, in eval mode and folded, so its state dict no longer matches the file's.
    """
    state = unwrap_state_dict(net_name, checkpoint)
    check_state_dict(net_name, module, state)
    module.load_state_dict(state, strict=True)
    return fold_for_inference(module)
