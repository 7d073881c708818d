"""The thread budget: one number, given once (`Renderer(threads=N)`, `--threads N`), that bounds
the CPU threads of each of a render's three CPU-heavy consumers:

- onnxruntime: each session's intra-op threads (backends/onnxruntime.py);
- the native paste-back: the threads sharing one frame's rows (`ditto_fast._core.paste_back`);
- the encoder: libx264's frame threads (stages/writer.py, `VideoWriter(threads=)`).

How it is shared: each consumer takes the whole budget as its own limit; it is not split among
them. They run as pipelined stages on threads of their own (engine/stage_threads.py), where
only the slowest stage is busy all the time and the others wait on their bounded channels for
part of every frame: a fixed split would leave a waiting stage's cores idle, while a common
limit lets whichever stage is busy use them, and where stages overlap the OS scheduler shares
the cores among their threads. So the budget bounds each consumer, not their sum. The default,
the cores this process may use (its CPU affinity), follows `taskset` and container CPU sets;
to confine a whole render to k cores, restrict its affinity to them.
"""

from __future__ import annotations

import numbers
import os


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no affinity to ask for
        return os.cpu_count() or 1


def resolve_threads(threads: int | None = None) -> int:
    """The budget a user's `threads` names: None or 0 → the cores this process may use; a positive
    integer → itself. Anything else (negative, bool, float, str) raises ValueError."""
    if threads is None:
        return available_cores()
    # bool is an Integral, but True is no thread count.
    if isinstance(threads, numbers.Integral) and not isinstance(threads, bool) and threads >= 0:
        return int(threads) or available_cores()
    raise ValueError(f"threads must be a positive integer, or None or 0 for the cores this process may use "
                     f"({available_cores()}), got {threads!r}")
