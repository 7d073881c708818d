"""Exporting our torch modules (with `.pth` weights loaded and folded) to contract ONNX files.

LMDM also gets its hoisted form (models/lmdm_hoisted.py) as two graphs beside the contract one
(backends/onnx_clip_sampling.py names them): "prepare clip" and "guided step".

The export is checked, not trusted: every file is loaded by the onnxruntime backend (which
enforces the tensor contract) and run on the same random inputs as the torch module; the
largest difference is reported and must stay under a per-network tolerance. The hoisted LMDM
graphs are compared with the torch module's plain guided step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from ditto_fast.backends.clip_sampling import ClipSampling
from ditto_fast.backends.onnx_clip_sampling import (
    PLAIN_GRAPH_KEY,
    PREPARE_INPUTS,
    STEP_OUTPUTS,
    STEP_OWN_INPUTS,
    HoistedLmdmFiles,
    file_sha256,
)
from ditto_fast.backends.onnx_gridsample import to_plugin
from ditto_fast.backends.onnxruntime import OnnxRuntimeNetwork
from ditto_fast.backends.torch import TorchNetwork
from ditto_fast.checkpoints import NATIVE_WARP_ONNX, PYTORCH_DIR, PYTORCH_FILES, file_stem
from ditto_fast.contract import MODELS
from ditto_fast.diffusion_schedule import ddim_tables
from ditto_fast.models.lmdm_hoisted import (
    PREPARED_NAMES,
    STEPS_AXIS,
    ClipPreparation,
    GuidedStepFromCache,
    HoistedLMDM,
)

EXPORT_OPSET = 20  # 5-D GridSample needs it
CORE_NETWORKS = ("appearance_extractor", "motion_extractor", "warp_network", "decoder",
                 "stitch_network", "lmdm")
ONNX_NAMES = {name: f"{file_stem(name)}.onnx" for name in CORE_NETWORKS}
PTH_FILES = {name: PYTORCH_FILES[file_stem(name)] for name in CORE_NETWORKS}
# Largest |onnxruntime - torch| accepted, relative to the output's scale (at least 1): the
# two runtimes sum in different orders, so fp32 results differ in the last bits.
TOLERANCE = 1e-4
# The hoisted LMDM graphs are traced with the default sampler's time table and checked with a
# table of another length: the table's length is a free axis of the graphs.
TRACED_STEPS, CHECKED_STEPS = 50, 10


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


def _trace_to_onnx(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], path: Path,
                   input_names: tuple[str, ...], output_names: tuple[str, ...],
                   free_axes: dict[str, int] | None = None) -> None:
    """Trace `module` on `inputs` into an ONNX file; `free_axes` names one axis per tensor left unfixed."""
    dynamic_axes = {name: {axis: "steps"} for name, axis in (free_axes or {}).items()
                    if name in (*input_names, *output_names)}
    # The TorchScript exporter (chosen because the newer one needs onnxscript) warns about
    # its own deprecation and internals: static shape checks traced as constants, which is
    # right for fixed contract shapes, and instance norm's batch statistics, which are what
    # InstanceNorm always uses. None of it is actionable for a user.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, inputs, str(path), input_names=list(input_names), output_names=list(output_names),
            opset_version=EXPORT_OPSET, do_constant_folding=True, dynamic_axes=dynamic_axes or None, dynamo=False,
        )


def export_graph(net: TorchNetwork, path: Path, example: dict[str, np.ndarray]) -> None:
    """Trace `net` on `example` into the ONNX file `path` with the contract's tensor names (no check:
    `export_network` compares the file with torch afterwards)."""
    spec = MODELS[net.name]
    _trace_to_onnx(net.module, tuple(torch.from_numpy(example[t.name]) for t in spec.inputs), path,
                   tuple(t.name for t in spec.inputs), tuple(t.name for t in spec.outputs))


def export_hoisted_lmdm(net: TorchNetwork, lmdm_onnx: Path, example: dict[str, np.ndarray]) -> HoistedLmdmFiles:
    """Write the hoisted LMDM's "prepare clip" and "guided step" graphs beside `lmdm_onnx`, the plain
    graph exported from the same `net`, and mark them as its companions."""
    files = HoistedLmdmFiles.beside(lmdm_onnx)
    hoisted = HoistedLMDM(net.module)
    cond_frame, cond, x = (torch.from_numpy(example[name]) for name in ("cond_frame", "cond", "x"))
    time_cond = torch.from_numpy(ddim_tables(TRACED_STEPS).time_cond.copy())
    preparation = ClipPreparation(hoisted)
    _trace_to_onnx(preparation, (cond_frame, cond, time_cond), files.prepare, PREPARE_INPUTS, PREPARED_NAMES,
                   STEPS_AXIS)
    prepared = preparation(cond_frame, cond, time_cond)
    step = torch.tensor(0, dtype=torch.int64)
    _trace_to_onnx(GuidedStepFromCache(hoisted), (x, time_cond, step, *prepared), files.step,
                   (*STEP_OWN_INPUTS, *PREPARED_NAMES), STEP_OUTPUTS, STEPS_AXIS)
    plain_graph_sha256 = file_sha256(lmdm_onnx)
    for path in (files.prepare, files.step):
        model = onnx.load(str(path))
        onnx.helper.set_model_props(model, {PLAIN_GRAPH_KEY: plain_graph_sha256})
        onnx.save(model, str(path))
    return files


def _hoisted_output_pairs(sampling: ClipSampling, net: TorchNetwork,
                          example: dict[str, np.ndarray]) -> list[tuple[tuple[np.ndarray, ...], ...]]:
    """(hoisted onnxruntime, plain torch) outputs at the first and last step of a CHECKED_STEPS table."""
    table = ddim_tables(CHECKED_STEPS).time_cond
    clip = sampling.prepare_clip(example["cond_frame"], example["cond"], table)
    return [(sampling.guided_step(example["x"], clip, step), net(**{**example, "time_cond": table[step:step + 1]}))
            for step in (0, CHECKED_STEPS - 1)]


def export_network(name: str, pth: Path, out_dir: Path) -> ExportReport:
    """Export one network from its `.pth`; the warp network yields both ONNX forms, LMDM its hoisted graphs too."""
    net = TorchNetwork(name, pth)
    example = contract_example(name)
    target = out_dir / (NATIVE_WARP_ONNX if name == "warp_network" else ONNX_NAMES[name])
    export_graph(net, target, example)
    files = [target]  # each one loadable as the network
    if name == "warp_network":  # the TensorRT form with the GridSample3D plugin node
        plugin = out_dir / ONNX_NAMES[name]
        onnx.save(to_plugin(onnx.load(str(target)), str(target)), str(plugin))
        files.append(plugin)
    companions: tuple[Path, ...] = ()  # found by the backend beside the network's file
    if name == "lmdm":
        hoisted = export_hoisted_lmdm(net, target, example)
        companions = (hoisted.prepare, hoisted.step)
    expected = net(**example)
    loaded = [OnnxRuntimeNetwork(name, path) for path in files]  # the plugin form runs through the backend's rewrite
    pairs = [(network(**example), expected) for network in loaded]
    if companions:
        pairs += _hoisted_output_pairs(loaded[0].clip_sampling, net, example)
    worst = max(float(np.abs(g - e).max()) for got, want in pairs for g, e in zip(got, want))
    scale = max(float(np.abs(e).max()) for _, want in pairs for e in want)
    tolerance = TOLERANCE * max(scale, 1.0)
    if worst > tolerance:
        raise ValueError(f"{target}: exported {name} differs from torch by {worst:.3g} "
                         f"(tolerance {tolerance:.3g})")
    return ExportReport(name, (*files, *companions), worst, scale)


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
