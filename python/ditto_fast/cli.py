"""The `ditto-fast` command line.

Only the chosen command's arguments are built (each may import what its defaults need), so
`ditto-fast --help` and `--version` import nothing heavy. Usage errors exit with status 1, like
every other error; interruption with 130."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from pickle import UnpicklingError

# Errors that describe bad input or a missing resource: shown as one line, without a
# traceback. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, ImportError, UnpicklingError, RuntimeError)


def _cmd_info(_args: argparse.Namespace) -> int:
    from ditto_fast.environment import describe_environment

    for line in describe_environment().lines():
        print(line)
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from ditto_fast.tools.download import download_checkpoints

    out = download_checkpoints(args.out, parts=args.parts, repo=args.repo, revision=args.revision)
    print(f"checkpoints ({', '.join(args.parts)}) are in {out}")
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C is, so that the same clean-up runs: stages
    stop, temporary files go, nothing is left at the output path."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


class UsageErrorParser(argparse.ArgumentParser):
    """argparse with the project's exit status for usage errors (1, as every error; argparse's
    own is 2)."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def note(message: str) -> None:
    """A status line on stderr, so the user sees what a long silent step is."""
    print(f"ditto-fast: {message}", file=sys.stderr, flush=True)


class ProgressBar:
    """A one-line progress bar on stderr with rate and time left (redrawn in place when stderr is
    a terminal; a line per second of video in logs). Called with (0, total) before the first frame."""

    def __init__(self, label: str, stream=None) -> None:
        self.label, self.stream = label, stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.started = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        if not self.interactive and done not in (0, 1, total) and done % 25:
            return
        elapsed = time.perf_counter() - self.started
        filled = int(30 * done / max(total, 1))
        line = f"{self.label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} frames"
        if done:
            rate = done / max(elapsed, 1e-9)
            line += f", {rate:.1f} frames/s, {_duration((total - done) / rate)} left"
        else:
            line += " (audio features and motion first)"
        end = "\r" if self.interactive and done < total else "\n"
        print(line, end=end, file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}:{seconds:02d}" if minutes else f"{seconds} s"


