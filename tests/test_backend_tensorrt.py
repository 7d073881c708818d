"""TensorRT backend: import guard and load-time engine introspection.

TensorRT cannot be installed on our machines, so a stand-in module with TensorRT's
introspection API (tensor names, modes, shapes, dtypes) drives the load path; execution on a
GPU is not exercised here.
"""

from __future__ import annotations

import importlib
import sys
import types

import pytest

from ditto_fast.backends.base import MissingBackendError
from ditto_fast.contract import ContractError

MODULE = "ditto_fast.backends.tensorrt"


def fake_tensorrt(engines: dict[bytes, list[tuple[str, str, tuple, str]] | None]):
    """A module with the slice of TensorRT's API the backend uses at load time."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.99-fake"
    for name in ("float32", "float16", "int32", "int64", "int8", "bool"):
        setattr(trt, name, f"dtype:{name}")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.init_libnvinfer_plugins = lambda logger, namespace: True

    class Engine:
        def __init__(self, tensors):
            self.tensors = tensors
            self.num_io_tensors = len(tensors)

        def get_tensor_name(self, i):
            return self.tensors[i][0]

        def _find(self, name):
            return next(t for t in self.tensors if t[0] == name)

        def get_tensor_mode(self, name):
            return self._find(name)[1]

        def get_tensor_shape(self, name):
            return self._find(name)[2]

        def get_tensor_dtype(self, name):
            return f"dtype:{self._find(name)[3]}"

        def create_execution_context(self):
            return object()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            tensors = engines.get(data)
            return None if tensors is None else Engine(tensors)

    trt.Runtime = Runtime
    return trt


def load_backend(monkeypatch, trt_module):
    pytest.importorskip("torch")
    monkeypatch.setitem(sys.modules, "tensorrt", trt_module)
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    return importlib.import_module(MODULE)


LMDM_TENSORS = [  # as a TensorRT 8.6 build exposes them: int32 time_cond, outputs reordered
    ("x", "in", (1, 80, 265), "float32"),
    ("cond_frame", "in", (1, 265), "float32"),
    ("cond", "in", (1, 80, 1103), "float32"),
    ("time_cond", "in", (1,), "int32"),
    ("x_start", "out", (1, 80, 265), "float32"),
    ("pred_noise", "out", (1, 80, 265), "float32"),
]


def test_missing_tensorrt_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    with pytest.raises(MissingBackendError, match="needs NVIDIA TensorRT's Python package"):
        importlib.import_module(MODULE)


def test_engine_tensors_are_checked_and_ordered(monkeypatch, tmp_path):
    backend = load_backend(monkeypatch, fake_tensorrt({b"lmdm": LMDM_TENSORS}))
    path = tmp_path / "lmdm_v0.4_hubert_fp32.engine"
    path.write_bytes(b"lmdm")
    net = backend.TensorRTNetwork("lmdm", path)
    assert [t.name for t in net.outputs] == ["pred_noise", "x_start"]
    assert {t.name: t.dtype for t in net.inputs}["time_cond"] == "int64"  # int32 engine accepted
    assert net.engine_dtypes["time_cond"] == "int32"  # and cast to at the boundary


def test_misshapen_engine_names_the_tensor(monkeypatch, tmp_path):
    tensors = [("feature", "in", (1, 256, 32, 32), "float32"),
               ("output", "out", (1, 3, 512, 512), "float32")]
    backend = load_backend(monkeypatch, fake_tensorrt({b"dec": tensors}))
    path = tmp_path / "decoder_fp16.engine"
    path.write_bytes(b"dec")
    with pytest.raises(ContractError, match="decoder input 'feature' is \\[1, 256, 32, 32\\]"):
        backend.TensorRTNetwork("decoder", path)


def test_undeserialisable_engine_says_to_rebuild(monkeypatch, tmp_path):
    backend = load_backend(monkeypatch, fake_tensorrt({}))
    path = tmp_path / "decoder_fp16.engine"
    path.write_bytes(b"built by TensorRT 8.6")
    with pytest.raises(ValueError, match="cannot deserialise .*rebuild it from the ONNX file with TensorRT 10.99-fake"):
        backend.TensorRTNetwork("decoder", path)
    with pytest.raises(FileNotFoundError, match="engine of decoder is missing"):
        backend.TensorRTNetwork("decoder", tmp_path / "none.engine")
