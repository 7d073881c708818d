"""One offline render in a fresh process, for bench/test_memory_bench.py: prints one JSON line of
its memory (bytes) by stage.

    python bench/memory_child.py --audio speech.wav [--doubles] [--steps N] [--tracemalloc]

Renders the demo portrait on checkpoints/synthetic-tiny (or $DITTO_FAST_BENCH_CHECKPOINTS) from the
wav file through the public API (`Renderer.render`, the job's frame iterator); frames are taken and
dropped (no encoder). The audio path is the real one: the file decoded and resampled to 16 kHz,
HuBERT windows and features, the LMDM conditions and clips. `--doubles` swaps the frame stage's
warp network and decoder for zero-cost doubles (`ditto_fast.tools.benchmark_doubles`); `--steps`
sets the DDIM steps (`sampling_timesteps`). A thread samples VmRSS every 20 ms, tagged with the
stage the main thread is in; glibc's heap (in use, free but kept: mallinfo2) is read at stage
changes, and the RSS once more after `malloc_trim(0)` at the end. `--tracemalloc` adds the top
Python allocation sites (file:line) live at the end, their growth from the first frame to the end,
and the traced peak during the frames above the traced memory at the first frame.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path


def _status(field: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


class Sampler:
    """VmRSS every `period` s on a thread; `stage` names what the main thread is doing."""

    def __init__(self, period: float = 0.02) -> None:
        self.stage = "start"
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._period = period
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self._period)

    def sample(self) -> None:
        rss = _status("VmRSS")
        self.peaks[self.stage] = max(self.peaks.get(self.stage, 0), rss)

    def enter(self, stage: str) -> None:
        self.sample()
        self.stage = stage
        self.sample()

    def stop(self) -> None:
        self.sample()
        self._stop.set()
        self._thread.join()


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        return libc
    except (OSError, AttributeError):  # not glibc (2.33+)
        return None


def _heap(libc) -> dict[str, int]:
    """glibc's malloc heap: bytes in use (live allocations, mmapped ones included) and free but kept."""
    if libc is None:
        return {}
    info = libc.mallinfo2()
    return {"heap_in_use": info.uordblks + info.hblkhd, "heap_free_kept": info.fordblks}


def _top(snapshot, limit: int = 12) -> list[dict]:
    stats = snapshot.statistics("lineno")
    return [{"site": f"{s.traceback[0].filename}:{s.traceback[0].lineno}", "bytes": s.size, "blocks": s.count}
            for s in stats[:limit]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--audio", required=True)
    parser.add_argument("--doubles", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args()

    from ditto_fast import Renderer
    from ditto_fast.tools.benchmark_doubles import zero_cost_networks
    from ditto_fast.tools.demo import write_demo_inputs

    sampler = Sampler()
    checkpoints = os.environ.get("DITTO_FAST_BENCH_CHECKPOINTS") or None
    renderer = Renderer(checkpoints, threads=2)
    with tempfile.TemporaryDirectory(prefix="ditto_fast_memory_") as scratch:
        portrait, _ = write_demo_inputs(scratch, seconds=0.2)
        avatar = renderer.register(portrait)
    if args.doubles:
        doubles = zero_cost_networks()
        for name in ("warp_network", "decoder"):
            renderer.networks.replace(name, doubles[name])
    for name in ("hubert", "lmdm", "stitch_network", "warp_network", "decoder"):
        renderer.networks[name]  # loaded now, not inside the measured part
    options = {} if args.steps is None else {"sampling_timesteps": args.steps}

    libc = _libc()
    sampler.enter("before audio load")
    before_audio = _status("VmRSS")
    heap = {"before audio load": _heap(libc)}
    if args.tracemalloc:
        tracemalloc.start()
    traced_first_frame = 0
    started = time.perf_counter()
    sampler.enter("audio decode")
    job = renderer.render(avatar, Path(args.audio), seed=0, **options)
    heap["audio decoded"] = _heap(libc)
    result_rss_decoded = _status("VmRSS")
    sampler.enter("until first frame")
    first_snapshot = None
    frames = 0
    rss_first_frame = 0
    for frame in job:
        if frames == 0:
            heap["first frame"] = _heap(libc)
            rss_first_frame = _status("VmRSS")
            sampler.enter("frames")
            if args.tracemalloc:
                first_snapshot = tracemalloc.take_snapshot()
                traced_first_frame = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
        frames += 1
        del frame  # dropped: no encoder
    sampler.enter("done")
    seconds = time.perf_counter() - started
    result = {
        "frames": frames, "render_s": seconds, "rss_before_audio": before_audio, "rss_end": _status("VmRSS"),
        "vm_hwm": _status("VmHWM"), "rss_audio_decoded": result_rss_decoded, "rss_first_frame": rss_first_frame,
        "frame_size": list(job.info.frame_size), "heap_by_stage": heap,
    }
    if libc is not None:  # what of the end's RSS is free heap glibc kept, not live data
        heap["end"] = _heap(libc)
        libc.malloc_trim(0)
        result["rss_end_after_malloc_trim"] = _status("VmRSS")
    sampler.stop()
    result["rss_peak_by_stage"] = sampler.peaks
    if args.tracemalloc:
        end_snapshot = tracemalloc.take_snapshot()
        current, peak = tracemalloc.get_traced_memory()
        result["tracemalloc_peak_frames_stage_over_first_frame"] = peak - traced_first_frame
        result["tracemalloc_end"] = current
        result["tracemalloc_end_top"] = _top(end_snapshot)
        if first_snapshot is not None:
            result["tracemalloc_growth_first_frame_to_end"] = [
                {"site": f"{d.traceback[0].filename}:{d.traceback[0].lineno}", "bytes": d.size_diff}
                for d in end_snapshot.compare_to(first_snapshot, "lineno")[:12]]
        tracemalloc.stop()
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
