"""Turning a checkpoint's ONNX file into the graph a TensorRT build parses.

Most networks are parsed straight from their file. Three things need a rewritten copy:

- the warp network's 5-D grid samples, in the form the installed TensorRT can build: the
  `GridSample3D` plugin node (TensorRT 10, served by `plugin`) or the standard opset-20
  `GridSample` (TensorRT >= 11.2.1, which added 5-D grid sampling);
- a batch profile (`--batch`), which needs a symbolic leading dimension on every input and
  output, and a graph that does not pin the batch at 1 internally;
- fp32 layers inside an fp16 engine, found by node name (the ONNX parser names each
  TensorRT layer after its node), so those nodes must have unique, non-empty names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import onnx
from onnx import helper, shape_inference

from ditto_fast.backends.onnx_gridsample import (
    GridSampleRewriteError,
    count_plugin_nodes,
    to_native,
    to_plugin,
)
from ditto_fast.backends.tensorrt_plugin import PLUGIN_ID, PLUGIN_NAME, PLUGIN_NAMESPACE
from ditto_fast.checkpoints import NATIVE_WARP_ONNX, ONNX_DIR, file_stem
from ditto_fast.tools.engines.plan import BuildPlan

GridSampleForm = Literal["plugin", "native"]
GRID_SAMPLE_CHOICES = ("auto", "plugin", "native")
NATIVE_GRID_SAMPLE_TRT = (11, 2, 1)  # the first TensorRT whose GridSample takes 5-D input
BATCH_DIM = "batch"
# The plugin implements these attributes at these values only (the warp network's use).
PLUGIN_ATTRIBUTES = {"interpolation_mode": 0, "padding_mode": 0, "align_corners": 0}


@dataclass(frozen=True)
class PreparedOnnx:
    path: Path  # the file to parse
    fp32_layers: tuple[str, ...] = ()  # node names, hence TensorRT layer names, kept in fp32


def version_tuple(version: str) -> tuple[int, ...]:
    """`10.7.0.post1` → (10, 7, 0)."""
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def grid_sample_form(trt_version: str, requested: str = "auto") -> GridSampleForm:
    """The grid-sample form to build with: `auto` takes the native op where TensorRT has it."""
    if requested not in GRID_SAMPLE_CHOICES:
        raise ValueError(f"grid-sample form must be one of {GRID_SAMPLE_CHOICES}, got {requested!r}")
    native_supported = version_tuple(trt_version) >= NATIVE_GRID_SAMPLE_TRT
    if requested == "auto":
        return "native" if native_supported else "plugin"
    if requested == "native" and not native_supported:
        raise ValueError(
            f"TensorRT {trt_version} has no 5-D GridSample (it arrived in "
            f"{'.'.join(map(str, NATIVE_GRID_SAMPLE_TRT))}); build the warp network with the plugin form"
        )
    return requested  # type: ignore[return-value]


def onnx_folder(path: str | Path) -> Path:
    """Accept the `ditto_onnx/` folder or a checkpoint tree that contains it."""
    path = Path(path)
    if (path / ONNX_DIR).is_dir():
        path = path / ONNX_DIR
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: ONNX folder does not exist")
    return path


def onnx_candidates(onnx_dir: Path, network: str, form: GridSampleForm) -> tuple[Path, ...]:
    """The files `network` can be built from, preferred first: for the warp network, the
    file already in the wanted grid-sample form, else the other one (rewritten)."""
    if network != "warp_network":
        return (onnx_dir / f"{file_stem(network)}.onnx",)
    plugin_file, native_file = onnx_dir / f"{file_stem(network)}.onnx", onnx_dir / NATIVE_WARP_ONNX
    return (plugin_file, native_file) if form == "plugin" else (native_file, plugin_file)


def find_onnx(onnx_dir: Path, network: str, form: GridSampleForm) -> Path | None:
    return next((path for path in onnx_candidates(onnx_dir, network, form) if path.is_file()), None)


def _plugin_form(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """GridSample3D nodes addressed to our plugin, with exactly the attributes it declares."""
    if count_plugin_nodes(model) == 0:
        model = to_plugin(model, where)
    for node in model.graph.node:
        if node.op_type != PLUGIN_NAME:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs.pop("plugin_namespace", None)
        values = {name: attrs.pop(name, default) for name, default in PLUGIN_ATTRIBUTES.items()}
        if attrs or values != PLUGIN_ATTRIBUTES:
            found = ", ".join(f"{k}={v}" for k, v in {**values, **attrs}.items())
            raise GridSampleRewriteError(
                f"{where}: node {node.name!r} has {found}; the {PLUGIN_ID} plugin implements only "
                "trilinear sampling with zero padding and align_corners=0"
            )
        del node.attribute[:]
        node.attribute.extend(helper.make_attribute(k, v) for k, v in values.items())
        # How TensorRT's ONNX parser finds a Python plugin: op type = name, this = namespace.
        node.attribute.append(helper.make_attribute("plugin_namespace", PLUGIN_NAMESPACE))
    return model


def _native_form(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    return to_native(model, where) if count_plugin_nodes(model) else model


def _first_dim(value: onnx.ValueInfoProto) -> onnx.TensorShapeProto.Dimension:
    return value.type.tensor_type.shape.dim[0]


def _dynamic_batch(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """Make the leading dimension of every input and output symbolic, and check by shape
    inference that the graph carries it through (a Reshape or Expand to a constant shape
    would pin it at 1, and TensorRT would reject the profile)."""
    weights = {init.name for init in model.graph.initializer}
    for value in (*model.graph.input, *model.graph.output):
        if value.name not in weights:
            dim = _first_dim(value)
            dim.ClearField("dim_value")
            dim.dim_param = BATCH_DIM
    del model.graph.value_info[:]  # stale batch-1 shapes of intermediate tensors
    inferred = shape_inference.infer_shapes(_native_form(model, where))
    pinned = [out.name for out in inferred.graph.output if _first_dim(out).dim_param != BATCH_DIM]
    if pinned:
        raise ValueError(
            f"{where}: the graph fixes the batch size of {pinned} at 1 (a Reshape or Expand to a "
            "constant shape); a batch profile needs an ONNX export with a dynamic batch dimension"
        )
    return model


def _unused_name(base: str, taken: set[str]) -> str:
    name, suffix = base, 0
    while name in taken:
        suffix += 1
        name = f"{base}_{suffix}"
    return name


def _name_nodes(model: onnx.ModelProto, op_types: tuple[str, ...], where: str) -> tuple[str, ...]:
    """Unique names for the nodes of `op_types` (renaming empty or repeated ones)."""
    taken = {node.name for node in model.graph.node}
    names: list[str] = []
    for index, node in enumerate(model.graph.node):
        if node.op_type not in op_types:
            continue
        if not node.name or node.name in names:
            node.name = _unused_name(f"{node.op_type}_{index}", taken)
            taken.add(node.name)
        names.append(node.name)
    if op_types and not names:
        raise ValueError(f"{where}: no {'/'.join(op_types)} node to keep in fp32")
    return tuple(names)


def prepare_onnx(plan: BuildPlan, source: Path, form: GridSampleForm, workdir: Path) -> PreparedOnnx:
    """The ONNX file to build `plan` from: `source` itself, or a rewritten copy in `workdir`."""
    if plan.network != "warp_network" and plan.max_batch == 1 and not plan.fp32_ops:
        return PreparedOnnx(source)
    where = str(source)
    model = onnx.load(where)
    if plan.network == "warp_network":
        model = _plugin_form(model, where) if form == "plugin" else _native_form(model, where)
    if plan.max_batch > 1:
        model = _dynamic_batch(model, where)
    fp32_layers = _name_nodes(model, plan.fp32_ops, where)
    target = workdir / f"{file_stem(plan.network)}.onnx"
    onnx.save(model, str(target))
    return PreparedOnnx(target, fp32_layers)
