"""GridSample3D (TensorRT plugin op) ↔ standard 5-D GridSample rewrites, run on onnxruntime."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from grid_sample_reference import grid_sample_3d
from onnx import TensorProto, helper

ort = pytest.importorskip("onnxruntime")

from ditto_fast.backends import onnx_gridsample as gs  # noqa: E402


def plugin_warp_model() -> onnx.ModelProto:
    """Opset-17 graph shaped like the official warp net's use of the plugin: two GridSample3D
    nodes around an opset-17 ReduceMean (whose `axes` becomes an input at opset 18)."""
    volume = helper.make_tensor_value_info("volume", TensorProto.FLOAT, [1, 2, 3, 4, 5])
    grid = helper.make_tensor_value_info("grid", TensorProto.FLOAT, [1, 3, 4, 5, 3])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, 3, 4, 5])
    nodes = [
        helper.make_node("GridSample3D", ["volume", "grid"], ["warped"],
                         name="/dense_motion_network/GridSample",
                         interpolation_mode=0, padding_mode=0, align_corners=0),
        helper.make_node("GridSample3D", ["warped", "grid"], ["twice"], name="/GridSample",
                         interpolation_mode=0, padding_mode=0, align_corners=0),
        helper.make_node("ReduceMean", ["twice"], ["out"], axes=[1], keepdims=1),
    ]
    graph = helper.make_graph(nodes, "warp_like", [volume, grid], [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    volume = rng.standard_normal((1, 2, 3, 4, 5)).astype(np.float32)
    grid = rng.uniform(-1.2, 1.2, (1, 3, 4, 5, 3)).astype(np.float32)  # some samples outside
    return volume, grid


def run(model: onnx.ModelProto, volume, grid) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"volume": volume, "grid": grid})[0]


def test_plugin_graph_becomes_runnable_and_matches_the_trilinear_reference():
    volume, grid = inputs()
    native = gs.to_native(plugin_warp_model(), "warp.onnx")
    assert gs.count_plugin_nodes(native) == 0
    ops = [n.op_type for n in native.graph.node]
    assert ops.count("GridSample") == 2
    default_opset = {o.domain: o.version for o in native.opset_import}[""]
    assert default_opset == 20
    sample = next(n for n in native.graph.node if n.op_type == "GridSample")
    attrs = {a.name: helper.get_attribute_value(a) for a in sample.attribute}
    assert attrs == {"mode": b"linear", "padding_mode": b"zeros", "align_corners": 0}
    expected = grid_sample_3d(grid_sample_3d(volume.astype(np.float64), grid), grid).mean(1, keepdims=True)
    np.testing.assert_allclose(run(native, volume, grid), expected, atol=1e-5)


def test_native_to_plugin_and_back_is_lossless():
    volume, grid = inputs(1)
    native = gs.to_native(plugin_warp_model())
    plugin = gs.to_plugin(native)
    assert gs.count_plugin_nodes(plugin) == 2
    assert {o.domain: o.version for o in plugin.opset_import}[""] == 20  # kept
    np.testing.assert_array_equal(run(gs.to_native(plugin), volume, grid), run(native, volume, grid))


def test_unsupported_plugin_attributes_are_refused():
    model = plugin_warp_model()
    mode = next(a for a in model.graph.node[0].attribute if a.name == "interpolation_mode")
    mode.i = 7
    with pytest.raises(gs.GridSampleRewriteError, match="w.onnx: node '/dense_motion_network/GridSample'"):
        gs.to_native(model, "w.onnx")


def test_rewrite_is_cached_and_invalidated(tmp_path, monkeypatch):
    monkeypatch.setenv("DITTO_FAST_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "warp_network.onnx"
    onnx.save(plugin_warp_model(), path)
    first = gs.native_model_path(path)
    assert first.parent == tmp_path / "cache" / "onnx" and first != path
    assert gs.native_model_path(path) == first  # reused
    assert not list(first.parent.glob("*.partial"))
    volume, grid = inputs(2)
    np.testing.assert_allclose(run(onnx.load(first), volume, grid),
                               run(gs.to_native(plugin_warp_model()), volume, grid))
    os.utime(path, ns=(1, 1))  # a replaced file (other mtime) gets a new cache entry
    assert gs.native_model_path(path) != first
    native_file = tmp_path / "native.onnx"
    onnx.save(gs.to_native(plugin_warp_model()), native_file)
    assert gs.native_model_path(native_file) == native_file.resolve()  # nothing to rewrite
