"""Fuzz suite (issue 16), the other doors: broken checkpoint trees (through the command line, as
subprocesses), the live API (`Renderer.stream`) misused, and the native bindings
(`ditto_fast._core`) given bad arrays and sizes (in subprocesses, so that a crash fails the test
instead of ending the run). Every case ends in a Python exception with one line naming the
problem, never a crash, a hang or code from a file being run. The report is tests/README.md."""

from __future__ import annotations

import gc
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_fuzz_inputs import assert_clean_error, cli

from ditto_fast import Renderer
from ditto_fast.engine.online import StreamSession
from ditto_fast.stages.audio import AudioError, frame_count
from ditto_fast.tools.demo import demo_speech, write_demo_inputs

TINY = Path(__file__).resolve().parents[1] / "checkpoints" / "synthetic-tiny"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, Path]:
    return write_demo_inputs(tmp_path_factory.mktemp("demo"), seconds=0.3)


# -- checkpoint trees ------------------------------------------------------------------------------

class Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def tree_copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(TINY, tree)
    return tree


def torch_state(path: Path, change) -> None:
    torch = pytest.importorskip("torch")
    state = torch.load(path, map_location="cpu", weights_only=True)
    change(state, torch)
    torch.save(state, path)


# (file in the tree, command and flags that read it)
PICKLES = [
    ("ditto_cfg/v0.4_hubert_cfg_trt.pkl", ("render",)),
    ("ditto_cfg/v0.4_hubert_cfg_trt_online.pkl", ("stream",)),
    ("ditto_cfg/v0.4_hubert_cfg_pytorch.pkl", ("render", "--backend", "torch")),
    ("ditto_pytorch/models/decoder.pth", ("render", "--backend", "torch")),
]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name,command", PICKLES, ids=[name for name, _ in PICKLES])
def test_a_malicious_pickle_in_the_tree_is_refused_and_never_run(name, command, demo, tmp_path):
    if "torch" in command:
        pytest.importorskip("torch")
    tree, marker = tree_copy(tmp_path), tmp_path / "pwned"
    (tree / name).write_bytes(pickle.dumps(Payload(marker)))
    run = cli(tmp_path, "--source", str(demo[0]), "--audio", str(demo[1]), "--checkpoints", str(tree), *command[1:],
              command=command[0])
    assert_clean_error(run, Path(name).name, "unsafe")
    assert not marker.exists()


@pytest.mark.timeout(60)
def test_a_malicious_cfg_option_pickle_is_refused_and_never_run(demo, tmp_path):
    evil, marker = tmp_path / "cfg.pkl", tmp_path / "pwned"
    evil.write_bytes(pickle.dumps({"default_kwargs": {"emo": Payload(marker)}}))
    assert_clean_error(cli(tmp_path, "--source", str(demo[0]), "--audio", str(demo[1]), "--cfg", str(evil)),
                       "cfg.pkl", "unsafe")
    assert not marker.exists()


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


