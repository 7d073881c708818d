"""One Renderer shared by threads: 4 offline renders and 4 live streams at once give the frames
they give one by one (same inputs and seeds), byte for byte."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ditto_fast import Renderer
from ditto_fast.tools.demo import demo_speech, write_demo_inputs

SEEDS = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    renderer = Renderer()
    portrait, _ = write_demo_inputs(tmp_path_factory.mktemp("concurrency"), seconds=0.5)
    return renderer, renderer.register(portrait)


def _offline(renderer, avatar, seed: int) -> list[np.ndarray]:
    return [frame.rgb.copy() for frame in renderer.render(avatar, demo_speech(1.0, seed=seed), seed=seed)]


def _live(renderer, avatar, seed: int) -> list[np.ndarray]:
    with renderer.stream(avatar, seed=seed) as session:
        feeder = threading.Thread(target=lambda: (session.push(demo_speech(1.0, seed=seed)), session.end()))
        feeder.start()
        frames = [frame.rgb.copy() for frame in session.frames(timeout=120)]
        feeder.join(timeout=60)
    return frames


def _at_once(job, renderer, avatar) -> dict[int, list[np.ndarray]]:
    results: dict[int, list[np.ndarray]] = {}
    failures: list[BaseException] = []

    def run(seed: int) -> None:
        try:
            results[seed] = job(renderer, avatar, seed)
        except BaseException as exc:  # re-raised in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in SEEDS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures, failures
    return results


@pytest.mark.parametrize("job", [_offline, _live], ids=["offline renders", "live streams"])
def test_four_at_once_equal_one_by_one(job, setup):
    renderer, avatar = setup
    alone = {seed: job(renderer, avatar, seed) for seed in SEEDS}
    together = _at_once(job, renderer, avatar)
    for seed in SEEDS:
        assert len(together[seed]) == len(alone[seed]) == 25
        assert all(np.array_equal(a, b) for a, b in zip(alone[seed], together[seed], strict=True)), seed
    assert not np.array_equal(alone[0][-1], alone[1][-1])  # the seeds (and the speech) differ
