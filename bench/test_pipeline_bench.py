"""End-to-end speed on checkpoints/synthetic-tiny (CPU, onnxruntime): offline frames per second,
and the online path's first-frame latency and steady-state frame rate.

The tiny networks are cheap, so these figures measure the pipeline around the networks
(registration, diffusion loop, stitch, paste-back, encoding, scheduling) more than the networks.
"""

from __future__ import annotations

import pathlib
import threading
import time

import pytest

from ditto_fast import Renderer
from ditto_fast.tools.demo import demo_speech, write_demo_inputs

TINY = pathlib.Path(__file__).resolve().parents[1] / "checkpoints" / "synthetic-tiny"
SECONDS = 4.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    renderer = Renderer(TINY)
    portrait, speech = write_demo_inputs(tmp_path_factory.mktemp("bench"), seconds=SECONDS)
    return renderer, renderer.register(portrait), speech


def test_offline_render_to_file(benchmark, setup, tmp_path):
    renderer, avatar, speech = setup
    result = benchmark.pedantic(renderer.render_to_file, args=(avatar, speech, tmp_path / "o.mp4"),
                                kwargs={"seed": 0}, rounds=3, iterations=1)
    benchmark.extra_info.update(frames=result.frames)
    if benchmark.stats is not None:  # None under --benchmark-disable: nothing was timed
        benchmark.extra_info.update(frames_per_second=result.frames / benchmark.stats["mean"])


def _stream_once(renderer, avatar, audio):
    """(first-frame latency, steady frames/s after it, frames): audio pushed as fast as accepted."""
    session = renderer.stream(avatar, seed=0)
    started = time.perf_counter()
    feeder = threading.Thread(target=lambda: (session.push(audio), session.end()))
    feeder.start()
    first = None
    count = 0
    for _ in session.frames(timeout=120):
        count += 1
        if first is None:
            first = time.perf_counter()
    done = time.perf_counter()
    feeder.join()
    session.close()
    return first - started, (count - 1) / (done - first), count


def test_online_first_frame_latency(benchmark, setup):
    renderer, avatar, _ = setup
    audio = demo_speech(SECONDS)
    outcomes = []
    benchmark.pedantic(lambda: outcomes.append(_stream_once(renderer, avatar, audio)), rounds=3, iterations=1)
    latencies = sorted(o[0] for o in outcomes)
    benchmark.extra_info.update(
        first_frame_latency_s_median=latencies[len(latencies) // 2],  # one outcome under --benchmark-disable
        steady_frames_per_second=sorted(o[1] for o in outcomes)[len(outcomes) // 2],
        frames=outcomes[0][2],
        note="audio pushed faster than real time: the latency is compute after the chunking rule's "
             "audio (2V = 20 features at overlap 70) is available",
    )