class LiveProgress:
    """The `stream` command's progress line: frames made, audio pushed, real-time factor and late
    frames; warns once when the stream runs slower than real time."""

    WARN_AFTER_S = 2.0  # of audio: the real-time factor is noise before that

    def __init__(self, session, stream=None) -> None:
        self.session, self.stream = session, stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.warned = False

    def __call__(self, frames: int) -> None:
        stats = self.session.stats
        factor = stats.real_time_factor
        if not self.warned and factor is not None and factor > 1 and stats.audio_seconds >= self.WARN_AFTER_S:
            self.warned = True
            print(("\n" if self.interactive else "") + "ditto-fast: warning: the stream is slower than real time "
                  f"(real-time factor {factor:.2f}): frames fall behind the audio", file=self.stream, flush=True)
        if not self.interactive and frames % 25:
            return
        shown = f"{factor:.2f}" if factor is not None else "-"
        print(f"live: {frames} frames ({frames / 25:.1f} s of video), {stats.audio_seconds:.1f} s of audio pushed, "
              f"real-time factor {shown}, {stats.late_frames} late", end="\r" if self.interactive else "\n",
              file=self.stream, flush=True)

    def finish(self) -> None:
        if self.interactive:
            print(file=self.stream)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments every rendering command shares: which weights, which backend, which options."""
    from ditto_fast.backends.registry import BACKENDS

    parser.add_argument("--checkpoints",
                        help="checkpoint tree (default: the synthetic-tiny tree shipped with ditto_fast: synthetic "
                             "weights, for trying the pipeline)")
    parser.add_argument("--backend", choices=("auto", *BACKENDS), default="auto",
                        help="what runs the networks: onnxruntime (CPU, or its CUDA provider), torch (our modules, "
                             "--device cuda for the GPU path), tensorrt (engines from build-engines); auto is "
                             "onnxruntime (default: %(default)s)")
    parser.add_argument("--seed", type=int, help="same inputs and seed give identical frames")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any render option, e.g. --set sampling_timesteps=25 --set crop_scale=2.0")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for onnxruntime, paste-back and the encoder each (default: every "
                             "core this process may use)")


def _add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="where the torch backend runs: cpu, cuda, cuda:1 ...")
    parser.add_argument("--frame-batch", type=int, default=1, metavar="N",
                        help="frames per warp/decoder call, offline and live (default 1; the official ONNX files "
                             "take 1, torch any)")


def _option_overrides(args: argparse.Namespace) -> dict:
    """`--set key=value` options, with the dedicated flags (--seed, --emo) on top."""
    from ditto_fast.options import parse_assignment

    options = dict(parse_assignment(item) for item in args.set)
    for name in ("seed", "emo"):
        if getattr(args, name, None) is not None:
            options[name] = getattr(args, name)
    return options


def _x264_crf(text: str) -> int:
    """--crf's type: out-of-range values are refused while parsing, with the writer's message."""
    from ditto_fast.stages.writer import check_x264_options

    try:
        crf: int | str = int(text)
    except ValueError:
        crf = text  # not a number: the check below says what is expected
    try:
        return check_x264_options(crf=crf)[0]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_encoder_arguments(parser: argparse.ArgumentParser) -> None:
    """Encoder settings of the mp4 writer (`--preset` is the render's quality preset, not x264's)."""
    from ditto_fast.stages.writer import DEFAULT_CRF, DEFAULT_PRESET, ENCODERS, X264_PRESETS

    parser.add_argument("--encoder", choices=ENCODERS, default="auto",
                        help="H.264 encoder: auto (NVENC when the NVIDIA driver offers it, else libx264)")

    parser.add_argument("--crf", type=_x264_crf, default=DEFAULT_CRF, metavar="N",
                        help="x264 constant quality, 0-51: lower is better and larger (default: %(default)s)")
    parser.add_argument("--x264-preset", choices=X264_PRESETS, default=DEFAULT_PRESET, metavar="NAME",
                        help=f"x264 encoding speed, {X264_PRESETS[0]} (fastest, largest file) to "
                             f"{X264_PRESETS[-1]} (default: %(default)s)")


def _demo_folder(args: argparse.Namespace):
    """A temporary folder for --demo's inputs; without --demo none is made (a killed render then
    leaves nothing but the writer's temporary file)."""
    return tempfile.TemporaryDirectory(prefix="ditto_fast_demo_") if args.demo else contextlib.nullcontext()


def _inputs(args: argparse.Namespace, scratch: str | None) -> tuple[str, str]:
    """--source and --audio, or the project's own sample inputs written into `scratch` (--demo)."""
    from ditto_fast.tools.demo import write_demo_inputs

    if args.demo == bool(args.source or args.audio):
        raise ValueError("give --source and --audio, or --demo (which makes its own inputs)")
    if not args.demo and not (args.source and args.audio):
        raise ValueError("--source and --audio go together")
    if args.demo:
        return tuple(str(path) for path in write_demo_inputs(scratch))
    for flag, path in (("--source", args.source), ("--audio", args.audio)):  # before minutes of loading
        if Path(path).is_dir():
            raise ValueError(f"{flag} {path}: is a folder, not a file")
        if not Path(path).is_file():
            raise FileNotFoundError(f"{flag} {path}: no such file")
    return args.source, args.audio


def _open_renderer(args: argparse.Namespace):
    from ditto_fast.renderer import Renderer

    note(f"loading {args.checkpoints or 'the shipped synthetic-tiny tree'}"
         + ("" if args.backend == "auto" else f" ({args.backend} backend)"))
    renderer = Renderer(args.checkpoints, backend=args.backend, device=args.device, cfg=args.cfg,
                        frame_batch=args.frame_batch, threads=args.threads)
    if renderer.synthetic:
        note(f"{renderer.checkpoints} holds synthetic weights: the video shows the pipeline, not Ditto's quality")
    return renderer


