"""Per-stage speed of the pipeline on any checkpoint tree: the workloads, a timing harness and the
result record that `ditto-fast bench` prints and saves (and bench/test_stages_bench.py reuses).

Every workload runs the project's own code path (Renderer, engine/offline.py, stages/*) on the
project's demo portrait and speech, so a figure here is what a render of that size spends in
that stage:

    from ditto_fast.tools.benchmark import run_benchmark, format_report
    record = run_benchmark("checkpoints/synthetic-tiny", stages=["warp", "decode"])
    print(format_report(record))

Timing: `warmup` untimed rounds (networks load lazily on first use, caches fill), then `rounds`
timed ones; the record keeps every sample and their median, min and mean. A stage's figure is
the wall time of one round, except where the stage says otherwise (the online stage reports its
first-frame latency).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ditto_fast.avatar import Avatar
from ditto_fast.engine.offline import FrameRenderer, motion_setup
from ditto_fast.engine.online import StreamSession
from ditto_fast.options import RenderOptions
from ditto_fast.renderer import Renderer
from ditto_fast.stages.audio import FPS, frame_count
from ditto_fast.stages.audio_features import feature_extractor, offline_features
from ditto_fast.stages.motion import SEQ_FRAMES
from ditto_fast.stages.writer import DEFAULT_CRF, DEFAULT_PRESET, VideoWriter
from ditto_fast.tools.demo import demo_speech, write_demo_inputs

RECORD_FORMAT = "ditto-fast-bench/1"
# The encode stage writes one second of video per round, cycling through ENCODE_SAMPLE_FRAMES
# distinct rendered frames (an identical frame would cost x264 next to nothing). The writer is
# first fed ENCODER_PRIMING_FRAMES: x264 (preset medium) and the writer's queue buffer ~40 frames
# before a write waits for a frame's encoding, so an unprimed writer would time the buffering.
ENCODE_FRAMES = 25
ENCODE_SAMPLE_FRAMES = 10
ENCODER_PRIMING_FRAMES = 50
STREAM_FRAME_TIMEOUT_S = 300.0  # a stream that makes no frame for this long has hung


# -- settings and timing ---------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchSettings:
    """How long to measure: `warmup` untimed and `rounds` timed rounds per stage; the audio stage,
    the end-to-end stages and the online stage use `audio_seconds` of demo speech."""

    rounds: int = 5
    warmup: int = 1
    audio_seconds: float = 4.0

    def __post_init__(self) -> None:
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise ValueError(f"benchmark rounds must be an integer >= 1, got {self.rounds!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"benchmark warm-up rounds must be an integer >= 0, got {self.warmup!r}")
        if not self.audio_seconds > 0:
            raise ValueError(f"benchmark audio must be longer than 0 s, got {self.audio_seconds!r}")


# CI smoke: every code path runs once warm, in ~30 s on 2 CPU cores with synthetic-tiny; the
# figures are not to be trusted.
QUICK_SETTINGS = BenchSettings(rounds=1, warmup=1, audio_seconds=1.0)


@dataclass(frozen=True)
class Timing:
    """Seconds per timed round."""

    samples: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.samples or not all(math.isfinite(s) and s > 0 for s in self.samples):
            raise ValueError(f"timing samples must be positive finite seconds, got {self.samples}")

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples)


def time_rounds(one_round: Callable[[], float], rounds: int, warmup: int) -> Timing:
    """Call `one_round` warmup + rounds times; it returns its own figure in seconds (StageRun.round)."""
    for _ in range(warmup):
        one_round()
    return Timing(tuple(one_round() for _ in range(rounds)))


@dataclass
class StageRun:
    """A prepared workload: `call` does one round's work.

    A round's figure is its wall time, or what `call` returns when `call_reports_seconds` (a
    latency inside the round); `close` releases what preparing took (files, encoders)."""

    call: Callable[[], Any]
    detail: str  # the workload's size, for the table: "4.0 s speech", "512x512", ...
    frames: int = 0  # video frames one round handles (0: not a per-frame stage)
    call_reports_seconds: bool = False
    close: Callable[[], None] = field(default=lambda: None)

    def round(self) -> float:
        started = time.perf_counter()
        result = self.call()
        elapsed = time.perf_counter() - started
        return float(result) if self.call_reports_seconds else elapsed


# -- the inputs every workload shares --------------------------------------------------------------

class Workbench:
    """A loaded checkpoint tree and the demo inputs, each derived input made once, on first use.

    Use as a context manager: the scratch folder (demo files, encoded videos) goes at exit.
    `overrides` are render options (as `Renderer.options` takes them) for every workload;
    the seed defaults to 0 so rounds repeat the same work.
    """

    def __init__(self, checkpoints: str | Path | None = None, backend: str = "auto",
                 audio_seconds: float = BenchSettings.audio_seconds,
                 overrides: Mapping[str, Any] | None = None) -> None:
        self.renderer = Renderer(checkpoints, backend=backend)
        self.audio_seconds = audio_seconds
        self.overrides = {"seed": 0, **(overrides or {})}
        self.options: RenderOptions = self.renderer.options(**self.overrides)  # fails early on a bad option
        self._scratch = tempfile.TemporaryDirectory(prefix="ditto_fast_bench_")
        self.scratch = Path(self._scratch.name)

    def __enter__(self) -> Workbench:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._scratch.cleanup()

    @cached_property
    def portrait(self) -> Path:
        portrait, _ = write_demo_inputs(self.scratch, seconds=self.audio_seconds)
        return portrait

    @cached_property
    def speech(self) -> np.ndarray:
        return demo_speech(self.audio_seconds)

    @cached_property
    def avatar(self) -> Avatar:
        return self.renderer.register(self.portrait)

    @cached_property
    def clip_condition(self) -> np.ndarray:
        """(1, 80, C) LMDM condition of one clip: HuBERT features of 80 frames of demo speech."""
        condition, _ = motion_setup(self.renderer.networks, self.avatar, self.options)
        features = offline_features(feature_extractor(self.renderer.networks), demo_speech(SEQ_FRAMES / FPS))
        return condition(features[:SEQ_FRAMES], 0)[None]

    @cached_property
    def clip_motion(self) -> np.ndarray:
        """The driving motion (80, 265) of one generated clip, after the output clamp."""
        _, a2m = motion_setup(self.renderer.networks, self.avatar, self.options)
        return a2m.clamp(a2m.generate_clip(self.clip_condition, None))

    def frame_renderer(self) -> FrameRenderer:
        """A fresh per-frame renderer for one clip (its stitch keeps per-render state)."""
        return FrameRenderer(self.renderer.networks, self.avatar, self.options, SEQ_FRAMES)

    @cached_property
    def keypoints(self) -> tuple[np.ndarray, np.ndarray]:
        """x_s, x_d (1, 21, 3) of the clip's first frame."""
        _, x_s, x_d = self.frame_renderer().stitch_block(0, self.clip_motion[:1])
        return x_s, x_d

    @cached_property
    def warped(self) -> np.ndarray:
        x_s, x_d = self.keypoints
        return self.renderer.networks["warp_network"](feature_3d=self.avatar.f_s[0], kp_source=x_s,
                                                      kp_driving=x_d)[0]

    @cached_property
    def decoded(self) -> np.ndarray:
        """(1, 3, 512, 512) decoder output of the clip's first frame: the face paste-back takes."""
        return self.renderer.networks["decoder"](feature=self.warped)[0]

    def rendered_frames(self, count: int) -> list[np.ndarray]:
        """The first `count` output frames of a render of the demo speech (copies)."""
        frames = []
        for frame in self.renderer.render(self.avatar, self.speech, **self.overrides):
            frames.append(frame.rgb.copy())
            if len(frames) == count:
                break
        return frames


