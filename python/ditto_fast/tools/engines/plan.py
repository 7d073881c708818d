"""What each network's TensorRT engine is built with: precision, layers kept in fp32, shape
profiles and the engine's file name.

The precisions follow the reference's converter (DITTO_SPEC §7): the motion extractor,
HuBERT and LMDM stay fp32, as the reference deliberately keeps them; everything else is
fp16, except the warp network's grid samples, which stay fp32 (an fp16 grid coordinate near
the volume's edge is only good to about 1/32 of a voxel on the 64-wide axes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ditto_fast.checkpoints import file_stem
from ditto_fast.contract import HUBERT_LENGTHS, MODELS

Precision = Literal["fp32", "fp16"]

FP32_NETWORKS = frozenset({"motion_extractor", "hubert", "lmdm"})
# ONNX op types an fp16 warp engine keeps in fp32 (both forms of the 5-D grid sample).
GRID_SAMPLE_OPS = ("GridSample", "GridSample3D")
# The per-frame render networks, which an offline render can feed several frames at a time.
BATCH_NETWORKS = ("warp_network", "decoder")


@dataclass(frozen=True)
class ShapeProfile:
    """The shape range one dynamic input accepts, and the shape TensorRT tunes for."""

    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class BuildPlan:
    network: str
    precision: Precision
    engine_name: str  # the file name the checkpoint configs give this network's engine
    fp32_ops: tuple[str, ...] = ()  # ONNX op types kept in fp32 inside an fp16 engine
    profiles: tuple[ShapeProfile, ...] = ()
    max_batch: int = 1  # > 1: every input and output has a dynamic leading (batch) dimension

    def describe(self) -> str:
        parts = [self.precision]
        if self.fp32_ops:
            parts.append(f"{'/'.join(self.fp32_ops)} in fp32")
        if self.max_batch > 1:
            parts.append(f"batch 1..{self.max_batch}")
        elif self.profiles:
            parts.extend(f"{p.input} {p.min[-1]}..{p.max[-1]} (opt {p.opt[-1]})" for p in self.profiles)
        return ", ".join(parts)


def reference_precision(network: str) -> Precision:
    return "fp32" if network in FP32_NETWORKS else "fp16"


def engine_name(network: str) -> str:
    """`decoder_fp16.engine`, `lmdm_v0.4_hubert_fp32.engine`: the names the offline and online
    configs give the engines, which is how the tensorrt backend finds them."""
    return f"{file_stem(network)}_{reference_precision(network)}.engine"


def _batch_profiles(network: str, max_batch: int) -> tuple[ShapeProfile, ...]:
    profiles = []
    for spec in MODELS[network].inputs:
        rest = tuple(int(d) for d in spec.shape[1:])
        profiles.append(ShapeProfile(spec.name, (1, *rest), (max_batch, *rest), (max_batch, *rest)))
    return tuple(profiles)


def plan_for(network: str, *, fp32_only: bool = False, batch: int | None = None) -> BuildPlan:
    """The build plan of one contract network.

    `fp32_only` builds everything in fp32 under the same file names (the names are lookup
    keys, not a promise about precision). `batch` gives the warp network and the decoder a
    batch profile 1..batch tuned for `batch`; other networks keep batch 1.
    """
    if network not in MODELS:
        raise ValueError(f"no network {network!r}; networks are {sorted(MODELS)}")
    if batch is not None and batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    precision = "fp32" if fp32_only else reference_precision(network)
    fp32_ops = GRID_SAMPLE_OPS if network == "warp_network" and precision == "fp16" else ()
    max_batch = batch if batch and network in BATCH_NETWORKS else 1
    if max_batch > 1:
        profiles = _batch_profiles(network, max_batch)
    elif network == "hubert":
        low, opt, high = HUBERT_LENGTHS
        profiles = (ShapeProfile(MODELS["hubert"].inputs[0].name, (1, low), (1, opt), (1, high)),)
    else:
        profiles = ()
    return BuildPlan(network, precision, engine_name(network), fp32_ops, profiles, max_batch)
