"""runtime/heap.py: memory freed on other threads goes back to the system."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from ditto_fast.runtime.heap import release_free_heap


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; malloc_trim is glibc's")
def test_pages_freed_by_worker_threads_are_returned():
    def churn() -> None:
        # Many mid-sized blocks (below glibc's mmap threshold, so they live in the thread's
        # arena), freed in an order that leaves the arena's top in use.
        blocks = [np.ones(10_000) for _ in range(6000)]  # 80 kB each, ~480 MB
        keep = blocks[-1]
        del blocks
        churn.keep = keep

    worker = threading.Thread(target=churn)
    worker.start()
    worker.join()
    before = _rss_mb()
    assert release_free_heap() in (True, False)
    after = _rss_mb()
    assert after < before - 100, (before, after)