def _cmd_render(args: argparse.Namespace) -> int:
    from ditto_fast.stages.writer import check_writable

    options = _option_overrides(args)
    with _demo_folder(args) as scratch:
        source, audio = _inputs(args, scratch)
        check_writable(args.out, inputs=(source, audio))  # before any work
        renderer = _open_renderer(args)
        note(f"registering {source}")
        avatar = renderer.register(source, **options)
        result = renderer.render_to_file(avatar, audio, args.out, preset=args.preset,
                                         progress=ProgressBar("rendering"), crf=args.crf,
                                         x264_preset=args.x264_preset, encoder=args.encoder, **options)
    print(result.summary() + (" (synthetic weights)" if renderer.synthetic else ""))
    return 0


def _add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """What render and stream share: inputs (or --demo), the quality preset, emotion and config."""
    from ditto_fast.options import PRESETS

    parser.add_argument("--source", help="portrait image (jpg/png/webp) or video (mp4/mov); a long side over max_size "
                                         "(default 1920) is resized down to it, as the reference does")
    parser.add_argument("--audio", help="speech audio (wav/flac/ogg/mp3, any rate and channels)")
    parser.add_argument("--demo", action="store_true",
                        help="use the project's own sample portrait and speech instead of --source/--audio")
    parser.add_argument("--cfg", help="a config pickle whose default_kwargs replace the tree's")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="speed/quality starting point: DDIM steps " +
                             ", ".join(f"{name} {values['sampling_timesteps']}" for name, values in PRESETS.items()))
    parser.add_argument("--emo", type=int, help="emotion label 0-7 (4 neutral); lists via --set emo=[3,4]")


def _add_render(parser: argparse.ArgumentParser) -> None:
    _add_job_arguments(parser)
    parser.add_argument("--out", required=True, help="output .mp4 (written only when the render finishes)")
    _add_encoder_arguments(parser)
    _add_model_arguments(parser)
    _add_device_argument(parser)
    parser.set_defaults(run=_cmd_render)


def _cmd_stream(args: argparse.Namespace) -> int:
    with _demo_folder(args) as scratch:
        return _stream(args, *_inputs(args, scratch))


def _stream(args: argparse.Namespace, source: str, audio_path: str) -> int:
    import json
    import threading

    from ditto_fast.stages.audio import SAMPLE_RATE, load_audio
    from ditto_fast.stages.writer import check_target, check_writable

    options = _option_overrides(args)
    if args.out:  # before any work, as the stats file
        check_writable(args.out, inputs=(source, audio_path))
    if args.stats_json:
        check_target(args.stats_json, inputs=(source, audio_path))
    audio = load_audio(audio_path)
    renderer = _open_renderer(args)
    note(f"registering {source}")
    session = renderer.stream(renderer.register(source, **options), chunksize=args.chunksize, preset=args.preset,
                              **options)
    progress = LiveProgress(session)
    piece = SAMPLE_RATE // 25  # replay in 40 ms pieces, as a live source delivers them

    def feed() -> None:
        started = time.perf_counter()
        for start in range(0, len(audio), piece):
            if args.realtime:  # pace pushes at the audio's own clock
                time.sleep(max(0.0, start / SAMPLE_RATE - (time.perf_counter() - started)))
            session.push(audio[start:start + piece])
        session.end()

    with session:
        feeder = threading.Thread(target=feed, name="ditto-fast-feed")
        feeder.start()
        if args.out:
            frames = session.write_mp4(args.out, audio_path=audio_path, crf=args.crf, x264_preset=args.x264_preset,
                                       encoder=args.encoder, progress=progress)
        else:
            frames = 0
            for _ in session.frames():
                frames += 1
                progress(frames)
            session.require_frames(frames)
        feeder.join()
    progress.finish()
    stats = session.stats.as_dict()
    if args.stats_json:
        Path(args.stats_json).write_text(json.dumps(stats, indent=2) + "\n")
    latency = stats["first_frame_latency_s"]
    print(f"{frames} frames from {stats['audio_seconds']:.2f} s of audio; first frame after "
          f"{latency * 1000:.0f} ms; mean chunk latency {stats['chunk_latency_mean_s'] * 1000:.0f} ms; "
          f"real-time factor {stats['real_time_factor']:.2f}; {stats['late_frames']} late frames"
          + (" (paced in real time)" if args.realtime else "")
          + (" (synthetic weights)" if renderer.synthetic else ""))
    return 0


