"""`ditto-fast download`: argument handling and the error without a network.

The real download cannot run here; everything up to the network is exercised.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ditto_fast.cli import build_parser, main
from ditto_fast.tools.download import PARTS, download_checkpoints


def test_arguments_and_defaults():
    args = build_parser().parse_args(["download", "--out", "x"])
    assert args.parts == ["cfg", "onnx"] and args.repo == "digital-avatar/ditto-talkinghead"
    args = build_parser().parse_args(["download", "--out", "x", "--parts", "trt", "pytorch"])
    assert args.parts == ["trt", "pytorch"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["download", "--out", "x", "--parts", "weights"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["download"])  # --out is required


def test_unknown_part_in_the_api():
    with pytest.raises(ValueError, match=r"unknown checkpoint parts \['everything'\]"):
        download_checkpoints("x", ["everything"])


def test_every_part_names_a_tree_folder():
    assert all(p.startswith("ditto_") for patterns in PARTS.values() for p in patterns)


def test_no_network_gives_one_clear_line(tmp_path):
    pytest.importorskip("huggingface_hub")
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2",
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-m", "ditto_fast.cli", "download", "--out", str(tmp_path / "tree"),
         "--parts", "cfg"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ditto-fast download: error: could not fetch")
    assert "run the same command again to resume" in lines[0]


def test_missing_huggingface_hub_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes the import fail
    assert main(["download", "--out", "unused"]) == 1
    assert "pip install 'ditto-fast[download]'" in capsys.readouterr().err
