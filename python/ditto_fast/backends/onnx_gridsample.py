"""Between the warp network's two ONNX forms: TensorRT's `GridSample3D` plugin node and the
standard 5-D `GridSample` (opset >= 20) that onnxruntime runs.

The official `warp_network.onnx` (opset 17) replaces both 5-D grid samples with the custom
op `GridSample3D`; onnxruntime cannot run it. Rewriting a node alone is not enough: 5-D
`GridSample` needs opset 20, and moving a graph from opset 17 to 20 changes other operators
(the Reduce* family takes `axes` as an input from opset 18). So the custom nodes are parked
in a private domain, the whole graph goes through ONNX's version converter, and the parked
nodes come back as the standard op.

The other direction keeps the graph's opset: ONNX has no adapters down from opset 20 for
several ops, and TensorRT >= 10 parses opset 20 and resolves the unknown `GridSample3D` node
as a plugin by name whatever the opset.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import onnx
from onnx import helper, version_converter

CUSTOM_OP = "GridSample3D"
NATIVE_OP = "GridSample"
NATIVE_OPSET = 20  # first opset whose GridSample accepts 5-D input
_PARKED_DOMAIN = "ditto_fast.parked"
# Bump when the rewrite changes, so cached files from an older rewrite are not reused.
_REWRITE_VERSION = 1

# Plugin attribute encodings (integers) and the standard op's string attributes.
_MODES = {0: "linear", 1: "nearest"}
_PADDINGS = {0: "zeros", 1: "border", 2: "reflection"}


class GridSampleRewriteError(ValueError):
    """A grid-sample node cannot be expressed in the other form."""


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _native_from_plugin(node: onnx.NodeProto, where: str) -> onnx.NodeProto:
    attrs = _attributes(node)
    mode, padding = attrs.get("interpolation_mode", 0), attrs.get("padding_mode", 0)
    if mode not in _MODES or padding not in _PADDINGS:
        raise GridSampleRewriteError(
            f"{where}: node {node.name!r} has interpolation_mode={mode}, padding_mode={padding}; "
            f"supported are {_MODES} and {_PADDINGS}"
        )
    return helper.make_node(
        NATIVE_OP, list(node.input), list(node.output), name=node.name,
        mode=_MODES[mode], padding_mode=_PADDINGS[padding],
        align_corners=int(attrs.get("align_corners", 0)),
    )


def _plugin_from_native(node: onnx.NodeProto, where: str) -> onnx.NodeProto:
    attrs = _attributes(node)
    mode = attrs.get("mode", b"linear").decode()
    padding = attrs.get("padding_mode", b"zeros").decode()
    modes = {v: k for k, v in _MODES.items()} | {"bilinear": 0}  # opset-16 spelling
    paddings = {v: k for k, v in _PADDINGS.items()}
    if mode not in modes or padding not in paddings:
        raise GridSampleRewriteError(
            f"{where}: node {node.name!r} uses mode={mode!r}, padding_mode={padding!r}, which the "
            f"{CUSTOM_OP} plugin does not implement"
        )
    return helper.make_node(
        CUSTOM_OP, list(node.input), list(node.output), name=node.name,
        interpolation_mode=modes[mode], padding_mode=paddings[padding],
        align_corners=int(attrs.get("align_corners", 0)),
    )


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.ModelProto.FromString(model.SerializeToString())  # never mutate the caller's


def count_plugin_nodes(model: onnx.ModelProto) -> int:
    return sum(node.op_type == CUSTOM_OP for node in model.graph.node)


def to_native(model: onnx.ModelProto, where: str = "model") -> onnx.ModelProto:
    """GridSample3D plugin nodes → standard GridSample at opset >= 20; other ops upgraded."""
    model = _copy(model)
    for node in model.graph.node:
        if node.op_type == CUSTOM_OP:
            node.domain = _PARKED_DOMAIN
    model.opset_import.append(helper.make_opsetid(_PARKED_DOMAIN, 1))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    model = version_converter.convert_version(model, max(opset, NATIVE_OPSET))
    for index, node in enumerate(model.graph.node):
        if node.domain == _PARKED_DOMAIN:
            model.graph.node[index].CopyFrom(_native_from_plugin(node, where))
    kept = [o for o in model.opset_import if o.domain != _PARKED_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    onnx.checker.check_model(model)
    return model


def to_plugin(model: onnx.ModelProto, where: str = "model") -> onnx.ModelProto:
    """Standard GridSample nodes → GridSample3D plugin nodes (the official warp_network.onnx
    form that TensorRT builds with the plugin); the opset is kept. The checker does not know
    the plugin op, so the result is not validated here."""
    model = _copy(model)
    for index, node in enumerate(model.graph.node):
        if node.op_type == NATIVE_OP:
            model.graph.node[index].CopyFrom(_plugin_from_native(node, where))
    return model


def cache_dir() -> Path:
    """Where rewritten models are kept: $DITTO_FAST_CACHE, else ~/.cache/ditto_fast."""
    base = os.environ.get("DITTO_FAST_CACHE") or Path.home() / ".cache" / "ditto_fast"
    return Path(base) / "onnx"


def native_model_path(path: str | Path) -> Path:
    """`path` itself when it runs on onnxruntime; otherwise a cached native rewrite of it.

    The cache key covers the file's identity (path, size, modification time) and the rewrite
    version, so an edited or replaced checkpoint is rewritten again. The rewrite is written to
    a temporary file and renamed, so a crash never leaves a half-written model in the cache.
    """
    path = Path(path).resolve()
    model = onnx.load(str(path), load_external_data=False)
    if count_plugin_nodes(model) == 0:
        return path
    stat = path.stat()
    key = hashlib.sha256(
        f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{_REWRITE_VERSION}".encode()
    ).hexdigest()[:16]
    target = cache_dir() / f"{path.stem}.native.{key}.onnx"
    if target.is_file():
        return target
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        model = onnx.load(str(path))  # weights beside the file must travel with the rewrite
    native = to_native(model, str(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".partial")
    os.close(fd)
    try:
        onnx.save(native, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
