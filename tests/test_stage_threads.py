"""Overlapped stages: bounded channels, one failure surfacing once, and the offline engine's
clip-by-clip motion equal to the whole-utterance algorithm."""

from __future__ import annotations

import pathlib
import threading
import time
import traceback
from collections.abc import Mapping

import numpy as np
import pytest
from a2m_cases import random_lmdm_stub

from ditto_fast import Renderer
from ditto_fast.engine.offline import RenderJob
from ditto_fast.engine.stage_threads import Channel, StageGroup, StagesStopped
from ditto_fast.stages.motion import Audio2Motion, Audio2MotionOptions, GaussianNoise, smooth_pose
from ditto_fast.tools.demo import demo_speech, write_demo_inputs

TINY = pathlib.Path(__file__).resolve().parents[1] / "checkpoints" / "synthetic-tiny"


# -- channels and groups ---------------------------------------------------------------------------

def test_channel_is_bounded_and_ordered():
    channel: Channel[int] = Channel(2)
    received: list[int] = []
    consumer = threading.Thread(target=lambda: received.extend(channel))
    channel.put(0)
    channel.put(1)
    blocked = threading.Thread(target=channel.put, args=(2,))
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive()  # full: the producer waits
    consumer.start()
    blocked.join(5)
    channel.finish()
    consumer.join(5)
    assert received == [0, 1, 2]


def test_closing_wakes_both_sides():
    full: Channel[int] = Channel(1)
    full.put(0)
    empty: Channel[int] = Channel(1)
    errors: list[type] = []

    def expect_stop(action):
        try:
            action()
        except StagesStopped:
            errors.append(StagesStopped)

    waiters = [threading.Thread(target=expect_stop, args=(lambda: full.put(1),)),
               threading.Thread(target=expect_stop, args=(lambda: list(empty),))]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.1)
    full.close()
    empty.close()
    for waiter in waiters:
        waiter.join(5)
    assert errors == [StagesStopped, StagesStopped]


def _failing_stage():
    raise ZeroDivisionError("stage broke here")


def test_first_failure_stops_every_stage_and_surfaces_once_with_its_traceback():
    group = StageGroup("test")
    channel: Channel[int] = group.channel(1)
    stopped = threading.Event()
    group.on_stop(stopped.set)

    def producer():  # would block forever on the full channel without the stop
        while True:
            channel.put(1)

    group.start("producer", producer)
    group.start("consumer-side", lambda: (time.sleep(0.1), _failing_stage()))
    with pytest.raises(ZeroDivisionError, match="stage broke here") as raised:
        group.join()
    assert stopped.is_set()
    frames = [frame.name for frame in traceback.extract_tb(raised.value.__traceback__)]
    assert "_failing_stage" in frames  # the original traceback, not a re-wrapped one
    assert not [t for t in threading.enumerate() if t.name.startswith("test-")]


def test_an_error_caused_by_the_shutdown_is_not_reported():
    group = StageGroup("test")
    group.start("first", _failing_stage)
    group.start("second", lambda: (time.sleep(0.2), (_ for _ in ()).throw(RuntimeError("late"))))
    with pytest.raises(ZeroDivisionError):
        group.join()


# -- clip-by-clip motion ---------------------------------------------------------------------------

def _whole_utterance(a2m: Audio2Motion, cond_all: np.ndarray) -> np.ndarray:
    """The reference's order of work: every clip, then one smoothing over the whole length."""
    n = len(cond_all)
    motion = None
    for start in range(0, n, a2m.options.valid_clip_len):
        clip = cond_all[start:start + 80]
        clip = np.concatenate([clip, np.repeat(clip[-1:], 80 - len(clip), axis=0)])
        motion = a2m.generate_clip(clip[None], motion)
    return smooth_pose(motion[:n], 0, n, a2m.options.smo_k_d)


