"""The thread budget (runtime/threads.py): None and 0 are the cores this process may use, a
positive integer is itself, anything else is refused naming `threads`."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ditto_fast.runtime.threads import available_cores, resolve_threads


def test_available_cores_follow_the_affinity():
    assert available_cores() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("threads", [None, 0, np.int64(0)])
def test_none_and_zero_are_the_usable_cores(threads):
    assert resolve_threads(threads) == available_cores()


@pytest.mark.parametrize("threads", [1, 3, 1000, np.int32(5)])
def test_a_positive_integer_is_the_budget(threads):
    resolved = resolve_threads(threads)
    assert resolved == threads and type(resolved) is int


@pytest.mark.parametrize("threads", [-1, 2.0, "2", True, False, [2]])
def test_anything_else_is_refused_naming_threads(threads):
    with pytest.raises(ValueError, match=r"^threads must be a positive integer, or None or 0 .*, got "):
        resolve_threads(threads)
