"""Sessions per engine replica on Ray Serve: R = 1 and 2 CPU replicas (one thread each), 2
sessions per replica pushing 2 s of speech as fast as accepted, through the real cluster
(tests/cluster_scenarios.py `capacity`: Ray Serve's proxy, the ingress, the replicas) inside a
network namespace with only loopback. `extra_info`: per R, aggregate frames/s over the run's wall
time, first-video latency p50, and the sessions one replica keeps at 25 fps (frames/s / R / 25).
The timed figure is the whole scenario (cluster start included): not a throughput.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))


def test_cluster_capacity(benchmark, tmp_path):
    pytest.importorskip("ray.serve")
    from test_serving_cluster import scenario

    found = benchmark.pedantic(scenario, args=("capacity", tmp_path, 600), rounds=1, iterations=1)
    for figures in found.values():
        assert figures["sessions_ok"] == figures["sessions"]
    for name, figures in found.items():
        replicas = int(name.rsplit("_", 1)[1])
        benchmark.extra_info[name] = {**figures, "sessions_at_25_fps_per_replica":
                                      figures["frames_per_second"] / replicas / 25}
