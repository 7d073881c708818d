"""The onnxruntime backend: sessions, contract checks at load, and errors that name the file."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

pytest.importorskip("onnxruntime")

from ditto_fast.backends.base import Network  # noqa: E402
from ditto_fast.backends.onnxruntime import OnnxRuntimeNetwork, session_options  # noqa: E402
from ditto_fast.contract import ContractError  # noqa: E402


def stitch_model(kp_shape=(1, 21, 3), output_name="out") -> onnx.ModelProto:
    """kp_driving + 0.5 * kp_source, with the stitch network's tensor names."""
    src = helper.make_tensor_value_info("kp_source", TensorProto.FLOAT, list(kp_shape))
    drv = helper.make_tensor_value_info("kp_driving", TensorProto.FLOAT, list(kp_shape))
    out = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, list(kp_shape))
    half = helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])
    nodes = [helper.make_node("Mul", ["kp_source", "half"], ["scaled"]),
             helper.make_node("Add", ["kp_driving", "scaled"], [output_name])]
    graph = helper.make_graph(nodes, "stitch", [src, drv], [out], initializer=[half])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_runs_and_reports_its_tensors(tmp_path):
    path = tmp_path / "stitch_network.onnx"
    onnx.save(stitch_model(), path)
    net = OnnxRuntimeNetwork("stitch_network", path)
    assert isinstance(net, Network)
    assert [t.name for t in net.inputs] == ["kp_source", "kp_driving"]
    assert net.outputs[0].shape == (1, 21, 3) and net.outputs[0].dtype == "float32"
    src = np.ones((1, 21, 3), np.float32)
    drv = np.full((1, 21, 3), 2.0, np.float32)
    (out,) = net(kp_source=src, kp_driving=drv)
    np.testing.assert_array_equal(out, np.full((1, 21, 3), 2.5, np.float32))


def test_misshapen_model_is_refused_at_load(tmp_path):
    path = tmp_path / "stitch_network.onnx"
    onnx.save(stitch_model(kp_shape=(1, 20, 3)), path)
    with pytest.raises(ContractError) as info:
        OnnxRuntimeNetwork("stitch_network", path)
    assert str(info.value) == (
        f"{path}: stitch_network input 'kp_source' is [1, 20, 3] float32, "
        "expected [1, 21, 3] float32"
    )


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file of decoder is missing"):
        OnnxRuntimeNetwork("decoder", tmp_path / "decoder.onnx")
    bad = tmp_path / "decoder.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="decoder.onnx: .*cannot load decoder"):
        OnnxRuntimeNetwork("decoder", bad)


def test_session_options_are_deliberate():
    options = session_options(threads=3)
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert options.enable_cpu_mem_arena and options.enable_mem_pattern


def test_session_threads_are_the_thread_budget():
    assert session_options().intra_op_num_threads == len(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match="^threads must be"):
        session_options(threads=-2)


def test_cuda_without_the_provider_says_what_to_install(tmp_path):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    path = tmp_path / "stitch_network.onnx"
    onnx.save(stitch_model(), path)
    with pytest.raises(ImportError, match="pip install onnxruntime-gpu"):
        OnnxRuntimeNetwork("stitch_network", path, device="cuda")
