"""NetworkSet: which file each backend loads, loaded once, on first use."""

from __future__ import annotations

import pathlib
import threading

import pytest

from ditto_fast.backends.registry import NetworkSet, resolve_backend
from ditto_fast.checkpoints import find_tree

TINY = pathlib.Path(__file__).resolve().parents[1] / "checkpoints" / "synthetic-tiny"


def test_onnxruntime_set_loads_every_network_once():
    networks = NetworkSet(find_tree(TINY))
    assert networks.backend == "onnxruntime"
    first = networks["decoder"]
    assert networks["decoder"] is first and first.path.name == "decoder.onnx"
    assert networks["warp_network"].path.name == "warp_network_ori.onnx"
    with pytest.raises(KeyError, match="no network 'vocoder'"):
        networks["vocoder"]


def test_torch_set_mixes_pth_core_and_onnx_auxiliaries():
    pytest.importorskip("torch")
    networks = NetworkSet(find_tree(TINY), backend="torch")
    assert networks["lmdm"].path.name == "lmdm_v0.4_hubert.pth"
    assert networks["hubert"].path.name == "hubert_streaming_fix_kv.onnx"
    assert networks["insightface_det"].path.parent.name == "aux_models"


def test_concurrent_first_use_loads_once():
    networks = NetworkSet(find_tree(TINY))
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(networks["stitch_network"])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(n) for n in seen}) == 1


def test_backend_names():
    assert resolve_backend("auto") == "onnxruntime"
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        resolve_backend("openvino")
