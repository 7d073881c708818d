"""Exporting our torch modules (with `.pth` weights loaded and folded) to contract ONNX files.

The export is checked, not trusted: every file is loaded by the onnxruntime backend (which
enforces the tensor contract) and run on the same random inputs as the torch module; the
largest difference is reported and must stay under a per-network tolerance.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from ditto_fast.backends.onnx_gridsample import to_plugin
from ditto_fast.backends.onnxruntime import OnnxRuntimeNetwork
from ditto_fast.backends.torch import TorchNetwork
from ditto_fast.checkpoints import NATIVE_WARP_ONNX, PYTORCH_DIR, PYTORCH_FILES, file_stem
from ditto_fast.contract import MODELS

EXPORT_OPSET = 20  # 5-D GridSample needs it
CORE_NETWORKS = ("appearance_extractor", "motion_extractor", "warp_network", "decoder",
                 "stitch_network", "lmdm")
ONNX_NAMES = {name: f"{file_stem(name)}.onnx" for name in CORE_NETWORKS}
PTH_FILES = {name: PYTORCH_FILES[file_stem(name)] for name in CORE_NETWORKS}
# Largest |onnxruntime - torch| accepted, relative to the output's scale (at least 1): the
# two runtimes sum in different orders, so fp32 results differ in the last bits.
TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExportReport:
    network: str
    files: tuple[Path, ...]
    max_abs_diff: float
    scale: float  # max |torch output|

    def line(self) -> str:
        names = ", ".join(p.name for p in self.files)
        return f"{self.network}: {names} (max |ort - torch| = {self.max_abs_diff:.2e}, output scale {self.scale:.2g})"


IMAGE_NETWORKS = frozenset({"appearance_extractor", "motion_extractor"})


def contract_example(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs shaped by the contract: images in [0, 1], features around 0, and a
    mid-schedule diffusion step for LMDM."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for t in MODELS[name].inputs:
        if name in IMAGE_NETWORKS:
            arrays[t.name] = rng.uniform(0, 1, t.shape).astype(t.dtype)
        else:
            arrays[t.name] = rng.normal(0, 0.3, t.shape).astype(t.dtype)
    if name == "lmdm":
        arrays["time_cond"] = np.array([519], np.int64)
    return arrays


def _export(net: TorchNetwork, path: Path, example: dict[str, np.ndarray]) -> None:
    spec = MODELS[net.name]
    inputs = tuple(torch.from_numpy(example[t.name]) for t in spec.inputs)
    # The TorchScript exporter (chosen because the newer one needs onnxscript) warns about
    # its own deprecation and internals: static shape checks traced as constants, which is
    # right for fixed contract shapes, and instance norm's batch statistics, which are what
    # InstanceNorm always uses. None of it is actionable for a user.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.module, inputs, str(path), input_names=[t.name for t in spec.inputs],
            output_names=[t.name for t in spec.outputs], opset_version=EXPORT_OPSET,
            do_constant_folding=True, dynamo=False,
        )


def export_network(name: str, pth: Path, out_dir: Path) -> ExportReport:
    """Export one network from its `.pth`; the warp network yields both ONNX forms."""
    net = TorchNetwork(name, pth)
    example = contract_example(name)
    target = out_dir / (NATIVE_WARP_ONNX if name == "warp_network" else ONNX_NAMES[name])
    _export(net, target, example)
    files = [target]
    if name == "warp_network":  # the TensorRT form with the GridSample3D plugin node
        plugin = out_dir / ONNX_NAMES[name]
        onnx.save(to_plugin(onnx.load(str(target)), str(target)), str(plugin))
        files.append(plugin)
    expected = net(**example)
    worst, scale = 0.0, 0.0
    for path in files:  # the plugin form runs through the backend's rewrite
        got = OnnxRuntimeNetwork(name, path)(**example)
        worst = max(worst, *(float(np.abs(g - e).max()) for g, e in zip(got, expected)))
        scale = max(scale, *(float(np.abs(e).max()) for e in expected))
    tolerance = TOLERANCE * max(scale, 1.0)
    if worst > tolerance:
        raise ValueError(f"{target}: exported {name} differs from torch by {worst:.3g} "
                         f"(tolerance {tolerance:.3g})")
    return ExportReport(name, tuple(files), worst, scale)


def pytorch_models_dir(path: str | Path) -> Path:
    """Accept the `ditto_pytorch/` folder or a tree root that contains it."""
    path = Path(path)
    if (path / PYTORCH_DIR).is_dir():
        path = path / PYTORCH_DIR
    if not (path / "models").is_dir():
        raise FileNotFoundError(f"{path}: no models/ folder (expected a {PYTORCH_DIR}/ folder)")
    return path


def export_tree(
    pytorch: str | Path,
    out: str | Path,
    networks: tuple[str, ...] = CORE_NETWORKS,
    on_done: Callable[[ExportReport], None] | None = None,
) -> list[ExportReport]:
    """Export every core network found under a `ditto_pytorch/` folder into `out`."""
    source = pytorch_models_dir(pytorch)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reports = []
    for name in networks:
        report = export_network(name, source / PTH_FILES[name], out)
        reports.append(report)
        if on_done is not None:
            on_done(report)
    return reports
