"""Fuzz suite (issue 16), the command line: hostile and careless audio, images, video sources,
options and outputs, each through `ditto-fast` as a subprocess with a private TMPDIR.

A case that must fail ends in exit status 1 with one error line naming the file or option and the
problem, no traceback, nothing at the output path, nothing new in the output folder or in TMPDIR;
a case that must work writes the promised frames and leaves nothing else. Every input is made
here. Renders use 0.3 s of speech, 2 DDIM steps and x264 ultrafast. The report is tests/README.md.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from ditto_fast.stages.audio import SAMPLE_RATE, frame_count, load_audio, write_wav
from ditto_fast.tools.demo import demo_portrait, demo_speech

FAST = ("--set", "sampling_timesteps=2", "--x264-preset", "ultrafast")
SECONDS = 0.3
FRAMES = frame_count(int(SECONDS * SAMPLE_RATE))  # 8
# onnxruntime keeps an id file of its own in the temp folder, torch its compiler cache; everything
# else there is ours.
FOREIGN_TEMP = {".ses", "torchinductor_root", f"torchinductor_{os.environ.get('USER', 'root')}"}


@dataclass
class Run:
    result: subprocess.CompletedProcess
    out: Path
    out_dir: Path
    scratch: Path
    inputs: frozenset  # what the output folder held before the run

    def leftovers(self) -> list[str]:
        beside = [p.name for p in self.out_dir.iterdir() if p.name not in self.inputs and p != self.out]
        return sorted(beside + [f"$TMPDIR/{p.name}" for p in self.scratch.iterdir() if p.name not in FOREIGN_TEMP])


def cli(tmp_path: Path, *args: str, command: str = "render", out: str | Path | None = "out.mp4",
        fast: bool = True, timeout: float = 120) -> Run:
    """`ditto-fast COMMAND ARGS --out OUT` in a subprocess, with TMPDIR a fresh folder of its own."""
    out_dir, scratch = tmp_path / "out", tmp_path / "tmp"
    out_dir.mkdir(exist_ok=True)
    scratch.mkdir(exist_ok=True)
    out = out_dir / out if isinstance(out, str) else out
    before = frozenset(p.name for p in out_dir.iterdir())
    argv = [sys.executable, "-m", "ditto_fast.cli", command, *args, *(FAST if fast else ())]
    argv += ["--out", str(out)] if out is not None else []
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "TMPDIR": str(scratch)})
    return Run(result, out if out is not None else out_dir / "none.mp4", out_dir, scratch, before)


def assert_clean_error(run: Run, *names: str) -> str:
    """Exit 1, one error line (the last) naming `names`, only status lines before it, no
    traceback, no output, nothing left behind. Returns the error line."""
    err = run.result.stderr
    assert run.result.returncode == 1, err
    assert "Traceback" not in err and "Segmentation" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    for line in lines[:-1]:  # status lines, the progress bar, argparse's usage: nothing from FFmpeg & co
        assert line.startswith(("ditto-fast: ", "rendering [", "live: ", "usage: ", " ")), err
    for name in names:
        assert name in errors[0], errors[0]
    assert run.out.name in run.inputs or not run.out.exists()  # nothing new at the output path
    assert run.leftovers() == []
    return errors[0]


def video_frames(path: Path) -> tuple[int, tuple[int, int]]:
    with av.open(str(path)) as container:
        frames = [frame for frame in container.decode(video=0)]
        return len(frames), (frames[0].height, frames[0].width)


def assert_works(run: Run, frames: int, size: tuple[int, int] | None = None) -> None:
    assert run.result.returncode == 0, run.result.stderr
    assert "Traceback" not in run.result.stderr
    count, frame_size = video_frames(run.out)
    assert count == frames
    assert size is None or frame_size == size
    assert run.leftovers() == []


# -- inputs ----------------------------------------------------------------------------------------

def bgr(size: int = 512) -> np.ndarray:
    return cv2.cvtColor(demo_portrait(size), cv2.COLOR_RGB2BGR)


def write_image(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), image)
    return path


def write_audio(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE, codec: str = "pcm_s16le",
                container: str | None = None) -> Path:
    """(n,) or (n, channels) float samples through FFmpeg's `codec`."""
    samples = np.asarray(samples, np.float32).reshape(len(samples), -1)
    layout = "stereo" if samples.shape[1] == 2 else "mono"
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        step = stream.codec_context.frame_size or 1024
        for start in range(0, len(samples), step):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[start:start + step].T), format="fltp",
                                               layout=layout)
            frame.sample_rate = rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_video(path: Path, frames: list[np.ndarray], pts_ms: list[int] | None = None,
                container: str | None = None) -> Path:
    """RGB frames as H.264; `pts_ms`: each frame's time (a variable frame rate)."""
    from fractions import Fraction

    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.height, stream.width = (256, 256) if not frames else frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        out.start_encoding()
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("demo")
    return write_image(folder / "portrait.png", bgr()), write_wav(folder / "speech.wav", demo_speech(SECONDS))


