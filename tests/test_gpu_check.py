"""bench/gpu_check.sh's CPU rehearsal, end to end: how CI knows the one-shot GPU check runs.

The rehearsal reuses this environment (no venv, no build: `--reuse-env`), still checks offline
dependency resolution with pip's dry run, and runs every section of bench/gpu_check.py on the CPU
at small sizes. The JSON must have the GPU run's shape: every section present, each measured with
all its result keys or skipped with a reason, and nothing failed.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import shutil
import subprocess

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(240)
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_rehearsal_writes_the_gpu_runs_json_shape(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run(["bash", str(SCRIPT), "--rehearse", "--reuse-env", "--out", str(out), "--budget", "200"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=230)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    doc = json.loads((out / "gpu_check.json").read_text())
    gpu_check = load_gpu_check()
    assert gpu_check.shape_problems(doc) == []
    assert gpu_check.errors_in(doc) == [], gpu_check.errors_in(doc)
    assert doc["mode"] == "rehearsal" and doc["config"]["device"] == "cpu"
    assert list(doc["sections"]) == list(gpu_check.SECTIONS)
    for name, entry in doc["sections"].items():
        assert entry["status"] in ("measured", "skipped"), (name, entry.get("reason"))
    # The sections that exercise the device code path all ran in the rehearsal.
    for name in ("machine", "install", "kernels", "correctness_fp32", "correctness_fp16", "cuda_graphs", "tflops",
                 "offline", "online", "serving"):
        assert doc["sections"][name]["status"] == "measured", (name, doc["sections"][name].get("reason"))
    results = {name: entry["results"] for name, entry in doc["sections"].items()}
    assert results["kernels"]["ddim_update"]["bit_exact"]
    assert all(v["bit_exact"] for v in results["kernels"]["paste_back"].values())
    assert results["correctness_fp32"]["within_tolerance"] is True
    for steps in ("steps50", "steps10"):  # the same keys as on the GPU
        assert set(results["offline"]["frames_only"][steps]) == {f"b{b}" for b in gpu_check.BATCHES}
        assert set(results["offline"]["mp4"][steps]) == {f"b{b}" for b in gpu_check.BATCHES}
    assert set(results["tflops"]["batches"]) == {f"b{b}" for b in gpu_check.BATCHES}
    install = {step["name"]: step for step in results["install"]["steps"]}
    assert install["resolve"]["rc"] == 0 and install["import"]["rc"] == 0
    assert (out / "install.json").is_file() and (out / "gpu_check.log").is_file()


def test_the_shape_check_names_what_is_missing():
    gpu_check = load_gpu_check()
    doc = {"schema": gpu_check.SCHEMA, "sections": {
        "machine": {"status": "measured", "results": {}},
        "install": {"status": "skipped"},
        "tree": {"status": "skipped", "reason": "x", "results": {"a": {"skipped": ""}}},
    }}
    problems = gpu_check.shape_problems(doc)
    assert any(p.startswith("section machine: results lack") for p in problems)
    assert "section install: skipped without a reason" in problems
    assert "section kernels missing" in problems
    assert "tree.results.a.skipped: skipped without a reason" in problems