BROKEN_TREES = {  # name: (break(tree), extra flags, what the error names)
    "truncated ONNX": (lambda t: truncate(t / "ditto_onnx" / "decoder.onnx"), (), "decoder.onnx"),
    "mis-shaped ONNX (another network's file)": (
        lambda t: shutil.copy(t / "ditto_onnx" / "stitch_network.onnx", t / "ditto_onnx" / "decoder.onnx"), (),
        "decoder.onnx"),
    "ONNX that is not a model": (lambda t: (t / "ditto_onnx" / "hubert.onnx").write_bytes(b"\x00" * 64), (),
                                 "hubert.onnx"),
    "missing ONNX": (lambda t: (t / "ditto_onnx" / "stitch_network.onnx").unlink(), (), "stitch_network.onnx"),
    ".pth with a missing key": (
        lambda t: torch_state(t / "ditto_pytorch" / "models" / "decoder.pth", lambda s, torch: s.popitem()),
        ("--backend", "torch"), "decoder.pth"),
    ".pth with a wrong shape": (
        lambda t: torch_state(t / "ditto_pytorch" / "models" / "warp_network.pth",
                              lambda s, torch: s.update({next(iter(s)): torch.zeros(3, 1, 7)})),
        ("--backend", "torch"), "warp_network.pth"),
    "truncated .pth": (lambda t: truncate(t / "ditto_pytorch" / "models" / "motion_extractor.pth"),
                       ("--backend", "torch"), "motion_extractor.pth"),
    "no config pickle": (lambda t: [p.unlink() for p in (t / "ditto_cfg").iterdir()], (), "ditto_cfg"),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", BROKEN_TREES)
def test_a_broken_checkpoint_tree_is_one_clean_error(case, demo, tmp_path):
    damage, flags, named = BROKEN_TREES[case]
    if "torch" in flags:
        pytest.importorskip("torch")
    tree = tree_copy(tmp_path)
    damage(tree)
    assert_clean_error(cli(tmp_path, "--source", str(demo[0]), "--audio", str(demo[1]), "--checkpoints", str(tree),
                           *flags), named)


# -- the live API ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TINY)


@pytest.fixture(scope="module")
def avatar(renderer, demo):
    return renderer.register(demo[0])


def one_line_error(exc_info) -> str:
    message = str(exc_info.value)
    assert message and "\n" not in message
    return message


BAD_PUSHES = {  # name: (samples, sample rate, what the error says)
    "3-D samples": (np.zeros((4, 2, 2), np.float32), 16000, "shape (4, 2, 2)"),
    "strings": (np.array(["a", "b"]), 16000, "dtype <U1"),
    "complex": (np.zeros(64, np.complex64), 16000, "dtype complex64"),
    "unsigned 16-bit": (np.zeros(64, np.uint16), 16000, "dtype uint16"),
    "bools": (np.zeros(64, bool), 16000, "dtype bool"),
    "None": (None, 16000, "shape ()"),
    "NaN": (np.full(640, np.nan, np.float32), 16000, "NaN or infinite"),
    "inf": (np.full(640, np.inf, np.float32), 16000, "NaN or infinite"),
    "float64 beyond float32": (np.full(640, 1e300), 16000, "NaN or infinite"),
    "rate 0": (np.zeros(640, np.float32), 0, "sample rate must be a positive integer, got 0"),
    "rate -1": (np.zeros(640, np.float32), -1, "got -1"),
    "rate as float": (np.zeros(640, np.float32), 44100.0, "got 44100.0"),
    "rate as text": (np.zeros(640, np.float32), "16000", "got '16000'"),
    "rate True": (np.zeros(640, np.float32), True, "got True"),
}


@pytest.mark.timeout(60)
def test_bad_pushes_are_refused_and_the_stream_goes_on(renderer, avatar):
    with renderer.stream(avatar, seed=0, sampling_timesteps=2) as session:
        for name, (samples, rate, message) in BAD_PUSHES.items():
            with pytest.raises(AudioError) as refused:
                session.push(samples, rate)
            assert message in one_line_error(refused), name
        session.push(demo_speech(0.5))
        session.end()
        session.end()  # a second end() is a no-op
        with pytest.raises(RuntimeError, match=r"push\(\) after end\(\)"):
            session.push(demo_speech(0.1))
        assert sum(1 for _ in session.frames(timeout=60)) == frame_count(8000)
    with pytest.raises(RuntimeError, match="after end"):
        session.push(demo_speech(0.1))
    assert list(session.frames(timeout=5)) == []  # after close: nothing more, no wait


@pytest.mark.timeout(60)
def test_interrupt_then_push_goes_on(renderer, avatar):
    with renderer.stream(avatar, seed=0, sampling_timesteps=2) as session:
        session.push(demo_speech(0.5))
        session.interrupt()
        session.interrupt()  # twice in a row too
        session.push(demo_speech(0.4, seed=1))
        session.end()
        indices = [frame.index for frame in session.frames(timeout=60)]
    assert indices == list(range(len(indices))) and len(indices) >= frame_count(int(0.4 * 16000))


@pytest.mark.timeout(60)
def test_a_consumer_that_drops_the_iterator_releases_a_blocked_producer(renderer, avatar):
    """The consumer takes two frames, drops the iterator and closes the stream while `push()` is
    blocked on the full queue: the push raises at once; no stage thread is left."""
    session = StreamSession(renderer.networks, avatar, renderer.online_options(seed=0, sampling_timesteps=2),
                            ring_slots=2, queued_windows=2)
    audio, outcome = demo_speech(6.0), {}

    def feed():
        try:
            for start in range(0, len(audio), 640):
                session.push(audio[start:start + 640])
            session.end()
        except RuntimeError as exc:
            outcome["error"] = str(exc)

    feeder = threading.Thread(target=feed)
    feeder.start()
    frames = session.frames(timeout=30)
    next(frames)
    next(frames)
    del frames
    gc.collect()
    time.sleep(1.0)  # the producer is blocked now: the ring and the queue are full
    assert feeder.is_alive()
    session.close()
    feeder.join(timeout=10)
    assert not feeder.is_alive() and outcome["error"] == "the stream is closed: push() after close()"
    assert session.stats.dropped_frames >= 0
    assert not [t.name for t in threading.enumerate() if t.name.startswith("ditto-fast-stream")]


@pytest.mark.timeout(120)
def test_a_slow_consumer_keeps_memory_bounded(renderer, avatar):
    """Back-pressure (test_stream.py checks that push blocks): 2 s of audio pushed at once to a
    consumer taking a frame per 50 ms: the queue stays within its bound, memory does not grow with
    the audio, every frame arrives."""
    import resource

    session = StreamSession(renderer.networks, avatar, renderer.online_options(seed=0, sampling_timesteps=2),
                            ring_slots=2, queued_windows=2)
    audio = demo_speech(2.0)
    feeder = threading.Thread(target=lambda: (session.push(audio), session.end()))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    feeder.start()
    taken = 0
    for _ in session.frames(timeout=60):
        taken += 1
        time.sleep(0.05)
        assert session.queued_windows <= 2
    feeder.join(timeout=30)
    session.close()
    assert taken == frame_count(len(audio))
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 200  # MiB


# -- native bindings ---------------------------------------------------------------------------------

NATIVE_PRELUDE = """
import numpy as np
from ditto_fast._core import FrameRing, paste_back
from ditto_fast.ops.paste_back import paste_mask
frame, render, mask = np.zeros((64, 80, 3), np.uint8), np.zeros((512, 512, 3), np.float32), paste_mask()
m = np.array([[0.1, 0, 5], [0, 0.1, 5], [0, 0, 1]])
"""
# (code, the exception class it must raise, or None when any result is fine as long as it returns)
# Wrong dtypes, shapes, strides and bad values of paste_back's arrays are in test_paste_native.py.
NATIVE_CASES = {
    "paste_back: matrix of 1e30": ("paste_back(frame, render, mask, np.array([[1e30, 0, 0], [0, 1e30, 0]]))", None),
    "paste_back: offset of 1e30": ("paste_back(frame, render, mask, np.array([[1, 0, -1e30], [0, 1, 1e30]]))", None),
    "paste_back: float32 max everywhere": ("paste_back(frame, render, mask, np.full((2, 3), 3.4e38))", None),
    "paste_back: float64 beyond float32": ("paste_back(frame, render, mask, np.array([[1e300, 0, 0], [0, 1, 0]]))",
                                           None),
    "paste_back: singular matrix": ("paste_back(frame, render, mask, np.zeros((3, 3)))", None),
    "paste_back: NaN render and mask": (
        "paste_back(frame, np.full_like(render, np.nan), np.full_like(mask, np.nan), m)", None),
    "paste_back: 1x1 frame": ("paste_back(np.zeros((1, 1, 3), np.uint8), render, mask, m)", None),
    "paste_back: 1x1 mask": ("paste_back(frame, np.zeros((1, 1, 3), np.float32), np.ones((1, 1), np.float32), m)",
                             None),
    "paste_back: 100000x100000 frame (a broadcast view)": (
        "paste_back(np.broadcast_to(np.uint8(0), (100000, 100000, 3)), render, mask, m)", "ValueError"),
    "paste_back: empty frame": ("paste_back(np.zeros((0, 0, 3), np.uint8), render, mask, m)", "ValueError"),
    "paste_back: 2**40 threads": ("paste_back(frame, render, mask, m, threads=2**40)", "TypeError"),
    "paste_back: a list": ("paste_back([[1]], render, mask, m)", "TypeError"),
    "paste_back: None": ("paste_back(None, render, mask, m)", "TypeError"),
    # Sizes past 1 TiB, and products that would wrap in size_t, are refused before any allocation.
    "FrameRing: 2 x 2**20 x 2**20 (6 TiB)": ("FrameRing(2, 2**20, 2**20, 3)", "ValueError"),
    "FrameRing: 2**40 slots": ("FrameRing(2**40, 1, 1, 1)", "ValueError"),
    "FrameRing: 2 x 2**40 x 2**40 (wraps to 0 bytes)": ("FrameRing(2, 2**40, 2**40, 3)", "ValueError"),
    "FrameRing: (2**62 + 1) x 4 (wraps to 4 bytes)": ("FrameRing(2, 2**62 + 1, 4, 1)", "ValueError"),
    "FrameRing: negative slots": ("FrameRing(-1, 10, 10, 3)", "TypeError"),
    "FrameRing: float size": ("FrameRing(2.5, 10, 10, 3)", "TypeError"),
    "FrameRing: 0 channels": ("FrameRing(2, 10, 10, 0)", "ValueError"),
    "FrameRing: negative timeout": ("FrameRing(2, 4, 4, 3).take(timeout=-1)", "ValueError"),
    "FrameRing: NaN timeout": ("FrameRing(2, 4, 4, 3).take(timeout=float('nan'))", "ValueError"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", NATIVE_CASES)
def test_native_bindings_raise_python_exceptions(case):
    code, expected = NATIVE_CASES[case]
    probe = NATIVE_PRELUDE + textwrap.dedent(f"""
        try:
            result = {code}
        except Exception as exc:
            print("raised", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        else:
            print("returned", type(result).__name__)
        """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=45)
    assert done.returncode == 0, f"crashed with status {done.returncode}: {done.stderr[-2000:]}"
    outcome = done.stdout.strip().splitlines()[-1]
    if expected is None:
        assert outcome.split()[0] in ("returned", "raised"), outcome  # either, as long as it is Python's
    else:
        assert outcome.startswith(f"raised {expected}"), outcome

