"""`ditto-fast info` and the build facts the native module reports."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys

import pytest

import ditto_fast
from ditto_fast import _core, environment
from ditto_fast.cli import main


def test_core_reports_its_build():
    assert _core.__version__ == ditto_fast.__version__
    assert isinstance(_core.cuda_compiled, bool)
    devices, reason = _core.cuda_devices()
    assert isinstance(devices, list)
    if not devices:
        assert reason  # an empty list always comes with the reason
    if _core.cuda_compiled:
        assert _core.cuda_runtime_version() >= 12000
        for arch in ("80", "86", "89", "90"):
            assert arch in _core.cuda_architectures
    else:
        assert _core.cuda_runtime_version() == 0
        assert reason == "built without CUDA"


def test_module_needs_no_cuda_library_at_load_time():
    """cudart is linked statically and libcuda is opened lazily, so a machine without a GPU
    or driver can import the module."""
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf is not installed")
    dynamic = subprocess.run([readelf, "-d", _core.__file__], capture_output=True, text=True,
                             check=True).stdout
    needed = [line for line in dynamic.splitlines() if "(NEEDED)" in line]
    assert needed, "readelf listed no NEEDED entries"
    assert not [line for line in needed if "libcuda" in line], needed


def test_info_command_prints_one_line_per_fact():
    out = subprocess.run(
        [sys.executable, "-m", "ditto_fast.cli", "info"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.splitlines()
    assert out[0] == f"ditto_fast: {ditto_fast.__version__}"
    assert out[1].startswith("CUDA compiled in: " + ("yes" if _core.cuda_compiled else "no"))
    assert out[2].startswith("GPUs: ")
    labels = [line.split(":", 1)[0] for line in out[3:]]
    assert labels == ["onnxruntime", "torch", "tensorrt", "cupy", "triton", "PyAV"]


def test_console_script_is_installed():
    script = shutil.which("ditto-fast")
    if script is None:
        pytest.skip("ditto-fast is not on PATH (package installed without scripts dir on PATH)")
    result = subprocess.run([script, "info"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ditto_fast: ")


def test_info_survives_missing_and_broken_optional_parts(monkeypatch, capsys):
    real_import = importlib.import_module

    def fake_import(name, *args):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        if name == "tensorrt":
            raise OSError("libnvinfer.so.10: cannot open shared object file\nsecond line")
        if name == "cupy":
            raise RuntimeError()
        return real_import(name, *args)

    monkeypatch.setattr(environment.importlib, "import_module", fake_import)
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "torch: not available (No module named 'torch')" in lines
    assert "tensorrt: not available (libnvinfer.so.10: cannot open shared object file)" in lines
    assert "cupy: not available (RuntimeError)" in lines


def test_available_part_reports_its_version():
    status = environment.probe_part("numpy", "numpy")
    import numpy

    assert status.available and status.detail == numpy.__version__
    assert status.line() == f"numpy: {numpy.__version__}"


def test_gpu_lines_are_readable():
    device = {"ordinal": 0, "name": "NVIDIA H100 80GB HBM3", "compute_capability": (9, 0),
              "total_memory": 85 * 2**30}
    assert environment.format_gpu(device) == "[0] NVIDIA H100 80GB HBM3 (sm_90, 85.0 GiB)"