def speech(seconds: float = SECONDS) -> np.ndarray:
    return demo_speech(seconds)


# -- audio -----------------------------------------------------------------------------------------

def truncated(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


AUDIO_ERRORS = {  # name: (make(folder, speech.wav) -> path, what the error says)
    "missing": (lambda d, s: d / "missing.wav", "no such file"),
    "a directory": (lambda d, s: (d / "speech_dir.wav").mkdir() or d / "speech_dir.wav", "is a folder"),
    "0 bytes": (lambda d, s: truncated(d / "empty.wav", b""), "is empty (0 bytes)"),
    "text named .wav": (lambda d, s: truncated(d / "notes.wav", b"this is not audio\n" * 20), "cannot decode"),
    "truncated header": (lambda d, s: truncated(d / "cut.wav", s.read_bytes()[:30]), "cannot decode"),
    "header, no samples": (lambda d, s: truncated(d / "hollow.wav", s.read_bytes()[:44]), "contains no samples"),
    "float32 with NaN": (lambda d, s: write_audio(d / "nan.wav", np.where(np.arange(4800) == 99, np.nan, speech()),
                                                  codec="pcm_f32le"), "NaN or infinite"),
    "float32 with inf": (lambda d, s: write_audio(d / "inf.wav", np.where(np.arange(4800) == 7, np.inf, speech()),
                                                  codec="pcm_f32le"), "NaN or infinite"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", AUDIO_ERRORS)
def test_bad_audio_is_one_clean_error(case, demo, tmp_path):
    make, message = AUDIO_ERRORS[case]
    audio = make(tmp_path, demo[1])
    assert_clean_error(cli(tmp_path, "--source", str(demo[0]), "--audio", str(audio)), audio.name, message)


AUDIO_THAT_WORKS = {  # name: make(folder) -> path
    "1 sample": lambda d: write_wav(d / "one.wav", np.array([0.2], np.float32)),
    "0.1 s": lambda d: write_wav(d / "short.wav", speech(0.1)),
    "silence": lambda d: write_wav(d / "silence.wav", np.zeros(4800, np.float32)),
    "8 kHz": lambda d: write_audio(d / "low.wav", speech()[::2], rate=8000),
    "48 kHz stereo": lambda d: write_audio(d / "stereo.wav", np.repeat(np.repeat(speech(), 3)[:, None], 2, 1),
                                           rate=48000),
    "clipping (int16 at full scale)": lambda d: write_wav(d / "loud.wav", np.clip(speech() * 50, -1, 1)),
    "float32 beyond +-1": lambda d: write_audio(d / "hot.wav", speech() * 8, codec="pcm_f32le"),
    "mp3": lambda d: write_audio(d / "speech.mp3", speech(), codec="libmp3lame"),
    "m4a": lambda d: write_audio(d / "speech.m4a", speech(), codec="aac", container="mp4"),
    "ogg (opus)": lambda d: write_audio(d / "speech.ogg", np.repeat(speech(), 3), rate=48000, codec="libopus"),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", AUDIO_THAT_WORKS)
def test_odd_but_valid_audio_renders(case, demo, tmp_path):
    audio = AUDIO_THAT_WORKS[case](tmp_path)
    assert_works(cli(tmp_path, "--source", str(demo[0]), "--audio", str(audio)), frame_count(len(load_audio(audio))))


@pytest.mark.timeout(240)
def test_ten_minutes_of_audio_decode_and_make_features(tmp_path):
    """A 10-minute mp3 through loading and the audio-feature path (HuBERT windows, one at a
    time) in bounded memory; a full render (15000 frames, ~25 min on 2 cores) is not run here."""
    import resource

    from ditto_fast import Renderer
    from ditto_fast.stages.audio_features import feature_extractor

    minutes = 10
    tone = np.tile(speech(4.0), 15 * minutes)  # 600 s
    path = write_audio(tmp_path / "long.mp3", tone, codec="libmp3lame")
    audio = load_audio(path)
    assert abs(len(audio) / SAMPLE_RATE - 60 * minutes) < 0.2
    extractor = feature_extractor(Renderer().networks)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = 0
    for block in extractor.offline_blocks(audio):  # as the render's features stage takes them
        assert np.isfinite(block).all()
        rows += len(block)
    assert rows == frame_count(len(audio)) == 15000
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mib < 256  # window by window: nothing grows with the length


# -- images ----------------------------------------------------------------------------------------

def two_faces() -> np.ndarray:
    canvas = np.full((512, 768, 3), 200, np.uint8)
    canvas[:, :512] = bgr()
    canvas[128:384, 512:] = cv2.resize(bgr(), (256, 256), interpolation=cv2.INTER_AREA)
    return canvas


def cut_off() -> np.ndarray:
    canvas = np.full((512, 512, 3), 200, np.uint8)
    canvas[:, :256] = bgr()[:, 256:]  # the left half of the frame shows the face's right half
    return canvas


IMAGE_ERRORS = {  # name: (make(folder, portrait.png) -> path, what the error says)
    "missing": (lambda d, p: d / "nobody.png", "no such file"),
    "corrupt": (lambda d, p: truncated(d / "broken.png", p.read_bytes()[:2000]), "not a readable image"),
    "0 bytes": (lambda d, p: truncated(d / "empty.png", b""), "is empty (0 bytes)"),
    "svg": (lambda d, p: truncated(d / "face.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
                                                   b'<circle cx="32" cy="32" r="30" fill="peachpuff"/></svg>'),
            "not a readable image or video"),
    # The synthetic detector answers a whole, upright, centred face only: these are no-face errors here.
    "16x16": (lambda d, p: write_image(d / "tiny.png", cv2.resize(bgr(), (16, 16), interpolation=cv2.INTER_AREA)),
              "no face found"),
    "face cut off at the border": (lambda d, p: write_image(d / "cut.png", cut_off()), "no face found"),
    "rotated 90 degrees": (lambda d, p: write_image(d / "rotated.png", cv2.rotate(bgr(), cv2.ROTATE_90_CLOCKWISE)),
                           "no face found"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", IMAGE_ERRORS)
def test_bad_images_are_one_clean_error(case, demo, tmp_path):
    make, message = IMAGE_ERRORS[case]
    source = make(tmp_path, demo[0])
    assert_clean_error(cli(tmp_path, "--source", str(source), "--audio", str(demo[1])), source.name, message)


def cmyk_jpeg(path: Path) -> Path:
    image = pytest.importorskip("PIL.Image")
    image.fromarray(demo_portrait()).convert("CMYK").save(path)
    return path


def gif(path: Path) -> Path:
    image = pytest.importorskip("PIL.Image")
    image.fromarray(demo_portrait()).save(path)
    return path


IMAGES_THAT_WORK = {  # name: (make(folder) -> path, output frame size)
    "alpha channel": (lambda d: write_image(d / "alpha.png", np.dstack([bgr(), np.full((512, 512), 90, np.uint8)])),
                      (512, 512)),
    "16-bit": (lambda d: write_image(d / "deep.png", bgr().astype(np.uint16) * 257), (512, 512)),
    "greyscale": (lambda d: write_image(d / "grey.png", cv2.cvtColor(bgr(), cv2.COLOR_BGR2GRAY)), (512, 512)),
    "CMYK jpeg": (lambda d: cmyk_jpeg(d / "cmyk.jpg"), (512, 512)),
    "GIF": (lambda d: gif(d / "face.gif"), (512, 512)),
    # Resized, as the reference does: the long side to max_size (1920; README "Command line").
    "10000x10000": (lambda d: write_image(d / "huge.png", cv2.resize(bgr(), (10000, 10000))), (1920, 1920)),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", IMAGES_THAT_WORK)
def test_odd_but_valid_images_render(case, demo, tmp_path):
    make, size = IMAGES_THAT_WORK[case]
    source = make(tmp_path)
    assert_works(cli(tmp_path, "--source", str(source), "--audio", str(demo[1])), FRAMES, size)


def test_of_two_faces_the_largest_wins_not_the_best_scored():
    """DITTO_SPEC §4.8: the caller takes the largest-area box. The synthetic detector finds one
    centred face only, so a stand-in detector reports both faces of a two-face image, the smaller
    with the higher score; the 106-point crop must be placed on the larger one."""
    from golden_stubs import FixedOutputNetwork

    from ditto_fast.contract import MODELS
    from ditto_fast.stages.crop import warp_affine
    from ditto_fast.stages.face_detect import detect_face_landmarks, detect_faces, landmark106_matrix

    image = cv2.cvtColor(two_faces(), cv2.COLOR_BGR2RGB)  # 768 wide: the letterbox scale is 2/3
    scale = 512 / 768
    faces = {"large": ((256 - 115, 256 - 115, 256 + 115, 256 + 115), 0.6),
             "small": ((640 - 58, 256 - 58, 640 + 58, 256 + 58), 0.95)}
    outputs = [np.zeros(t.shape, np.float32) for t in MODELS["insightface_det"].outputs]
    stride, cells = 32, 512 // 32
    for (box, score) in faces.values():
        x1, y1, x2, y2 = (v * scale for v in box)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        anchor = 2 * (int(cy // stride) * cells + int(cx // stride))
        ax, ay = (anchor // 2) % cells * stride, (anchor // 2) // cells * stride
        outputs[2][anchor, 0] = score  # stride-32 scores, boxes (l, t, r, b in strides) and keypoints
        outputs[5][anchor] = [(ax - x1) / stride, (ay - y1) / stride, (x2 - ax) / stride, (y2 - ay) / stride]
    detector = FixedOutputNetwork(tuple(outputs))
    boxes = detect_faces(image, detector).boxes
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert len(boxes) == 2 and boxes[0, 4] > boxes[1, 4] and areas[1] > areas[0]  # best score first, smaller
    spread = np.random.default_rng(0)  # landmarks spread over the crop (all in one point: no crop)
    landmark106 = FixedOutputNetwork((spread.uniform(-0.5, 0.5, (1, 212)).astype(np.float32),))
    landmark203 = FixedOutputNetwork((spread.uniform(0.2, 0.8, (1, 406)).astype(np.float32),))
    detect_face_landmarks(image, detector, landmark106, landmark203)
    seen = landmark106.calls[0]["data"][0].transpose(1, 2, 0)[..., ::-1]  # the net's BGR input, as RGB
    np.testing.assert_array_equal(seen, warp_affine(image, landmark106_matrix(boxes[1]), 192))


# -- video sources ---------------------------------------------------------------------------------

def face_frames(count: int) -> list[np.ndarray]:
    return [demo_portrait(256)] * count


def blank_frames(count: int) -> list[np.ndarray]:
    return [np.full((256, 256, 3), 128, np.uint8)] * count


VIDEO_ERRORS = {
    "0 frames": (lambda d: write_video(d / "empty.mkv", [], container="matroska"), "has no frames"),
    "corrupt": (lambda d: truncated(d / "broken.mp4", write_video(d / "whole.mp4", face_frames(10)).read_bytes()[:1500]
                                    ), "not a readable image or video"),
    "first frame without a face": (lambda d: write_video(d / "late.mp4", blank_frames(3) + face_frames(3)),
                                   "no face found"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", VIDEO_ERRORS)
def test_bad_video_sources_are_one_clean_error(case, demo, tmp_path):
    make, message = VIDEO_ERRORS[case]
    source = make(tmp_path)
    (tmp_path / "whole.mp4").unlink(missing_ok=True)
    assert_clean_error(cli(tmp_path, "--source", str(source), "--audio", str(demo[1])), source.name, message)


VIDEOS_THAT_WORK = {
    "1 frame": lambda d: write_video(d / "one.mp4", face_frames(1)),
    "variable frame rate": lambda d: write_video(d / "vfr.mp4", face_frames(8),
                                                 pts_ms=[0, 40, 50, 130, 200, 210, 300, 480]),
    # Frames after the first are tracked from the previous landmarks, not detected (the reference's rule).
    "later frames without a face": lambda d: write_video(d / "gone.mp4", face_frames(3) + blank_frames(4)),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", VIDEOS_THAT_WORK)
def test_odd_but_valid_video_sources_render(case, demo, tmp_path):
    source = VIDEOS_THAT_WORK[case](tmp_path)
    assert_works(cli(tmp_path, "--source", str(source), "--audio", str(demo[1])), FRAMES, (256, 256))


# -- options ---------------------------------------------------------------------------------------

RENDER_OPTION_ERRORS = [  # (arguments, what the error names); --emo x and a bad --chunksize are in test_cli.py
    (("--set", "sampling_timesteps=0"), "sampling_timesteps=0"),
    (("--set", "sampling_timesteps=-1"), "sampling_timesteps=-1"),
    (("--set", "sampling_timesteps=10000"), "sampling_timesteps=10000"),
    (("--emo", "9"), "emo=9"),
    (("--emo", "-1"), "emo=-1"),
    (("--set", "emo='x'"), "emo='x'"),
    (("--set", "crop_scale=0"), "crop_scale=0"),
    (("--set", "crop_scale=-1"), "crop_scale=-1"),
    (("--set", "crop_scale=nan"), "crop_scale='nan'"),
    (("--set", "crop_scale=1e999"), "crop_scale=inf"),
    (("--set", "sampling_timesteps"), "--set expects key=value"),
    (("--set", "=3"), "--set expects key=value"),
    (("--set", "emo=["), "emo='['"),
    (("--set", "colour=3"), "unknown option 'colour'"),
    (("--set", "ctrl_info={0: {'yaw': 1}}"), "ctrl_info[0] has unknown controls ['yaw']"),
    (("--set", "ctrl_info={-1: {'delta_yaw': 1}}"), "ctrl_info key=-1"),
    (("--set", "ctrl_info=5"), "ctrl_info=5"),
    (("--seed", "-1"), "seed=-1"),
    (("--seed", "x"), "argument --seed"),
    (("--threads", "-1"), "threads must be"),
    (("--threads", "x"), "argument --threads"),
    (("--frame-batch", "0"), "frame_batch must be at least 1"),
    (("--crf", "99"), "argument --crf"),
    (("--crf", "x"), "argument --crf"),
    (("--x264-preset", "bogus"), "argument --x264-preset"),
    (("--encoder", "mpeg2"), "argument --encoder"),
    (("--backend", "bogus"), "argument --backend"),
    (("--preset", "bogus"), "argument --preset"),
    (("--device", "gpu0"), "device must be"),
    (("--cfg", "missing.pkl"), "missing.pkl"),
    (("--checkpoints", "no_such_tree"), "no_such_tree"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args,named", RENDER_OPTION_ERRORS, ids=[" ".join(a) for a, _ in RENDER_OPTION_ERRORS])
def test_bad_render_options_are_one_clean_error(args, named, demo, tmp_path):
    run = cli(tmp_path, "--source", str(demo[0]), "--audio", str(demo[1]), *args, fast=args[0] == "--set")
    assert_clean_error(run, named)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args,named", [(("--demo", "--source", "x.png"), "--demo"),
                                        (("--audio", "a.wav"), "--source")])
def test_inconsistent_input_flags(args, named, tmp_path):
    assert_clean_error(cli(tmp_path, *args), named)


@pytest.mark.timeout(60)
def test_an_unavailable_encoder_is_named(demo, tmp_path):
    from ditto_fast.stages.writer import nvenc_available

    if nvenc_available():
        pytest.skip("NVENC opens here")
    run = cli(tmp_path, "--source", str(demo[0]), "--audio", str(demo[1]), "--encoder", "h264_nvenc")
    assert_clean_error(run, "h264_nvenc cannot be opened here")


@pytest.mark.timeout(60)
def test_ctrl_info_past_the_last_frame_is_ignored_as_the_reference_does(demo, tmp_path):
    run = cli(tmp_path, "--source", str(demo[0]), "--audio", str(demo[1]),
              "--set", "ctrl_info={9999: {'delta_yaw': 30}}")
    assert_works(run, FRAMES)


STREAM_ERRORS = [
    (("--chunksize", "0,0,0"), "argument --chunksize"),
    (("--chunksize", "1,1,1"), "made no frames from 0.30 s of audio: too short for chunksize 1,1,1"),
    (("--chunksize", "1,1,1", "--stats-json", "no_such_folder/s.json"), "folder no_such_folder does not exist"),
    (("--stats-json", "."), "is a folder"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args,named", STREAM_ERRORS, ids=[" ".join(a) for a, _ in STREAM_ERRORS])
def test_bad_stream_options_are_one_clean_error(args, named, demo, tmp_path):
    assert_clean_error(cli(tmp_path, "--source", str(demo[0]), "--audio", str(demo[1]), *args, command="stream"), named)


@pytest.mark.timeout(90)
def test_the_smallest_chunk_size_streams_when_the_audio_is_long_enough(tmp_path, demo):
    audio = write_wav(tmp_path / "second.wav", speech(1.0))
    run = cli(tmp_path, "--source", str(demo[0]), "--audio", str(audio), "--chunksize", "1,1,1", command="stream")
    assert_works(run, 25)


# -- outputs ---------------------------------------------------------------------------------------

def test_an_unwritable_folder_is_refused_before_any_work(demo, tmp_path):
    if os.geteuid() == 0:  # root writes through permission bits; /proc refuses new files even to root
        folder = Path("/proc")
    else:
        folder = tmp_path / "locked"
        folder.mkdir(mode=0o555)
    run = cli(tmp_path, "--source", str(demo[0]), "--audio", str(demo[1]), out=folder / "out.mp4")
    line = assert_clean_error(run, str(folder / "out.mp4"), "is not writable")
    assert "ditto-fast: loading" not in run.result.stderr, line  # refused before the models load


@pytest.mark.parametrize("name,named", [("folder.mp4", "is a folder"), ("out.avi", "must be an .mp4")])
def test_a_folder_or_a_wrong_suffix_as_the_output(name, named, demo, tmp_path):
    (tmp_path / "out").mkdir()
    if name == "folder.mp4":
        (tmp_path / "out" / name).mkdir()
    assert_clean_error(cli(tmp_path, "--source", str(demo[0]), "--audio", str(demo[1]), out=name), name, named)


@pytest.mark.parametrize("which", ["source", "audio"])
def test_an_input_as_the_output_is_refused(which, demo, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    source, audio = demo
    if which == "source":
        source = write_video(out_dir / "me.mp4", face_frames(2))
        target = source
    else:
        audio = write_audio(out_dir / "voice.mp4", speech(), codec="aac", container="mp4")
        target = audio
    original = target.read_bytes()
    run = cli(tmp_path, "--source", str(source), "--audio", str(audio), out=target)
    assert run.result.returncode == 1 and "is also an input" in run.result.stderr, run.result.stderr
    assert target.read_bytes() == original and run.leftovers() == []


def in_tmpfs(tmp_path: Path, size: str, script: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`script` (sh; $DISK is a fresh tmpfs of `size`) in a mount namespace of its own."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) for a private tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir(exist_ok=True)
    probe = subprocess.run(["unshare", "-Urm", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")
    wrapper = f'mount -t tmpfs -o size={size} tmpfs "$DISK" || exit 97\n{script}'
    result = subprocess.run(["unshare", "-Urm", "sh", "-c", wrapper], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "DISK": str(disk), "PY": sys.executable})
    assert result.returncode != 97, result.stderr
    return result


RENDER_TO_DISK = '"$PY" -m ditto_fast.cli render --source "$SRC" --audio "$AUD" --set sampling_timesteps=2 ' \
                 '--x264-preset ultrafast --out "$OUT"; rc=$?; ls -A "$DISK" > "$LISTING"; exit $rc'


@pytest.mark.timeout(120)
@pytest.mark.parametrize("full", ["output folder", "temp folder"])
def test_a_full_disk_is_one_clean_error_and_leaves_nothing(full, demo, tmp_path, monkeypatch):
    """A 16 KiB tmpfs holds less than the 8-frame mp4: as the output folder the move from the temp
    folder fails (a copy across filesystems); as TMPDIR the encoder's writes fail mid-render."""
    scratch, listing = tmp_path / "tmp", tmp_path / "listing"
    scratch.mkdir()
    disk = tmp_path / "disk"
    out = (disk if full == "output folder" else tmp_path) / "out.mp4"
    monkeypatch.setenv("TMPDIR", str(disk if full == "temp folder" else scratch))
    for name, value in (("SRC", demo[0]), ("AUD", demo[1]), ("OUT", out), ("LISTING", listing)):
        monkeypatch.setenv(name, str(value))
    result = in_tmpfs(tmp_path, "16k", RENDER_TO_DISK)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and lines[-1].startswith("ditto-fast render: error: ")
    assert "No space left on device" in lines[-1] or "could not finish the video" in lines[-1], lines[-1]
    assert [n for n in listing.read_text().split() if n not in FOREIGN_TEMP] == []  # nothing on the full disk
    assert not out.exists() and [p.name for p in scratch.iterdir() if p.name not in FOREIGN_TEMP] == []


@pytest.mark.timeout(120)
def test_an_output_on_another_filesystem_is_copied_into_place(demo, tmp_path, monkeypatch):
    """TMPDIR and the output folder on different filesystems: the finished file is copied beside
    the target and renamed; only the mp4 is left on that filesystem, nothing in TMPDIR."""
    scratch, listing, out, copy = tmp_path / "tmp", tmp_path / "listing", tmp_path / "disk" / "out.mp4", tmp_path / "c"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    for name, value in (("SRC", demo[0]), ("AUD", demo[1]), ("OUT", out), ("LISTING", listing), ("COPY", copy)):
        monkeypatch.setenv(name, str(value))
    result = in_tmpfs(tmp_path, "8m", RENDER_TO_DISK.replace('; exit $rc', '; cp "$OUT" "$COPY"; exit $rc'))
    assert result.returncode == 0, result.stderr
    assert listing.read_text().split() == ["out.mp4"] and video_frames(copy)[0] == FRAMES
    assert [p.name for p in scratch.iterdir() if p.name not in FOREIGN_TEMP] == []


@pytest.mark.timeout(120)
def test_sigkill_mid_render_leaves_at_most_a_file_in_the_temp_folder(demo, tmp_path):
    """Kill -9 while the encoder writes: nothing at or beside the output; in TMPDIR at most the
    writer's temporary mp4."""
    speech_8s = write_wav(tmp_path / "long.wav", speech(8.0))
    out_dir, scratch = tmp_path / "out", tmp_path / "tmp"
    out_dir.mkdir()
    scratch.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "ditto_fast.cli", "render", "--source", str(demo[0]), "--audio",
                             str(speech_8s), "--out", str(out_dir / "o.mp4"), *FAST],
                            env={**os.environ, "TMPDIR": str(scratch)}, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(scratch.glob("ditto_fast_o.*.partial.mp4")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert proc.poll() is None, "the render finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert list(out_dir.iterdir()) == []
    left = [p.name for p in scratch.iterdir() if p.name not in FOREIGN_TEMP]
    assert len(left) == 1 and left[0].startswith("ditto_fast_o.") and left[0].endswith(".partial.mp4"), left
