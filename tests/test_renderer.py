"""Renderer end to end on checkpoints/synthetic-tiny: files, frames, controls, errors."""

from __future__ import annotations

import pathlib
import threading

import av
import numpy as np
import pytest

from ditto_fast import Avatar, Renderer
from ditto_fast.cli import main
from ditto_fast.stages.audio import AudioError, frame_count, load_audio
from ditto_fast.stages.face_detect import NoFaceError
from ditto_fast.stages.writer import OutputError
from ditto_fast.tools.demo import demo_portrait, demo_speech, write_demo_inputs

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ROOT / "checkpoints" / "synthetic-tiny"
SECONDS = 1.6


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TINY)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_demo_inputs(tmp_path_factory.mktemp("demo"), seconds=SECONDS)


@pytest.fixture(scope="module")
def avatar(renderer, inputs) -> Avatar:
    return renderer.register(inputs[0])


def collect(job) -> list[np.ndarray]:
    return [frame.rgb.copy() for frame in job]


@pytest.fixture(scope="module")
def frames(renderer, avatar, inputs) -> list[np.ndarray]:
    return collect(renderer.render(avatar, inputs[1], seed=0))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def test_demo_command_writes_the_promised_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the default checkpoints are relative to the repository
    out = tmp_path / "demo.mp4"
    assert main(["render", "--demo", "--out", str(out), "--seed", "0"]) == 0
    summary = capsys.readouterr().out.strip()
    assert summary.startswith(f"{out}: 100 frames in ") and summary.endswith("(synthetic weights)")
    expected_frames = frame_count(len(demo_speech(4.0)))
    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.width, video.codec_context.height) == (512, 512)
        assert sum(1 for _ in container.decode(video=0)) == expected_frames == 100
        assert audio.codec_context.name == "aac"
        assert abs(float(audio.duration * audio.time_base) - 4.0) <= 0.04
    with av.open(str(out)) as container:
        decoded = sum(f.samples for f in container.decode(audio=0)) / container.streams.audio[0].sample_rate
    assert abs(decoded - 4.0) <= 0.04


def test_frames_follow_the_frame_count_rule_and_size(frames, inputs):
    audio_samples = int(SECONDS * 16000)
    assert len(frames) == frame_count(audio_samples)
    assert frames[0].shape == (512, 512, 3) and frames[0].dtype == np.uint8


def test_still_face_reproduces_the_source(frames, inputs):
    # The demo speech starts with 0.3 s of silence: frame 0 is the source's own motion.
    assert psnr(frames[0], demo_portrait()) >= 30