def first_frame_latency(session: StreamSession, audio: np.ndarray) -> float:
    """Seconds from handing all of `audio` to the session (pushed at once by a feeder thread, then
    `end()`) to the consumer holding the first frame; every frame is taken, then the session closed.

    Timed here, as a caller sees it, rather than read from the session's StreamStats."""

    def feed() -> None:
        session.push(audio)
        session.end()

    latency = None
    with session:
        feeder = threading.Thread(target=feed, name="ditto-fast-bench-feed")
        started = time.perf_counter()
        feeder.start()
        for _ in session.frames(timeout=STREAM_FRAME_TIMEOUT_S):
            if latency is None:
                latency = time.perf_counter() - started
        feeder.join()
    if latency is None:
        raise RuntimeError("online stream: the session made no frame")
    return latency


# -- the stages ------------------------------------------------------------------------------------

def _size(avatar: Avatar) -> str:
    height, width = avatar.frame_size
    return f"{width}x{height}"


def _register(bench: Workbench) -> StageRun:
    return StageRun(lambda: bench.renderer.register(bench.portrait), detail="demo portrait")


def _audio(bench: Workbench) -> StageRun:
    extractor = feature_extractor(bench.renderer.networks)
    return StageRun(lambda: offline_features(extractor, bench.speech), detail=f"{bench.audio_seconds:g} s speech",
                    frames=frame_count(len(bench.speech)))