def _chunksize(text: str) -> tuple[int, int, int]:
    """--chunksize's type: three integers, checked by the options' own rule while parsing."""
    from ditto_fast.options import check_chunksize

    try:
        return check_chunksize(tuple(int(value) for value in text.split(",")))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected PAST,CURRENT,FUTURE (e.g. 3,5,2): {exc}") from None


def _add_stream(parser: argparse.ArgumentParser) -> None:
    from ditto_fast.stages.audio_windows import DEFAULT_CHUNKSIZE

    _add_job_arguments(parser)
    default = ",".join(map(str, DEFAULT_CHUNKSIZE))
    parser.add_argument("--chunksize", type=_chunksize, default=DEFAULT_CHUNKSIZE, metavar="PAST,CURRENT,FUTURE",
                        help=f"video frames of context before, frames made by, and frames of look-ahead after each "
                             f"HuBERT window; more look-ahead adds latency (default: {default})")
    parser.add_argument("--realtime", action="store_true", help="push audio at real-time pace")
    parser.add_argument("--out", help="also write the frames to this mp4")
    parser.add_argument("--stats-json", help="write latency and throughput figures to this JSON file")
    _add_encoder_arguments(parser)
    _add_model_arguments(parser)
    _add_device_argument(parser)
    parser.set_defaults(run=_cmd_stream)


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from ditto_fast.tools.export import export_tree

    reports = export_tree(args.pytorch, args.out, on_done=lambda r: print(r.line(), flush=True))
    print(f"exported {len(reports)} networks to {args.out}")
    return 0


def _add_export_onnx(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pytorch", required=True,
                        help="the ditto_pytorch/ folder, or a checkpoint tree containing it")
    parser.add_argument("--out", required=True, help="folder for the ONNX files")
    parser.set_defaults(run=_cmd_export_onnx)


def _cmd_build_engines(args: argparse.Namespace) -> int:
    from ditto_fast.checkpoints import TRT_PREFIX
    from ditto_fast.tools.engines import BuildOptions, build_engines

    options = BuildOptions(
        fp32_only=args.fp32_only, hardware_compatible=args.hardware_compatible, opt_level=args.opt_level,
        workspace_gib=args.workspace, timing_cache=Path(args.timing_cache) if args.timing_cache else None,
        only=tuple(args.only or ()), batch=args.batch, grid_sample=args.grid_sample,
    )
    built = build_engines(args.onnx, args.out, options, progress=lambda line: print(line, flush=True))
    print(f"built {len(built)} engines in {args.out}")
    if not Path(args.out).name.startswith(TRT_PREFIX):
        print(f"note: the tensorrt backend loads engines from a {TRT_PREFIX}*/ folder beside ditto_cfg/",
              file=sys.stderr)
    return 0


def _add_build_engines(parser: argparse.ArgumentParser) -> None:
    from ditto_fast.contract import MODELS

    parser.add_argument("--onnx", required=True, help="the ditto_onnx/ folder, or a checkpoint tree containing it")
    parser.add_argument("--out", required=True,
                        help="folder for the engines, e.g. <tree>/ditto_trt_custom (names as the configs give them)")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=list(MODELS),
                        help=f"build these networks only (default all): {' '.join(MODELS)}")
    parser.add_argument("--fp32-only", action="store_true",
                        help="build every network in fp32 (default: the reference's fp16/fp32 split)")
    parser.add_argument("--hardware-compatible", action="store_true",
                        help="engines that run on any Ampere-or-newer GPU (TensorRT's AMPERE_PLUS), a little slower")
    parser.add_argument("--opt-level", type=int, choices=range(6), default=5, metavar="0-5",
                        help="TensorRT builder optimisation level (default 5, as the reference; 3 builds faster)")
    parser.add_argument("--timing-cache", metavar="FILE", help="tactic timing cache: loaded if present, saved after")
    parser.add_argument("--workspace", type=float, metavar="GIB", help="builder workspace limit in GiB")
    parser.add_argument("--batch", type=int, metavar="N",
                        help="batch profile 1..N (tuned for N) for warp_network and decoder, for offline renders")
    parser.add_argument("--grid-sample", choices=("auto", "plugin", "native"), default="auto",
                        help="warp network's 5-D grid sample: our Triton kernel as a TensorRT plugin, or "
                             "TensorRT's own (TensorRT >= 11.2.1); auto picks the latter where available")
    parser.set_defaults(run=_cmd_build_engines)


