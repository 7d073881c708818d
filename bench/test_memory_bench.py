"""Peak memory of an offline render against the audio's length: does it stay flat?

Each duration renders in a fresh subprocess (bench/memory_child.py): the demo portrait on
checkpoints/synthetic-tiny (or $DITTO_FAST_BENCH_CHECKPOINTS), from a wav file of speech-like audio
(the demo speech, 15 s looped to the duration, written at 48 kHz so that the render decodes and
resamples it), through `Renderer.render` and the job's frame iterator; frames are taken and dropped
(no encoder). The audio path is the real one: decode, resample to 16 kHz, HuBERT windows and
features, LMDM conditions and clips at the default 50 DDIM steps (`DITTO_FAST_BENCH_MEMORY_STEPS`
sets `sampling_timesteps`). The frame stage's warp network and decoder are zero-cost doubles
(`benchmark_doubles`): on 2 CPU cores synthetic-tiny's real ones render 15 s of audio in about a
minute, 10 min in about 40; the stitch network is the real one. Frames are 512² (the portrait's size).

Durations: `DITTO_FAST_BENCH_MEMORY_DURATIONS`, seconds, comma-separated (default
15,60,180,300,600; a quick run: 15,60). Per duration `extra_info` has the child's RSS before the
audio load, its peak (VmHWM), both net of the samples themselves (duration · 16 kHz · 4 bytes for
the 16 kHz float32 array; the decoded 48 kHz array is transient), and the peak RSS by stage; the last
duration's benchmark also has the growth per minute of audio (least squares over every duration) of
the peak above the pre-audio RSS, and `flat_within_5pct`: whether that peak, net of the samples,
stays within 5 % from the shortest duration to the longest (the issue's target).
The child also reads glibc's heap (mallinfo2: live bytes, and free bytes glibc keeps) at each stage
change and the RSS after `malloc_trim(0)` at the end, which tells live data from retained free heap.
`DITTO_FAST_BENCH_MEMORY_TRACE=1` runs each child under tracemalloc too and records its top
allocation sites (file:line) at the end and their growth from the first frame to the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

DURATIONS = tuple(float(s) for s in os.environ.get("DITTO_FAST_BENCH_MEMORY_DURATIONS", "15,60,180,300,600").split(","))
STEPS = os.environ.get("DITTO_FAST_BENCH_MEMORY_STEPS")
TRACE = os.environ.get("DITTO_FAST_BENCH_MEMORY_TRACE") == "1"
WAV_RATE = 48_000
SAMPLE_BYTES_PER_S = 16_000 * 4  # the decoded, resampled float32 mono array the render keeps
CHILD = Path(__file__).with_name("memory_child.py")
RESULTS: dict[float, dict] = {}  # duration → child's report, for the growth over durations


@pytest.fixture(scope="module")
def speech_48k() -> np.ndarray:
    """15 s of demo speech at 48 kHz (float32), looped to each duration."""
    import soxr

    from ditto_fast.tools.demo import demo_speech

    return soxr.resample(demo_speech(15.0), 16_000, WAV_RATE, quality="HQ").astype(np.float32)


def _write_speech(path: Path, loop: np.ndarray, seconds: float) -> Path:
    from ditto_fast.stages.audio import write_wav

    samples = int(seconds * WAV_RATE)
    return write_wav(path, np.resize(loop, samples), sample_rate=WAV_RATE)


def _run_child(audio: Path) -> dict:
    command = [sys.executable, str(CHILD), "--audio", str(audio), "--doubles"]
    if STEPS:
        command += ["--steps", STEPS]
    if TRACE:
        command.append("--tracemalloc")
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mb(nbytes: float) -> float:
    return round(nbytes / 2**20, 1)


@pytest.mark.parametrize("seconds", DURATIONS, ids=[f"{s:g}s" for s in DURATIONS])
def test_offline_peak_rss(benchmark, tmp_path, speech_48k, seconds):
    audio = _write_speech(tmp_path / "speech.wav", speech_48k, seconds)
    benchmark.group = "offline memory vs audio length"
    report = benchmark.pedantic(_run_child, args=(audio,), rounds=1, iterations=1)
    assert abs(report["frames"] - seconds * 25) <= 1, report["frames"]
    samples = seconds * SAMPLE_BYTES_PER_S
    RESULTS[seconds] = report
    info = {
        "audio_s": seconds, "frames": report["frames"], "render_s": round(report["render_s"], 2),
        "frame_networks": "zero-cost doubles (warp, decoder)", "sampling_timesteps": STEPS or "default (50)",
        "samples_mb": _mb(samples),
        "rss_before_audio_mb": _mb(report["rss_before_audio"]),
        "peak_rss_mb": _mb(report["vm_hwm"]),
        "peak_over_before_audio_mb": _mb(report["vm_hwm"] - report["rss_before_audio"]),
        "peak_net_of_samples_mb": _mb(report["vm_hwm"] - samples),
        "rss_peak_by_stage_mb": {stage: _mb(v) for stage, v in report["rss_peak_by_stage"].items()},
        # the audio decode's transient: its peak over the RSS before it
        "decode_peak_over_before_audio_mb": _mb(report["rss_peak_by_stage"]["audio decode"]
                                                - report["rss_before_audio"]),
        "rss_audio_decoded_mb": _mb(report["rss_audio_decoded"]),
        "rss_first_frame_mb": _mb(report["rss_first_frame"]),
        "rss_end_mb": _mb(report["rss_end"]),
        "heap_by_stage_mb": {stage: {k: _mb(v) for k, v in h.items()} for stage, h in report["heap_by_stage"].items()},
    }
    if "rss_end_after_malloc_trim" in report:
        info["rss_end_after_malloc_trim_mb"] = _mb(report["rss_end_after_malloc_trim"])
    if TRACE:
        info["tracemalloc_end_top"] = report.get("tracemalloc_end_top")
        info["tracemalloc_growth_first_frame_to_end"] = report.get("tracemalloc_growth_first_frame_to_end")
    if seconds == DURATIONS[-1] and len(RESULTS) > 1:
        durations = np.array(sorted(RESULTS))
        growth = np.array([RESULTS[d]["vm_hwm"] - RESULTS[d]["rss_before_audio"] for d in durations])
        net = np.array([RESULTS[d]["vm_hwm"] - d * SAMPLE_BYTES_PER_S for d in durations])
        slope = np.polyfit(durations / 60, growth, 1)[0] if len(durations) > 1 else 0.0
        info.update(
            growth_mb_per_min_of_audio=_mb(slope),
            growth_net_of_samples_mb_per_min=_mb(slope - 60 * SAMPLE_BYTES_PER_S),
            peak_net_of_samples_shortest_to_longest=round(float(net[-1] / net[0]), 4),
            flat_within_5pct=bool(abs(net[-1] / net[0] - 1) <= 0.05),
        )
    benchmark.extra_info.update(info)
