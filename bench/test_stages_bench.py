"""One benchmark per pipeline stage, on the workloads `ditto-fast bench` times (ditto_fast.tools.benchmark).

The checkpoint tree is checkpoints/synthetic-tiny unless DITTO_FAST_BENCH_CHECKPOINTS names
another (a full-size tree from `ditto-fast synth --size full` gives the real networks' cost).
pytest-benchmark times each round's wall time; `extra_info` holds the stage's own record
(per-frame time, frames/s, and for the online stage the first-frame latency it reports instead).
"""

from __future__ import annotations

import os
import pathlib

import pytest

from ditto_fast.tools.benchmark import STAGES, BenchSettings, StageResult, Timing, Workbench

TINY = pathlib.Path(__file__).resolve().parents[1] / "checkpoints" / "synthetic-tiny"
CHECKPOINTS = pathlib.Path(os.environ.get("DITTO_FAST_BENCH_CHECKPOINTS", TINY))
SETTINGS = BenchSettings()


@pytest.fixture(scope="module")
def workbench():
    with Workbench(CHECKPOINTS, audio_seconds=SETTINGS.audio_seconds) as bench:
        yield bench


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage(benchmark, workbench, stage):
    run = STAGES[stage].prepare(workbench)
    seconds = []
    try:
        benchmark.pedantic(lambda: seconds.append(run.round()), rounds=SETTINGS.rounds,
                           warmup_rounds=SETTINGS.warmup, iterations=1)
    finally:
        run.close()
    # The last `rounds` calls are the timed ones (with --benchmark-disable there is a single call).
    result = StageResult.of(stage, run, Timing(tuple(seconds[-SETTINGS.rounds:])))
    benchmark.extra_info.update(result.as_dict(), checkpoints=str(CHECKPOINTS))
