"""FrameRing handoff cost per frame, against handing the consumer a copy of the frame.

The ring's promise is that a finished frame reaches the consumer without a copy; at the
reference's 1432x1432 output the copy it saves is ~6 MB per frame.
"""

from __future__ import annotations

import numpy as np
import pytest

from ditto_fast._core import FrameRing

SIZES = {"512": (512, 512), "1432": (1432, 1432), "1080p": (1080, 1920)}


@pytest.mark.parametrize("size", SIZES)
def test_zero_copy_handoff(benchmark, size):
    ring = FrameRing(4, *SIZES[size], 3)
    index = 0

    def handoff():
        nonlocal index
        ring.acquire().commit(index)
        with ring.take() as frame:
            frame.array  # the consumer's view, as the frame iterator hands it out
        index += 1

    benchmark.group = f"handoff {size}"
    benchmark(handoff)


@pytest.mark.parametrize("size", SIZES)
def test_copying_handoff(benchmark, size):
    source = np.full((*SIZES[size], 3), 7, np.uint8)  # touched pages, not the shared zero page
    destination = np.empty_like(source)
    benchmark.group = f"handoff {size}"
    benchmark(np.copyto, destination, source)