def test_loud_audio_opens_the_lips_more_than_silence(frames):
    audio = demo_speech(SECONDS)
    rms = np.sqrt((audio[: len(audio) // 640 * 640].reshape(-1, 640) ** 2).mean(axis=1))
    quiet, loud = int(np.argmin(rms[:8])), int(np.argmax(rms))
    mouth = (slice(290, 345), slice(200, 312))  # around the drawn mouth of the 512² portrait
    source = demo_portrait()[mouth].astype(float)
    change_quiet = np.abs(frames[quiet][mouth] - source).mean()
    change_loud = np.abs(frames[loud][mouth] - source).mean()
    assert change_loud > 3 * max(change_quiet, 0.5)


def test_delta_yaw_turns_the_face(renderer, avatar, inputs, frames):
    turned = collect(renderer.render(avatar, inputs[1], seed=0, overall_ctrl_info={"delta_yaw": 25.0}))
    face = (slice(150, 400), slice(130, 380))
    assert np.abs(turned[0][face].astype(float) - frames[0][face]).mean() > 5


def test_same_seed_same_bytes(renderer, avatar, inputs, frames):
    again = collect(renderer.render(avatar, inputs[1], seed=0))
    assert all(np.array_equal(a, b) for a, b in zip(again, frames, strict=True))


def test_frames_are_zero_copy_views_in_index_order(renderer, avatar, inputs):
    job = renderer.render(avatar, inputs[1], seed=0)
    assert job.info.num_frames == frame_count(int(SECONDS * 16000)) and job.info.fps == 25
    for expected, frame in enumerate(job):
        assert frame.index == expected and frame.timestamp == expected / 25
        assert not frame.rgb.flags.writeable and not frame.rgb.flags.owndata
        if expected == 2:
            break
    with pytest.raises(RuntimeError, match="iterated once"):
        next(iter(job))


def test_leaving_early_stops_the_producer(renderer, avatar, inputs):
    before = threading.active_count()
    for frame in renderer.render(avatar, inputs[1], seed=0):
        if frame.index == 1:
            break
    assert threading.active_count() == before


def test_saved_avatar_renders_the_same(renderer, avatar, inputs, frames, tmp_path):
    loaded = Avatar.load(avatar.save(tmp_path / "me"))
    assert all(np.array_equal(a, b) for a, b in zip(collect(renderer.render(loaded, inputs[1], seed=0)), frames))


def test_audio_arrays_work_like_files(renderer, avatar, inputs, frames):
    samples = load_audio(inputs[1])  # the same 16-bit samples the file holds
    assert all(np.array_equal(a, b) for a, b in zip(collect(renderer.render(avatar, samples, seed=0)), frames))


def test_an_error_mid_render_leaves_no_file(renderer, avatar, inputs, tmp_path, monkeypatch):
    from ditto_fast.ops.paste_back import PasteBack

    real = PasteBack.__call__
    calls = []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise RuntimeError("paste-back exploded")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(PasteBack, "__call__", failing)
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="paste-back exploded") as info:
        renderer.render_to_file(avatar, inputs[1], out, seed=0)
    assert "failing" in "".join(str(t.name) for t in info.traceback)  # the producer's traceback
    assert list(tmp_path.iterdir()) == []


def test_interrupt_leaves_no_file(renderer, avatar, inputs, tmp_path):
    def interrupt(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        renderer.render_to_file(avatar, inputs[1], tmp_path / "out.mp4", seed=0, progress=interrupt)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_is_refused_before_any_work(renderer, inputs, tmp_path, monkeypatch):
    import ditto_fast.renderer as api

    monkeypatch.setattr(api, "register", lambda *a, **k: pytest.fail("registered before checking the output"))
    with pytest.raises(OutputError, match="does not exist"):
        renderer.render_to_file(inputs[0], inputs[1], tmp_path / "missing" / "out.mp4")


def test_bad_inputs_get_clear_errors(renderer, avatar, inputs, tmp_path):
    text = tmp_path / "speech.wav"
    text.write_text("not audio")
    with pytest.raises(AudioError, match="speech.wav"):
        renderer.render(avatar, text)
    with pytest.raises(AudioError, match="no samples"):
        renderer.render(avatar, np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="option emo=9"):
        renderer.render(avatar, inputs[1], emo=9)
    with pytest.raises(ValueError, match="option sampling_timesteps=0"):
        renderer.render(avatar, inputs[1], sampling_timesteps=0)
    with pytest.raises(FileNotFoundError, match="no such source file"):
        renderer.register(tmp_path / "nobody.png")


def test_no_face_names_the_file(renderer, inputs):
    from golden_stubs import FixedOutputNetwork

    from ditto_fast.contract import MODELS

    silent = tuple(np.zeros(t.shape, np.float32) for t in MODELS["insightface_det"].outputs)
    blind = Renderer(TINY)
    blind.networks.replace("insightface_det", FixedOutputNetwork(silent))
    with pytest.raises(NoFaceError, match=r"portrait\.png: no face found"):
        blind.register(inputs[0])


@pytest.mark.parametrize("kind", ["flat grey", "noise", "landscape"])
def test_images_without_a_face_fail_with_the_no_face_error(kind, inputs, tmp_path, capsys):
    """The shipped synthetic detector answers faces only, so the no-face path runs end to end."""
    import cv2

    from ditto_fast.cli import main

    rng = np.random.default_rng(0)
    image = {
        "flat grey": np.full((480, 640, 3), 128, np.uint8),
        "noise": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
        "landscape": np.concatenate([np.full((200, 640, 3), (230, 170, 120), np.uint8),  # sky over grass
                                     np.full((280, 640, 3), (50, 130, 60), np.uint8)]),
    }[kind]
    source, out = tmp_path / "picture.png", tmp_path / "out.mp4"
    cv2.imwrite(str(source), image)
    assert main(["render", "--source", str(source), "--audio", str(inputs[1]), "--out", str(out)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert errors == [f"ditto-fast render: error: {source}: no face found (no detection scored >= 0.5)"]
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))


def test_missing_model_file_is_named(tmp_path):
    import shutil

    tree = tmp_path / "tree"
    shutil.copytree(TINY, tree)
    (tree / "ditto_onnx" / "decoder.onnx").unlink()
    broken = Renderer(tree)
    with pytest.raises(FileNotFoundError, match="decoder.onnx: model file of decoder is missing"):
        broken.networks["decoder"]


def write_video(path, frames: list[np.ndarray], codec: str = "libx264") -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))


def test_video_source_loops_its_frames_back_and_forth(renderer, inputs, tmp_path):
    portrait = demo_portrait()
    # Six source frames, each marked by a grey square in a corner far from the face.
    frames = []
    for i in range(6):
        frame = portrait.copy()
        frame[8:40, 8:40] = 40 * i
        frames.append(frame)
    video = tmp_path / "source.mov"
    write_video(video, frames)
    avatar = renderer.register(video)
    assert not avatar.is_image and avatar.num_frames == 6
    rendered = collect(renderer.render(avatar, inputs[1], seed=0))
    marks = [int(round(f[16:32, 16:32].mean() / 40)) for f in rendered]
    expected = [i % 6 if (i // 6) % 2 == 0 else 5 - i % 6 for i in range(len(rendered))]
    assert marks == expected


def test_one_thread_budget_reaches_every_consumer(inputs, monkeypatch):
    from ditto_fast.ops.paste_back import PasteBack

    with pytest.raises(ValueError, match="threads must be a positive integer"):
        Renderer(TINY, threads=-1)
    budgeted = Renderer(TINY, threads=1)
    assert budgeted.threads == 1 and budgeted.networks.threads == 1
    seen = []
    real_init = PasteBack.__init__
    monkeypatch.setattr(PasteBack, "__init__", lambda self, mask=None, threads=0: (seen.append(threads),
                                                                                  real_init(self, mask, threads))[1])
    rendered = sum(1 for _ in budgeted.render(budgeted.register(inputs[0]), demo_speech(0.2), seed=0,
                                              sampling_timesteps=5))
    assert rendered == 5 and seen == [1]
