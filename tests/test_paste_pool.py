"""The native paste-back's shared thread pool (src/thread_pool.cpp): concurrent calls from Python
threads give the bytes of sequential calls, the pool starts its workers once rather than per
call, a forked child gets a working pool of its own, and the work runs without the GIL."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ditto_fast._core import paste_back

CORES = len(os.sched_getaffinity(0))
# Thread counts a call may ask for: 0 (one per core), fewer than the cores, and more.
THREAD_COUNTS = (0, 1, 2, 3, 5)


def _matrix(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = np.radians(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


def _jobs() -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(frame, render, mask, m_c2o): HWC and channel-first renders, crops inside the frame and
    over its edges, values past the clamps."""
    rng = np.random.default_rng(11)
    jobs = []
    for i, m_c2o in enumerate([_matrix(0.5, 7.0, 60.3, 20.7), _matrix(0.8, -30.0, 250.0, -80.0),
                               _matrix(0.35, 120.0, 380.0, 260.0)]):
        frame = rng.integers(0, 256, size=(300, 420, 3), dtype=np.uint8)
        mask = rng.uniform(-0.3, 1.3, size=(256, 256)).astype(np.float32)
        if i % 2:
            render = rng.uniform(-0.1, 1.1, size=(1, 3, 256, 256)).astype(np.float32)
        else:
            render = rng.uniform(-20, 280, size=(256, 256, 3)).astype(np.float32)
        jobs.append((frame, render, mask, m_c2o))
    return jobs


def test_concurrent_calls_give_the_bytes_of_sequential_calls() -> None:
    jobs = _jobs()
    expected = [paste_back(*job, threads=1) for job in jobs]
    for job, out in zip(jobs, expected):
        assert (out != job[0]).any()  # the face landed

    def paste(call: int) -> bool:
        index = call % len(jobs)
        frame, render, mask, m_c2o = jobs[index]
        threads = THREAD_COUNTS[call % len(THREAD_COUNTS)]
        if call % 3 == 0:  # in place, on a copy of the frame
            out = frame.copy()
            paste_back(out, render, mask, m_c2o, out=out, threads=threads)
        else:
            out = paste_back(frame, render, mask, m_c2o, threads=threads)
        return bool(np.array_equal(out, expected[index]))

    with ThreadPoolExecutor(max_workers=8) as callers:
        results = list(callers.map(paste, range(240)))
    assert all(results), f"{results.count(False)} of {len(results)} concurrent calls differ"


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not pathlib.Path("/proc/self/task").is_dir(), reason="needs Linux's /proc/self/task")
def test_pool_starts_its_workers_once() -> None:
    # In a fresh interpreter: no other test's threads come and go while the threads are counted.
    result = _run(f"""
        import os
        import numpy as np
        from ditto_fast._core import paste_back

        def threads():
            return len(os.listdir("/proc/self/task"))

        rng = np.random.default_rng(0)
        frame = rng.integers(0, 256, size=(600, 600, 3), dtype=np.uint8)
        render = rng.uniform(0, 255, size=(512, 512, 3)).astype(np.float32)
        mask = np.ones((512, 512), np.float32)
        m_c2o = np.array([[0.9, 0.1, 40.0], [-0.1, 0.9, 60.0]])
        before = threads()
        paste_back(frame, render, mask, m_c2o, threads=0)
        started = threads()
        for call in range(200):
            paste_back(frame, render, mask, m_c2o, threads={THREAD_COUNTS!r}[call % {len(THREAD_COUNTS)}])
        print(before, started, threads())
    """)
    assert result.returncode == 0, result.stderr
    before, started, after = map(int, result.stdout.split())
    # The first call starts one worker per core but one (the calling thread works too; its 600
    # rows make 75 units of work), which stay for the calls after it.
    assert started - before == min(CORES, 75) - 1
    assert after == started


@pytest.mark.skipif(not pathlib.Path("/proc/self/task").is_dir(), reason="needs Linux's /proc/self/task")
def test_forked_child_pastes_with_a_pool_of_its_own() -> None:
    # The child has none of the parent's workers (and may have copied the pool's mutex locked):
    # it gets a new pool, which starts workers of its own.
    result = _run("""
        import os, warnings
        import numpy as np
        from ditto_fast._core import paste_back

        rng = np.random.default_rng(1)
        frame = rng.integers(0, 256, size=(300, 300, 3), dtype=np.uint8)
        render = rng.uniform(0, 255, size=(256, 256, 3)).astype(np.float32)
        mask = rng.uniform(0, 1, size=(256, 256)).astype(np.float32)
        m_c2o = np.array([[0.8, 0.2, 20.0], [-0.2, 0.8, 70.0]])
        expected = paste_back(frame, render, mask, m_c2o, threads=0)
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() with threads running
        pid = os.fork()
        if pid == 0:
            same = all(np.array_equal(paste_back(frame, render, mask, m_c2o, threads=t), expected) for t in (0, 2))
            print(len(os.listdir("/proc/self/task")), flush=True)
            os._exit(0 if same else 3)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
    """)
    assert result.returncode == 0, result.stderr
    child_threads, child_status = map(int, result.stdout.split())
    assert child_status == 0
    assert child_threads == min(CORES, 38)  # the forking thread and its new workers (300 rows: 38 units)


def test_the_work_runs_without_the_gil() -> None:
    # One long call on a thread of its own; meanwhile this thread notes the time, which it can
    # do only while the call does not hold the GIL.
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, size=(3000, 3000, 3), dtype=np.uint8)
    render = rng.uniform(0, 255, size=(512, 512, 3)).astype(np.float32)
    mask = rng.uniform(0, 1, size=(512, 512)).astype(np.float32)
    m_c2o = np.array([[5.8, 0.3, 0.0], [-0.3, 5.8, 100.0]])  # the crop covers most of the frame
    call = threading.Thread(target=lambda: [paste_back(frame, render, mask, m_c2o, threads=1) for _ in range(3)])
    stamps = []
    start = time.perf_counter()
    call.start()
    while call.is_alive():
        stamps.append(time.perf_counter())
    call.join()
    elapsed = time.perf_counter() - start
    longest_gap = max(np.diff([start, *stamps]), default=elapsed)
    # Holding the GIL, one call would stop this loop for a third of the time.
    assert longest_gap < elapsed / 6, f"this thread stalled {longest_gap:.3f} s of {elapsed:.3f} s"