def _cmd_synth(args: argparse.Namespace) -> int:
    from ditto_fast.tools.synthetic.tree import write_synthetic_tree

    report = write_synthetic_tree(args.out, args.size, args.seed, args.overwrite,
                                  progress=lambda message: print(message, flush=True))
    total = sum(report.parameters.values())
    print(f"synthetic {args.size} tree in {args.out}: {report.total_bytes() / 2**20:.1f} MiB, "
          f"{total:,} parameters in the core networks (weights are synthetic)")
    return 0


def _add_synth(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny",
                        help="tiny: constructed small models (tests, demo); full: real sizes, "
                             "random weights (benchmarks)")
    parser.add_argument("--out", required=True, help="folder to write the tree into")
    parser.add_argument("--seed", type=int, default=0, help="the same seed writes the same bytes")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing synthetic tree at --out")
    parser.set_defaults(run=_cmd_synth)


def _add_download(parser: argparse.ArgumentParser) -> None:
    from ditto_fast.tools.download import DEFAULT_PARTS, OFFICIAL_REPO, PARTS

    parser.add_argument("--out", required=True, help="folder to write the tree into")
    parser.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=list(DEFAULT_PARTS),
                        help=f"parts of the tree to fetch (default: {' '.join(DEFAULT_PARTS)})")
    parser.add_argument("--repo", default=OFFICIAL_REPO, help="model repository to fetch from")
    parser.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    parser.set_defaults(run=_cmd_download)


def _cmd_bench(args: argparse.Namespace) -> int:
    import dataclasses

    from ditto_fast.tools.benchmark import (
        QUICK_SETTINGS,
        BenchSettings,
        check_record_path,
        format_report,
        load_record,
        run_benchmark,
    )

    # Everything that can be wrong with the arguments fails here, before minutes of timing.
    baseline = load_record(args.compare) if args.compare else None
    if args.json:
        check_record_path(args.json)
    settings = QUICK_SETTINGS if args.quick else BenchSettings()
    if args.rounds is not None:
        settings = dataclasses.replace(settings, rounds=args.rounds)
    record = run_benchmark(args.checkpoints, args.backend, args.only, settings, _option_overrides(args),
                           progress=lambda line: print(f"bench {line}", file=sys.stderr, flush=True))
    print(format_report(record, baseline))
    if args.json:
        print(f"record written to {record.save(args.json)}")
    return 0


def _add_bench(parser: argparse.ArgumentParser) -> None:
    from ditto_fast.tools.benchmark import QUICK_SETTINGS, STAGES, BenchSettings

    quick, full = QUICK_SETTINGS, BenchSettings()
    parser.add_argument("--json", metavar="FILE", help="write the record (machine, settings, every sample) here")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke test, not figures: rounds={quick.rounds}, audio {quick.audio_seconds:g} s "
                             f"(default: rounds={full.rounds}, audio {full.audio_seconds:g} s)")
    parser.add_argument("--only", nargs="+", metavar="STAGE",
                        help=f"run these stages only (default all): {' '.join(STAGES)}")
    parser.add_argument("--compare", metavar="BASELINE", help="a saved --json record: print new/old ratios per stage")
    parser.add_argument("--rounds", type=int, help="timed rounds per stage, after one warm-up round")
    _add_model_arguments(parser)
    parser.set_defaults(run=_cmd_bench)