def _lmdm(bench: Workbench) -> StageRun:
    _, a2m = motion_setup(bench.renderer.networks, bench.avatar, bench.options)
    condition = bench.clip_condition

    def one_clip() -> np.ndarray:
        a2m.reset()  # every round samples the first clip, from the source's motion
        return a2m.generate_clip(condition, None)

    return StageRun(one_clip, detail=f"{bench.options.sampling_timesteps} DDIM steps", frames=SEQ_FRAMES)


def _stitch(bench: Workbench) -> StageRun:
    renderer = bench.frame_renderer()
    motion = bench.clip_motion
    return StageRun(lambda: renderer.stitch_block(0, motion), detail=f"{len(motion)} frames, one pass",
                    frames=len(motion))


def _warp(bench: Workbench) -> StageRun:
    warp, (x_s, x_d), f_s = bench.renderer.networks["warp_network"], bench.keypoints, bench.avatar.f_s[0]
    return StageRun(lambda: warp(feature_3d=f_s, kp_source=x_s, kp_driving=x_d), detail="1 frame", frames=1)


def _decode(bench: Workbench) -> StageRun:
    decoder, feature = bench.renderer.networks["decoder"], bench.warped
    return StageRun(lambda: decoder(feature=feature), detail="1 frame", frames=1)


def _paste(bench: Workbench) -> StageRun:
    # The decoder's output goes in as the renderer passes it: the kernel converts it to pixels.
    paste, avatar, face = bench.frame_renderer().paste, bench.avatar, bench.decoded
    out = np.empty_like(avatar.frames[0])  # as a ring slot: written in place, no allocation
    return StageRun(lambda: paste(avatar.frames[0], face, avatar.m_c2o[0], out=out), detail=_size(avatar),
                    frames=1)


def _encode(bench: Workbench) -> StageRun:
    samples = bench.rendered_frames(ENCODE_SAMPLE_FRAMES)
    height, width = bench.avatar.frame_size
    writer = VideoWriter(bench.scratch / "encode.mp4", width, height)

    def write(count: int) -> None:
        for index in range(count):
            writer.write(samples[index % len(samples)])

    write(ENCODER_PRIMING_FRAMES)
    return StageRun(lambda: write(ENCODE_FRAMES),
                    detail=f"{_size(bench.avatar)} libx264 crf {DEFAULT_CRF} {DEFAULT_PRESET}",
                    frames=ENCODE_FRAMES, close=writer.abort)


def _offline(bench: Workbench) -> StageRun:
    out = bench.scratch / "offline.mp4"
    return StageRun(lambda: bench.renderer.render_to_file(bench.avatar, bench.speech, out, **bench.overrides),
                    detail=f"{bench.audio_seconds:g} s speech", frames=frame_count(len(bench.speech)))


def _online(bench: Workbench) -> StageRun:
    return StageRun(lambda: first_frame_latency(bench.renderer.stream(bench.avatar, **bench.overrides), bench.speech),
                    detail=f"{bench.audio_seconds:g} s speech up front", call_reports_seconds=True)


@dataclass(frozen=True)
class Stage:
    name: str
    what: str  # what one round does
    prepare: Callable[[Workbench], StageRun]
    measures: str = "wall time"  # what the seconds are


STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("register", "Renderer.register of a portrait (detect, crop, extract)", _register),
    Stage("audio", "HuBERT features of the speech (offline windows)", _audio),
    Stage("lmdm", "one 80-frame LMDM clip: the DDIM loop and the clip's smoothing", _lmdm),
    Stage("stitch", "motion stitch of one clip (the engine's clip-wide pass)", _stitch),
    Stage("warp", "warp network, one frame", _warp),
    Stage("decode", "decoder network, one frame", _decode),
    Stage("paste", "paste-back of one decoded face into the avatar's frame", _paste),
    Stage("encode", "H.264 encoding of rendered frames, VideoWriter defaults (primed)", _encode),
    Stage("offline", "Renderer.render_to_file end to end (features, motion, frames, mp4)", _offline),
    Stage("online", "Renderer.stream: audio handed over → first frame in hand", _online,
          measures="first-frame latency"),
)}


