"""Random-weight `.pth` files of the core networks in the official checkpoint formats.

`full` builds the real architectures at their real sizes (for benchmarks); `tiny` builds the
small variants of `models.TINY_KWARGS`. Weights come from PyTorch's default initialisation
under a fixed seed, so the same seed writes byte-identical files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from ditto_fast.models import TINY_KWARGS, build_network
from ditto_fast.models.checkpoint_format import LMDM_ENTRY, STITCH_ENTRY

Size = Literal["tiny", "full"]


def official_checkpoint(name: str, module: torch.nn.Module) -> dict:
    """`module`'s weights wrapped the way the official file of `name` wraps them."""
    if name == "stitch_network":  # saved from a DataParallel wrapper, among other MLPs
        return {STITCH_ENTRY: {f"module.{k}": v for k, v in module.state_dict().items()}}
    if name == "lmdm":  # a training checkpoint of the inner MotionDecoder
        return {LMDM_ENTRY: module.model.state_dict()}
    return module.state_dict()


def random_network(name: str, size: Size, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(name, **(TINY_KWARGS[name] if size == "tiny" else {}))


def write_checkpoint(name: str, path: Path, size: Size, seed: int) -> int:
    """Write one random `.pth`; returns its parameter count."""
    module = random_network(name, size, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(official_checkpoint(name, module), path)
    return sum(p.numel() for p in module.parameters())
