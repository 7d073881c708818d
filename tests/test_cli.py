"""The command line as a newcomer meets it: --version, a fast --help, usage errors exiting 1,
`stream` taking the same job flags as `render`, status lines before long silent steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import av
import pytest

import ditto_fast
from ditto_fast.cli import COMMANDS, build_parser, main
from ditto_fast.stages.audio import frame_count, load_audio
from ditto_fast.tools.demo import write_demo_inputs

HEAVY = ("numpy", "cv2", "av", "onnxruntime", "onnx", "torch")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ditto_fast.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"ditto-fast {ditto_fast.__version__}"


@pytest.mark.parametrize("argv", [["--help"], ["--version"], []])
def test_help_and_version_import_nothing_heavy(argv):
    code = f"""
import sys
from ditto_fast.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


def test_top_level_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for name, (summary, _) in COMMANDS.items():
        assert name in result.stdout and summary.split()[0] in result.stdout


@pytest.mark.parametrize("argv,message", [
    ([], "the following arguments are required: COMMAND"),
    (["render"], "the following arguments are required: --out"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["stream", "--demo", "--chunksize", "3,0,2"], "argument --chunksize: expected PAST,CURRENT,FUTURE"),
    (["stream", "--demo", "--chunksize", "three"], "argument --chunksize: expected PAST,CURRENT,FUTURE"),
    (["render", "--demo", "--out", "x.mp4", "--emo", "x"], "argument --emo: invalid int value: 'x'"),
])
def test_usage_errors_exit_1_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def subcommand(parser, name: str):
    return parser._subparsers._group_actions[0].choices[name]


def test_each_command_alone_is_the_command_of_the_full_parser():
    full = build_parser()
    for name in COMMANDS:
        options = [action.option_strings for action in subcommand(full, name)._actions]
        assert [action.option_strings for action in subcommand(build_parser(name), name)._actions] == options
        assert len(subcommand(build_parser(""), name)._actions) == 1  # only -h: listed, not built


def test_option_help_names_formats_and_defaults():
    stream_help = subcommand(build_parser("stream"), "stream").format_help()
    for text in ("PAST,CURRENT,FUTURE", "default: 3,5,2", "--demo", "--preset", "--emo", "--cfg", "--frame-batch"):
        assert text in stream_help, text
    render_help = subcommand(build_parser("render"), "render").format_help()
    assert "onnxruntime (CPU" in render_help  # --backend says what each choice is


def test_stream_takes_the_job_flags(tmp_path, capsys):
    out, stats = tmp_path / "live.mp4", tmp_path / "stats.json"
    assert main(["stream", "--demo", "--preset", "realtime", "--emo", "3", "--seed", "0", "--frame-batch", "2",
                 "--out", str(out), "--stats-json", str(stats)]) == 0
    captured = capsys.readouterr()
    figures = json.loads(stats.read_text())
    _, speech = write_demo_inputs(tmp_path / "demo")
    expected = frame_count(len(load_audio(speech)))
    assert figures["frames_emitted"] == expected
    assert {"late_frames", "dropped_frames", "chunksize", "overlap_v2", "real_time_factor"} <= set(figures)
    assert captured.out.startswith(f"{expected} frames from ")
    assert "ditto-fast: loading" in captured.err and "live: " in captured.err
    with av.open(str(out)) as container:
        assert container.streams.video[0].frames == expected


def test_render_says_what_it_does_before_the_first_frame(tmp_path, capsys):
    assert main(["render", "--demo", "--out", str(tmp_path / "o.mp4"), "--set", "sampling_timesteps=2"]) == 0
    lines = capsys.readouterr().err.splitlines()
    first_bar = next(i for i, line in enumerate(lines) if line.startswith("rendering ["))
    assert any(line.startswith("ditto-fast: loading") for line in lines[:first_bar])
    assert any(line.startswith("ditto-fast: registering") for line in lines[:first_bar])
    assert "0/100 frames" in lines[first_bar]  # the bar shows before the features and the first clip
    assert any(" left" in line for line in lines[first_bar + 1:])  # with the time left


@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_render_stops_at_once_and_leaves_nothing(signum, status, tmp_path):
    portrait, speech = write_demo_inputs(tmp_path / "in", seconds=8.0)
    out_dir, scratch = tmp_path / "out", tmp_path / "tmp"
    out_dir.mkdir()
    scratch.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "ditto_fast.cli", "render", "--source", str(portrait), "--audio",
                             str(speech), "--out", str(out_dir / "o.mp4")], env={**os.environ, "TMPDIR": str(scratch)},
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not list(scratch.glob("ditto_fast_o.*.partial.mp4")) and time.monotonic() < deadline:  # the encoder writes
        time.sleep(0.05)
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signum)
    err = proc.communicate(timeout=30)[1]
    assert proc.returncode == status and time.monotonic() - sent < 1.0, err
    assert err.strip().splitlines()[-1] in ("ditto-fast: interrupted", "ditto-fast: terminated")
    assert list(out_dir.iterdir()) == []  # neither the mp4 nor its partial file
    # onnxruntime keeps an id file of its own in the temp folder; ours are all gone.
    assert [p.name for p in scratch.iterdir() if p.name != ".ses"] == []
