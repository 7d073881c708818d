"""PyTorch definitions of Ditto's networks: the five LivePortrait-derived ones and LMDM.

Default constructor arguments give the real sizes, whose state dicts match the official
checkpoints key for key; `TINY_KWARGS` gives small variants with the same input/output
contract, for tests and the synthetic-tiny checkpoints. LMDM is built as `GuidedLMDM`, the
module with the official ONNX graph's contract (both guidance passes and the noise formula);
its checkpoint holds the inner `MotionDecoder`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ditto_fast.models.appearance import AppearanceFeatureExtractor
from ditto_fast.models.decoder import SPADEDecoder
from ditto_fast.models.lmdm import GuidedLMDM, MotionDecoder
from ditto_fast.models.motion import MotionExtractor
from ditto_fast.models.stitch import StitchingNetwork
from ditto_fast.models.warp import WarpingNetwork

NETWORK_CLASSES: dict[str, type[nn.Module]] = {
    "appearance_extractor": AppearanceFeatureExtractor,
    "motion_extractor": MotionExtractor,
    "warp_network": WarpingNetwork,
    "decoder": SPADEDecoder,
    "stitch_network": StitchingNetwork,
    "lmdm": GuidedLMDM,
}

# Widths the I/O contract fixes (image channels, the 32x16 feature volume, 256 warp channels,
# 21 keypoints, 66 angle bins, the 256-channel label map) keep their real values.
TINY_KWARGS: dict[str, dict[str, Any]] = {
    "appearance_extractor": {"block_expansion": 4, "max_features": 8, "num_resblocks": 1},
    "motion_extractor": {"depths": (1, 1, 1, 1), "dims": (8, 16, 32, 64)},
    "warp_network": {
        "dense_motion_params": {
            "block_expansion": 4, "max_features": 8, "num_blocks": 2, "compress": 1, "mask_kernel_size": 3,
        },
    },
    "decoder": {"hidden_channels": 16, "up_channels": (8, 4), "num_middle_blocks": 1, "spade_hidden": 4},
    "stitch_network": {"hidden_sizes": (16, 16, 8)},
    "lmdm": {"latent_dim": 32, "ff_dim": 64, "num_layers": 2, "num_heads": 4, "num_cond_layers": 2},
}


def build_network(name: str, **kwargs: Any) -> nn.Module:
    """Construct the network called `name` (a key of NETWORK_CLASSES) with size keyword arguments."""
    try:
        network_class = NETWORK_CLASSES[name]
    except KeyError:
        known = sorted(NETWORK_CLASSES)
        raise ValueError(f"build_network: unknown network {name!r}; expected one of {known}") from None
    return network_class(**kwargs)


__all__ = [
    "NETWORK_CLASSES",
    "TINY_KWARGS",
    "AppearanceFeatureExtractor",
    "GuidedLMDM",
    "MotionDecoder",
    "MotionExtractor",
    "SPADEDecoder",
    "StitchingNetwork",
    "WarpingNetwork",
    "build_network",
]