def select_stages(names: Sequence[str] | None) -> list[str]:
    """The stages to run, in pipeline order; None or empty means all."""
    if not names:
        return list(STAGES)
    unknown = [name for name in names if name not in STAGES]
    if unknown:
        raise ValueError(f"unknown benchmark stage {unknown[0]!r}; stages are {', '.join(STAGES)}")
    return [name for name in STAGES if name in names]


# -- results ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StageResult:
    name: str
    what: str
    detail: str
    measures: str
    frames: int
    timing: Timing

    @property
    def per_frame(self) -> float | None:
        return self.timing.median / self.frames if self.frames else None

    @property
    def frames_per_second(self) -> float | None:
        return self.frames / self.timing.median if self.frames else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "what": self.what, "detail": self.detail, "measures": self.measures, "frames": self.frames,
            "median_s": self.timing.median, "min_s": self.timing.min, "mean_s": self.timing.mean,
            "per_frame_s": self.per_frame, "frames_per_second": self.frames_per_second,
            "samples_s": list(self.timing.samples),
        }

    @classmethod
    def of(cls, name: str, run: StageRun, timing: Timing) -> StageResult:
        """The result of timing `run`, a prepared run of stage `name`."""
        stage = STAGES[name]
        return cls(name, stage.what, run.detail, stage.measures, run.frames, timing)

    @classmethod
    def from_dict(cls, name: str, entry: Mapping[str, Any]) -> StageResult:
        return cls(name, str(entry.get("what", "")), str(entry.get("detail", "")),
                   str(entry.get("measures", "wall time")), int(entry.get("frames", 0)),
                   Timing(tuple(float(s) for s in entry["samples_s"])))


def measure_stage(name: str, bench: Workbench, settings: BenchSettings) -> StageResult:
    """Prepare stage `name` on `bench`, time it, release what it held."""
    run = STAGES[name].prepare(bench)
    try:
        timing = time_rounds(run.round, settings.rounds, settings.warmup)
    finally:
        run.close()
    return StageResult.of(name, run, timing)


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):  # not every platform names these
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass  # not Linux
    return platform.processor() or platform.machine()


def describe_machine() -> dict[str, Any]:
    """CPU, cores, memory, GPUs and the versions that decide the figures."""
    import cv2

    from ditto_fast.environment import describe_environment

    environment = describe_environment()
    versions = {"ditto_fast": environment.version, "numpy": np.__version__, "opencv": cv2.__version__}
    versions.update({part.label: part.detail if part.available else None for part in environment.parts})
    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "memory_gib": _memory_gib(),
        "gpus": list(environment.gpus), "platform": platform.platform(),
        "python": platform.python_version(), "versions": versions,
    }


@dataclass(frozen=True)
class BenchRecord:
    """One benchmark run: where it ran, on what, and each stage's timing."""

    machine: dict[str, Any]
    run: dict[str, Any]  # checkpoints, backend, settings, options
    stages: dict[str, StageResult]
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def as_dict(self) -> dict[str, Any]:
        return {"format": RECORD_FORMAT, "created": self.created, "machine": self.machine, "run": self.run,
                "stages": {name: result.as_dict() for name, result in self.stages.items()}}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        # Option values such as arrays are not JSON: their repr is record enough.
        path.write_text(json.dumps(self.as_dict(), indent=2, default=repr) + "\n")
        return path


def check_record_path(path: str | Path) -> Path:
    """Fail before a long run if a record cannot be saved at `path`."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a file name for the bench record")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"{path}: folder {folder} does not exist")
    return path


def load_record(path: str | Path) -> BenchRecord:
    """A record saved by `BenchRecord.save` (`ditto-fast bench --json`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
        raise ValueError(f"{path}: not a ditto-fast bench record (expected \"format\": \"{RECORD_FORMAT}\")")
    try:
        stages = {name: StageResult.from_dict(name, entry) for name, entry in data["stages"].items()}
        return BenchRecord(dict(data["machine"]), dict(data["run"]), stages, str(data.get("created", "")))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path}: malformed bench record ({type(exc).__name__}: {exc})") from None


