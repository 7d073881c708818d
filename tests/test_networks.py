"""NetworkSet: which file each backend loads, loaded once, on first use."""

from __future__ import annotations

import pathlib
import threading

import numpy as np
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


def test_devices_are_checked_and_auxiliary_networks_of_a_torch_set_stay_on_the_cpu():
    pytest.importorskip("torch")
    for bad in ("gpu", "cuda:x", "cpu:0", ""):
        with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N'"):
            NetworkSet(find_tree(TINY), device=bad)
    # A torch set on "cuda" opens detection, landmarks and HuBERT with onnxruntime on the CPU: the
    # onnxruntime beside a GPU build of torch usually has only its CPU provider.
    networks = NetworkSet(find_tree(TINY), backend="torch", device="cuda")
    assert networks.aux_device == "cpu" and networks["hubert"].device == "cpu"


def test_replace_and_loaded_are_the_seams_for_a_callers_own_network():
    networks = NetworkSet(find_tree(TINY))
    assert networks.loaded() == ()
    stand_in = object()
    networks.replace("decoder", stand_in)
    assert networks["decoder"] is stand_in and networks.loaded() == ("decoder",)
    with pytest.raises(KeyError, match="no network 'vocoder'"):
        networks.replace("vocoder", stand_in)


def test_executors_are_per_job_and_take_device_arrays():
    networks = NetworkSet(find_tree(TINY))
    stitch = networks["stitch_network"]
    first, second = stitch.executor(), stitch.executor()
    assert first is not second and first.array_kind == "numpy"
    kp = np.zeros((1, 21, 3), np.float32)
    np.testing.assert_array_equal(first(kp_source=kp, kp_driving=kp)[0], stitch(kp_source=kp, kp_driving=kp)[0])
    torch = pytest.importorskip("torch")
    bound = stitch.executor("torch")  # an IO binding of its own, on torch tensors where they live
    (out,) = bound(kp_source=torch.from_numpy(kp), kp_driving=torch.from_numpy(kp))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), stitch(kp_source=kp, kp_driving=kp)[0])