SOURCE = {"scale": np.ones((1, 1), np.float32), "t": np.zeros((1, 3), np.float32),
          **{key: np.full((1, 66), 0.1, np.float32) for key in ("pitch", "yaw", "roll")},
          "exp": np.zeros((1, 63), np.float32), "kp": np.zeros((1, 63), np.float32)}


@pytest.mark.parametrize("frames", [1, 79, 80, 81, 157, 230])
@pytest.mark.parametrize(("overlap", "kernel"), [(10, 3), (0, 5), (30, 8), (10, 1)])
def test_clip_blocks_equal_the_whole_utterance_bit_for_bit(frames, overlap, kernel):
    rng = np.random.default_rng(frames)
    cond = rng.standard_normal((frames, 1103)).astype(np.float32)

    def a2m() -> Audio2Motion:
        options = Audio2MotionOptions(overlap=overlap, smo_k_d=kernel, sampling_timesteps=5)
        return Audio2Motion(random_lmdm_stub(), SOURCE, options, GaussianNoise(3))

    expected = _whole_utterance(a2m(), cond)
    blocks = list(a2m().offline_blocks(np.array_split(cond, max(1, frames // 9)), frames))
    assert sum(map(len, blocks)) == frames
    if frames > 80:
        assert len(blocks) > 1  # rows leave before the last clip is sampled
    np.testing.assert_array_equal(np.concatenate(blocks), expected)


def test_clip_blocks_report_missing_condition_rows():
    a2m = Audio2Motion(random_lmdm_stub(), SOURCE, Audio2MotionOptions(sampling_timesteps=2), GaussianNoise(0))
    with pytest.raises(ValueError, match="ended after 50 of 120 frames"):
        list(a2m.offline_blocks([np.zeros((50, 1103), np.float32)], 120))


# -- the engine --------------------------------------------------------------------------------------

class _Breaks:
    """Wraps a network; its `fail_on`-th call raises."""

    def __init__(self, network, fail_on: int) -> None:
        self.network, self.fail_on, self.calls = network, fail_on, 0

    def __call__(self, **arrays):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError(f"injected failure in call {self.calls}")
        return self.network(**arrays)


class _Swapped(Mapping):
    """The renderer's networks with one of them replaced."""

    def __init__(self, networks, name: str, replacement) -> None:
        self.networks, self.name, self.replacement = networks, name, replacement

    def __getitem__(self, name: str):
        return self.replacement if name == self.name else self.networks[name]

    def __iter__(self):
        return iter(self.networks)

    def __len__(self) -> int:
        return len(self.networks)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    renderer = Renderer(TINY)
    portrait, _ = write_demo_inputs(tmp_path_factory.mktemp("portrait"), seconds=1.0)
    return renderer, renderer.register(portrait)


@pytest.mark.parametrize(("network", "fail_on"), [("hubert", 4), ("lmdm", 15), ("decoder", 20)])
def test_an_error_in_any_stage_ends_the_render_once_with_its_traceback(tiny, network, fail_on):
    renderer, avatar = tiny
    networks = _Swapped(renderer.networks, network, _Breaks(renderer.networks[network], fail_on))
    job = RenderJob(networks, avatar, renderer.options(sampling_timesteps=10, seed=0), audio=demo_speech(4.0))
    received = 0
    with pytest.raises(RuntimeError, match=f"injected failure in call {fail_on}") as raised:
        for _ in job:
            received += 1
    assert received < job.info.num_frames
    assert "__call__" in [frame.name for frame in traceback.extract_tb(raised.value.__traceback__)]
    assert not [t for t in threading.enumerate() if t.name.startswith("ditto-fast-render")]


def test_leaving_early_stops_every_stage(tiny):
    renderer, avatar = tiny
    job = renderer.render(avatar, demo_speech(4.0), sampling_timesteps=10, seed=0)
    for frame in job:
        if frame.index == 3:
            break
    assert not [t for t in threading.enumerate() if t.name.startswith("ditto-fast-render")]