def run_benchmark(checkpoints: str | Path | None = None, backend: str = "auto",
                  stages: Sequence[str] | None = None, settings: BenchSettings | None = None,
                  overrides: Mapping[str, Any] | None = None,
                  progress: Callable[[str], None] | None = None) -> BenchRecord:
    """Time `stages` (default all) on a checkpoint tree; `progress` gets a line per stage."""
    names = select_stages(stages)
    settings = settings or BenchSettings()
    say = progress or (lambda _line: None)
    results = {}
    with Workbench(checkpoints, backend, settings.audio_seconds, overrides) as bench:
        for position, name in enumerate(names, 1):
            say(f"[{position}/{len(names)}] {name}: {settings.warmup} warm-up + {settings.rounds} rounds")
            results[name] = measure_stage(name, bench, settings)
            say(f"[{position}/{len(names)}] {name}: median {results[name].timing.median * 1000:.1f} ms")
        run = {
            "checkpoints": str(bench.renderer.checkpoints), "synthetic": bench.renderer.synthetic,
            "backend": bench.renderer.backend, "rounds": settings.rounds, "warmup": settings.warmup,
            "audio_seconds": settings.audio_seconds, "sampling_timesteps": bench.options.sampling_timesteps,
            "overrides": bench.overrides,
        }
    return BenchRecord(describe_machine(), run, results)


# -- the report ------------------------------------------------------------------------------------

def machine_summary(machine: Mapping[str, Any]) -> str:
    versions = machine.get("versions", {})
    gpus = "; ".join(machine.get("gpus") or []) or "no GPU"
    memory = f"{machine['memory_gib']} GiB" if machine.get("memory_gib") else "memory unknown"
    libraries = ", ".join(f"{name} {versions.get(name) or 'absent'}"
                          for name in ("ditto_fast", "numpy", "onnxruntime", "torch"))
    return f"{machine.get('cpu')}, {machine.get('cores')} cores, {memory}, {gpus}; {libraries}"


def run_summary(run: Mapping[str, Any]) -> str:
    synthetic = " (synthetic weights)" if run.get("synthetic") else ""
    return (f"{run.get('checkpoints')}{synthetic}, backend {run.get('backend')}, "
            f"{run.get('sampling_timesteps')} DDIM steps, {run.get('warmup')} warm-up + {run.get('rounds')} rounds")


def speed_ratios(new: BenchRecord, old: BenchRecord) -> dict[str, float | None]:
    """Median new/old per stage of `new` (< 1: faster now); None where `old` lacks the stage."""
    return {name: result.timing.median / old.stages[name].timing.median if name in old.stages else None
            for name, result in new.stages.items()}


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:.1f}"


def format_report(record: BenchRecord, baseline: BenchRecord | None = None) -> str:
    """The machine, the run and a table of the stages (with new/old ratios against `baseline`)."""
    header = ["stage", "median ms", "min ms", "per frame ms", "frames/s"]
    rows = []
    ratios = speed_ratios(record, baseline) if baseline is not None else {}
    for name, result in record.stages.items():
        row = [name, _ms(result.timing.median), _ms(result.timing.min), _ms(result.per_frame),
               "" if result.frames_per_second is None else f"{result.frames_per_second:.1f}"]
        if baseline is not None:
            row.append("" if ratios[name] is None else f"{ratios[name]:.2f}x")
        rows.append([*row, f"{result.what} [{result.detail}]"])
    if baseline is not None:
        header.append("new/old")
    header.append("workload")
    widths = [max(len(line[i]) for line in (header, *rows)) for i in range(len(header) - 1)]

    def line(cells: list[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(cells[1:-1], widths[1:])),
                          cells[-1]])

    lines = [f"machine: {machine_summary(record.machine)}", f"run: {run_summary(record.run)}"]
    if baseline is not None:
        lines += [f"baseline machine: {machine_summary(baseline.machine)}",
                  f"baseline run: {run_summary(baseline.run)} ({baseline.created})"]
    lines += ["", line(header), *(line(row) for row in rows)]
    if baseline is not None:
        lines.append("new/old: median time now over the baseline's (< 1 is faster)")
    return "\n".join(lines)

