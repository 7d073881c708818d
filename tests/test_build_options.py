"""The CMake build options, checked by configuring: DITTO_FAST_CUDA (AUTO / ON / OFF) and
DITTO_FAST_SANITIZE; and the C++ tests of tests/cpp/ (DITTO_FAST_CPP_TESTS), built and run."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

pybind11 = pytest.importorskip("pybind11")
if shutil.which("cmake") is None:
    pytest.skip("cmake is not on PATH", allow_module_level=True)


def configure(tmp_path, option: str, cudacxx: str | None, *defines: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("CUDACXX", None)
    if cudacxx is not None:
        env["CUDACXX"] = cudacxx  # /bin/false stands in for a machine without nvcc
    return subprocess.run(
        ["cmake", "-S", str(ROOT), "-B", str(tmp_path / "build"), f"-DDITTO_FAST_CUDA={option}",
         f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", *defines],
        capture_output=True, text=True, env=env, timeout=300,
    )


@pytest.mark.parametrize("option", ["AUTO", "OFF"])
def test_without_nvcc_cuda_is_skipped(tmp_path, option):
    result = configure(tmp_path, option, "/bin/false")
    assert result.returncode == 0, result.stderr
    assert f"ditto_fast: CUDA sources OFF (option {option})" in result.stdout


def test_on_without_nvcc_fails_with_a_clear_message(tmp_path):
    result = configure(tmp_path, "ON", "/bin/false")
    assert result.returncode != 0
    assert "DITTO_FAST_CUDA=ON but no CUDA compiler (nvcc) was found" in result.stderr


def test_auto_compiles_cuda_when_nvcc_is_found(tmp_path):
    if shutil.which("nvcc") is None:
        pytest.skip("no nvcc on this machine")
    result = configure(tmp_path, "AUTO", None)
    assert result.returncode == 0, result.stderr
    assert "ditto_fast: CUDA sources ON (option AUTO)" in result.stdout


@pytest.mark.parametrize("sanitize", ["address", "thread"])
def test_sanitized_builds_configure(tmp_path, sanitize):
    result = configure(tmp_path, "OFF", "/bin/false", f"-DDITTO_FAST_SANITIZE={sanitize}")
    assert result.returncode == 0, result.stderr
    assert f"ditto_fast: sanitizers '{sanitize}'" in result.stdout


def test_unknown_sanitizer_fails_with_a_clear_message(tmp_path):
    result = configure(tmp_path, "OFF", "/bin/false", "-DDITTO_FAST_SANITIZE=memory")
    assert result.returncode != 0
    assert "DITTO_FAST_SANITIZE must be address, thread or empty, got 'memory'" in result.stderr


def test_cpp_tests_pass(tmp_path):
    result = configure(tmp_path, "OFF", "/bin/false", "-DDITTO_FAST_CPP_TESTS=ON", "-DCMAKE_BUILD_TYPE=Release")
    assert result.returncode == 0, result.stderr
    build = tmp_path / "build"
    for command in (["cmake", "--build", str(build), "--target", "test_thread_pool", "test_paste_concurrency"],
                    ["ctest", "--test-dir", str(build), "--output-on-failure"]):
        step = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert step.returncode == 0, step.stdout + step.stderr