def _add_info(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(run=_cmd_info)


def _token(args: argparse.Namespace) -> str | None:
    """--token, else $DITTO_FAST_TOKEN; empty means none."""
    import os

    return args.token or os.environ.get("DITTO_FAST_TOKEN") or None


def _cmd_serve(args: argparse.Namespace) -> int:
    from ditto_fast.serving.server import CLUSTER_PACKAGES, check_exposure, check_packages, serve_renderer

    token = _token(args)
    check_exposure(args.host, token)  # before minutes of loading
    check_packages()
    if args.ray:
        check_packages(CLUSTER_PACKAGES, extra="ray")
        return _serve_cluster(args, token)
    if args.replicas is not None or args.autoscale is not None or args.address is not None:
        raise ValueError("--replicas, --autoscale and --address need --ray")
    renderer = _open_renderer(args)
    note(f"serving on http://{args.host}:{args.port}/ (live sessions at ws://{args.host}:{args.port}/v1/session"
         + (", bearer token required)" if token else ")"))
    serve_renderer(renderer, args.host, args.port, max_sessions=args.max_sessions, token=token,
                   max_batch=args.max_batch, session_defaults=_option_overrides(args), log_level=args.log_level)
    return 0


def _serve_cluster(args: argparse.Namespace, token: str | None) -> int:
    from ditto_fast.serving.cluster.app import ClusterConfig, run_cluster

    if args.replicas is not None and args.autoscale is not None:
        raise ValueError("give --replicas or --autoscale, not both")
    config = ClusterConfig(checkpoints=args.checkpoints, backend=args.backend, device=args.device, cfg=args.cfg,
                           frame_batch=args.frame_batch, threads=args.threads, max_sessions=args.max_sessions,
                           max_batch=args.max_batch, replicas=args.replicas or 1, autoscale=args.autoscale,
                           token=token, session_defaults=_option_overrides(args))
    where = args.address or "a local Ray cluster"
    note(f"deploying {config.name!r} on {where}: " + (f"{config.replicas} engine replica(s)" if args.autoscale is None
                                                       else "{}..{} engine replicas".format(*args.autoscale)))
    run_cluster(config, args.host, args.port, args.address)
    return 0


def _min_max(text: str) -> tuple[int, int]:
    """--autoscale MIN:MAX."""
    low, colon, high = text.partition(":")
    if not colon or not low.isdigit() or not high.isdigit() or not 1 <= int(low) <= int(high):
        raise argparse.ArgumentTypeError(f"expected MIN:MAX with 1 <= MIN <= MAX, got {text!r}")
    return int(low), int(high)


def _add_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; anything but loopback needs a token (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: %(default)s)")
    parser.add_argument("--max-sessions", type=int, metavar="N",
                        help="live sessions at once; past it a session is refused as busy (default: measured at "
                             "start: the sessions one session's frame rate keeps at 25 fps, at least 1)")
    parser.add_argument("--max-batch", type=int, default=8, metavar="N",
                        help="frames of different sessions rendered in one batch (default: %(default)s)")
    parser.add_argument("--token", help="bearer token every request but /healthz must carry (default: "
                                        "$DITTO_FAST_TOKEN)")
    parser.add_argument("--cfg", help="a config pickle whose default_kwargs replace the tree's")
    parser.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                        help="uvicorn's log level (default: %(default)s)")
    cluster = parser.add_argument_group("cluster (Ray Serve)")
    cluster.add_argument("--ray", action="store_true",
                         help="serve the same protocol from engine replicas on a Ray cluster (one per GPU with "
                              "--device cuda, else one per --threads CPUs); --max-sessions is then per replica")
    cluster.add_argument("--replicas", type=int, metavar="N", help="engine replicas (default: 1)")
    cluster.add_argument("--autoscale", type=_min_max, metavar="MIN:MAX",
                         help="scale between MIN and MAX replicas on ongoing sessions instead")
    cluster.add_argument("--address", help="the cluster, e.g. ray://head:10001 or auto (default: start a local one)")
    _add_model_arguments(parser)
    _add_device_argument(parser)
    parser.set_defaults(run=_cmd_serve)


