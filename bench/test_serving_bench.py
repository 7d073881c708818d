"""K live sessions in one session engine (their due frames batched across sessions through one
warp/decoder) against K separate engines of one session each, side by side in one run.

Each session pushes the same seconds of demo speech as fast as it is accepted and reads its
frames as they come; `extra_info` records the sustained frames/s per session (frames after the
first over the time they took), the aggregate frames/s, and the first-frame latency (open → first
frame) p50/p99 over the K sessions. Tree: the shipped synthetic-tiny. Backends: onnxruntime by
default (its warp network file takes one frame, so on the CPU the engine shares scheduling, not
batches); `DITTO_FAST_BENCH_BACKENDS=onnxruntime,torch` adds torch, which takes the whole
cross-session batch (the figure that matters on a GPU; torch on the CPU is not a serving path).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from ditto_fast import Renderer
from ditto_fast.serving.engine import SessionEngine
from ditto_fast.tools.demo import demo_speech, write_demo_inputs

SECONDS = 2.0
NO_IDLE = 3600.0  # the speech is all pushed at once: no idle frames


BACKENDS = os.environ.get("DITTO_FAST_BENCH_BACKENDS", "onnxruntime").split(",")


@pytest.fixture(scope="module", params=BACKENDS)
def setup(request, tmp_path_factory):
    if request.param == "torch":
        pytest.importorskip("torch")
    renderer = Renderer(backend=request.param)
    portrait, _ = write_demo_inputs(tmp_path_factory.mktemp("serving"), seconds=SECONDS)
    with SessionEngine(renderer, idle_after=NO_IDLE) as engine:  # warm-up: first runs, allocations
        _run_sessions([engine], [engine.add_avatar(portrait)], 2)
    return renderer, portrait


def _run_sessions(engines: list[SessionEngine], avatar_ids: list[str], sessions_per_engine: int) -> dict:
    speech = demo_speech(SECONDS)
    sessions = [engine.open(avatar, seed=0) for engine, avatar in zip(engines, avatar_ids)
                for _ in range(sessions_per_engine)]
    records: list[tuple[float, float, int]] = []
    lock = threading.Lock()

    def consume(session) -> None:
        first = None
        count = 0
        for _ in session.frames(timeout=300):
            count += 1
            if first is None:
                first = time.perf_counter()
        with lock:
            records.append((first - session.opened, time.perf_counter() - first, count))

    threads = [threading.Thread(target=consume, args=(session,)) for session in sessions]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    for session in sessions:
        session.push(speech)
        session.end()
    for thread in threads:
        thread.join(timeout=600)
    wall = time.perf_counter() - started
    for session in sessions:
        session.close()
    latencies = np.array([r[0] for r in records])
    return {
        "sessions": len(sessions),
        "frames_per_session_per_second": float(np.mean([(r[2] - 1) / r[1] for r in records])),
        "aggregate_frames_per_second": sum(r[2] for r in records) / wall,
        "first_frame_latency_p50_s": float(np.percentile(latencies, 50)),
        "first_frame_latency_p99_s": float(np.percentile(latencies, 99)),
    }


# The two ways side by side for each K (the innermost parameter varies first).
@pytest.mark.parametrize("engines", ["one engine", "separate engines"])
@pytest.mark.parametrize("sessions", [1, 2, 4, 8])
def test_sessions(benchmark, setup, sessions, engines):
    renderer, portrait = setup
    count = 1 if engines == "one engine" else sessions
    pool = [SessionEngine(renderer, max_sessions=sessions, idle_after=NO_IDLE) for _ in range(count)]
    try:
        avatar_ids = [engine.add_avatar(portrait) for engine in pool]
        outcome = benchmark.pedantic(_run_sessions, args=(pool, avatar_ids, sessions // count), rounds=1,
                                     iterations=1)
    finally:
        for engine in pool:
            engine.close()
    benchmark.extra_info.update(outcome, backend=renderer.backend, batch=pool[0].warp_decode.batch_size)