def _cmd_client(args: argparse.Namespace) -> int:
    from ditto_fast.serving.client import run_clients
    from ditto_fast.serving.server import check_packages

    check_packages({"websockets": "websockets", "httpx": "httpx"})

    report = run_clients(args.url, args.source, args.audio, args.sessions, args.out_dir, args.stats_json,
                         token=_token(args), realtime=args.realtime)
    totals = report["aggregate"]
    p50, p99 = totals["first_video_latency_p50_s"], totals["first_video_latency_p99_s"]
    latency = f"first video p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms" if p50 is not None else "no video"
    factor = totals["real_time_factor_max"]
    print(f"{totals['sessions_ok']}/{totals['sessions']} sessions ok; {latency}; {totals['frames_sent_total']} "
          f"frames, {totals['late_frames_total']} late, {totals['dropped_frames_total']} dropped"
          + (f"; worst real-time factor {factor:.2f}" if factor is not None else "")
          + (f"; mp4s in {args.out_dir}" if totals["sessions_ok"] else ""))
    for failed in (r for r in report["sessions"] if not r["ok"]):
        print(f"session {failed['session']}: {failed['error']}", file=sys.stderr)
    return 0 if totals["sessions_failed"] == 0 else 1


def _add_client(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="the server, ws://HOST:PORT (wss:// behind TLS)")
    parser.add_argument("--source", required=True, help="portrait image, uploaded once")
    parser.add_argument("--audio", required=True, help="speech every session sends (any format FFmpeg reads)")
    parser.add_argument("--sessions", type=int, default=1, metavar="K", help="concurrent sessions (default: 1)")
    parser.add_argument("--out-dir", required=True, help="folder for session-{k}.mp4")
    parser.add_argument("--stats-json", help="write per-session and aggregate figures to this JSON file")
    parser.add_argument("--token", help="bearer token (default: $DITTO_FAST_TOKEN)")
    parser.add_argument("--no-realtime", dest="realtime", action="store_false",
                        help="send audio as fast as the server allows instead of at real-time pace")
    parser.set_defaults(run=_cmd_client)


# name → (one-line help, the function adding its parser). Kept in the order `--help` lists them.
COMMANDS = {
    "info": ("print the version, CUDA build, visible GPUs and optional packages", _add_info),
    "render": ("render a portrait speaking an audio file into an mp4", _add_render),
    "stream": ("replay an audio file through the live (online) pipeline", _add_stream),
    "synth": ("write a checkpoint tree with the official layout and synthetic weights", _add_synth),
    "download": ("fetch the official checkpoint tree (resumable, with progress bars)", _add_download),
    "export-onnx": ("export the core networks of a ditto_pytorch/ tree to ONNX, checked against torch",
                    _add_export_onnx),
    "build-engines": ("build TensorRT engines for this GPU from a ditto_onnx/ folder (needs TensorRT 10)",
                      _add_build_engines),
    "bench": ("time each pipeline stage and the end-to-end paths on a checkpoint tree", _add_bench),
    "serve": ("serve live sessions over WebSocket, offline renders over HTTP and a demo page", _add_serve),
    "client": ("load-test a server: K concurrent live sessions, latency and throughput as JSON", _add_client),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (given `command`) one whose other commands are listed but not built
    ("" builds none: enough for `--help` and `--version`)."""
    from ditto_fast import __version__

    parser = UsageErrorParser(prog="ditto-fast", description="Fast inference engine for the Ditto talking-head model.")
    parser.add_argument("--version", action="version", version=f"ditto-fast {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, add_arguments) in COMMANDS.items():
        subparser = commands.add_parser(name, help=summary, description=summary)
        if command is None or name == command:
            add_arguments(subparser)
    return parser


def _command_in(argv: Sequence[str]) -> str:
    """The command named on the line (the first word that is not an option), or ""."""
    return next((word for word in argv if not word.startswith("-")), "")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command_in(argv)).parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        return args.run(args)
    except Terminated:
        print("ditto-fast: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("ditto-fast: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        print(f"ditto-fast {args.command}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
