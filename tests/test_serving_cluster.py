"""`ditto-fast serve --ray`: the service's protocol in front of engine replicas on Ray Serve.

The `cluster` tests start a real local Ray cluster (cluster_scenarios.py) inside a network
namespace with only loopback, HOME and Ray's temporary folder in private folders; the others
check the relay, the remote session and renderer, and the configuration without a cluster."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np
import pytest

pytest.importorskip("ray.serve")
pytest.importorskip("fastapi")

from ray.exceptions import ActorDiedError  # noqa: E402

from ditto_fast.serving.cluster.app import ClusterConfig, _replica_options, app_builder  # noqa: E402
from ditto_fast.serving.cluster.engine import RemoteRenderer, RemoteSession, ReplicaLost  # noqa: E402
from ditto_fast.serving.cluster.relay import SessionRelay  # noqa: E402
from ditto_fast.serving.engine import LiveFrame  # noqa: E402
from test_serving_net import _namespace_problem  # noqa: E402

SCENARIOS = Path(__file__).resolve().parent / "cluster_scenarios.py"
SPEECH_FRAMES = 50  # cluster_scenarios.SPEECH_S of speech


def scenario(name: str, workdir: Path, timeout: float) -> dict:
    problem = _namespace_problem()
    if problem:
        pytest.skip(problem)
    home = workdir / "home"
    home.mkdir()
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    try:
        result = subprocess.run(["unshare", "-n", "sh", "-c",
                                 f"ip link set lo up && exec {sys.executable} {SCENARIOS} {name} {workdir}"],
                                capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, "HOME": str(home), "RAY_TMPDIR": ray_tmp})
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def speech_frames(session: dict) -> int:
    """Frames of the session's speech: what it sent, less the idle frames a late client gets."""
    return session["frames_emitted"] - session["idle_frames"]


@pytest.mark.cluster
@pytest.mark.timeout(600)
def test_many_sessions_over_three_avatars_survive_a_dead_replica(tmp_path):
    found = scenario("many", tmp_path, timeout=580)
    sessions = found["sessions"]
    assert len(sessions) == 12
    lost = [s for s in sessions if not s["ok"]]
    survivors = [s for s in sessions if s["ok"]]
    # The killed replica's sessions, and only those, end with an error a client can act on.
    assert len(lost) == found["killed"]["sessions_open"] >= 1
    for session in lost:
        assert "reconnect" in session["error"] and "replica" in session["error"]
    for session in survivors:
        assert speech_frames(session) == SPEECH_FRAMES and session["frames_sent"] == session["frames_emitted"]
        assert session["dropped_frames"] == 0
        with av.open(session["mp4"]) as container:
            assert sum(1 for _ in container.decode(video=0)) == session["frames_sent"]
    # An avatar is registered at most once per replica, before and after the kill.
    for registrations in (*found["registrations_before_kill"].values(), *found["registrations_after"].values()):
        assert all(count == 1 for count in registrations.values()), registrations
    # The dead replica was replaced; the unchanged CLI client and an offline render work.
    assert found["replicas_after"] == 3
    assert found["cli"]["rc"] == 0, found["cli"]
    assert found["cli_stats"]["aggregate"]["sessions_ok"] == 2
    assert found["render"]["status"] == 200
    with av.open(str(tmp_path / "render.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 13  # ceil(0.5 s × 25)
    assert found["metrics_sessions_max"] == 12
    # Removing the application drained the session still running instead of cutting it.
    assert found["drain_error"] is None and found["drained"] is not None, found["drain_error"]
    (drained,) = found["drained"]
    assert drained["ok"] and speech_frames(drained) == SPEECH_FRAMES


@pytest.mark.cluster
@pytest.mark.timeout(360)
def test_autoscaling_on_sessions_and_busy_at_once(tmp_path):
    found = scenario("scaling", tmp_path, timeout=340)
    assert found["replicas_at_start"] == 1 and found["replicas_under_load"] == 2
    assert found["sessions_open_at_busy"] == 4
    busy = found["busy"]
    assert busy["code"] == 1013 and busy["reply"]["type"] == "error" and busy["reply"]["message"].startswith("busy")
    assert busy["seconds"] < 3.0
    assert len(found["sessions"]) == 4 and all(s["ok"] for s in found["sessions"]), found["sessions"]


@pytest.mark.cluster
@pytest.mark.timeout(360)
def test_cli_and_serve_config_file(tmp_path):
    found = scenario("cli", tmp_path, timeout=340)
    for name in ("ditto-fast", "serve-run"):
        run = found[name]
        assert run["ready"], run["log"]
        assert run["report"]["sessions_ok"] == 2 and run["report"]["frames_sent_total"] == 50, run
        assert run["status"] == 0, run["log"]


# ----------------------------------------------------------------------------- without a cluster


def test_relay_answers_calls_in_order_and_fails_them_when_the_replica_is_gone():
    async def exercise():
        relay = SessionRelay(max_avatar_bytes=10)
        first = asyncio.ensure_future(relay.call("s", "push", (1,), {}))
        second = asyncio.ensure_future(relay.call("s", "end", (), {}))
        taken = [await relay.next_call("s", 1.0), await relay.next_call("s", 1.0)]
        assert [call[1] for call in taken] == ["push", "end"]
        assert await relay.next_call("s", 0.01) is None
        relay.answer("s", taken[0][0], "value", "bad audio")
        assert await first == ("value", "bad audio")
        relay.fail("s", "replica gone")
        assert await second == ("error", "replica gone")
        assert await relay.call("s", "push", (), {}) == ("error", "replica gone")
        assert (await relay.call("t", "__del__", (), {}))[0] == "error"  # only the session's own calls
        # Credit: a replica waits for the reader, and stops waiting when the session goes.
        waiting = asyncio.ensure_future(relay.wait_taken("t", 10, 5.0))
        relay.took("t", 10)
        assert await waiting
        assert not await relay.wait_taken("t", 20, 0.05)
        late = asyncio.ensure_future(relay.wait_taken("t", 20, 5.0))
        await asyncio.sleep(0)
        relay.fail("t", "closed")
        assert not await late
        # Avatars are bounded in bytes, oldest out (but the newest is always kept).
        relay.put_avatar("a", b"123456", ".png", {})
        relay.put_avatar("b", b"12345678", ".png", {"crop_scale": 2.0})
        assert not relay.has_avatar("a") and relay.avatar("b") == (b"12345678", ".png", {"crop_scale": 2.0})

    asyncio.run(asyncio.wait_for(exercise(), 10))


class _FakeRelay:
    """The relay's remote methods, answered at once."""

    def __init__(self, answer=("ok", "")) -> None:
        self.sent: list[tuple] = []
        self.answer = answer
        relay = self

        class Method:
            def __init__(self, name):
                self.name = name

            def remote(self, *args):
                relay.sent.append((self.name, *args))
                return relay.answer if self.name == "call" else None

        for name in ("call", "took", "fail"):
            setattr(self, name, Method(name))


class _FakeStream:
    def __init__(self, items, error: BaseException | None = None) -> None:
        self.items, self.error, self.cancelled = items, error, False

    def __iter__(self):
        yield from self.items
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        self.cancelled = True


OPENED = {"id": "abc", "frame_size": (4, 4), "replica": "r1"}


def _frame(index: int) -> tuple:
    return "frame", index, index / 25, np.zeros((4, 4, 3), np.uint8), np.zeros(640, np.float32)


def test_remote_session_streams_frames_reports_credit_and_keeps_stats(monkeypatch):
    monkeypatch.setattr("ditto_fast.serving.cluster.engine.ray.get", lambda value: value)
    relay = _FakeRelay()
    stream = _FakeStream([_frame(i) for i in range(7)] + [("stats", {"session": "abc", "frames_emitted": 7})])
    session = RemoteSession(relay, "key", stream, OPENED)
    frames = list(session.frames())
    assert [f.index for f in frames] == list(range(7)) and isinstance(frames[0], LiveFrame)
    assert session.stats_dict()["frames_emitted"] == 7
    assert ("took", "key", 5) in relay.sent  # every TOOK_EVERY_FRAMES frames
    session.push(np.zeros(160, np.float32))
    assert relay.sent[-1][:3] == ("call", "key", "push")
    session.close()
    session.close()
    assert stream.cancelled and relay.sent.count(("fail", "key", "the session is closed")) == 1
    relay.answer = ("value", "controls: unknown name 'nope'")
    with pytest.raises(ValueError, match="nope"):
        session.set_controls(nope=1)


def test_a_dead_replica_ends_the_session_with_reconnect_and_frees_waiting_calls(monkeypatch):
    monkeypatch.setattr("ditto_fast.serving.cluster.engine.ray.get", lambda value: value)
    relay = _FakeRelay()
    session = RemoteSession(relay, "key", _FakeStream([_frame(0)], ActorDiedError()), OPENED)
    with pytest.raises(ReplicaLost, match="reconnect"):
        list(session.frames())
    assert relay.sent[-1][0] == "fail" and "reconnect" in relay.sent[-1][2]
    with pytest.raises(ReplicaLost, match="reconnect"):
        session.push(np.zeros(160, np.float32))
    # A failure of the session itself (not of its replica) is reported as is.
    failing = RemoteSession(relay, "k2", _FakeStream([("failed", "stitch exploded")]), OPENED)
    with pytest.raises(RuntimeError, match="stitch exploded"):
        list(failing.frames())


class _Renders:
    """A deployment handle whose render dies `deaths` times, then returns `answer`."""

    def __init__(self, deaths: int, answer) -> None:
        self.deaths, self.answer, self.calls = deaths, answer, 0
        handle = self

        class Response:
            def result(self):
                handle.calls += 1
                if handle.calls <= handle.deaths:
                    raise ActorDiedError()
                return handle.answer

        class Render:
            def remote(self, *args):
                return Response()

        self.render = Render()


def _render_inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    source, audio = tmp_path / "s.png", tmp_path / "a.wav"
    source.write_bytes(b"png")
    audio.write_bytes(b"wav")
    return source, audio, tmp_path / "out" / "render.mp4"


def test_an_offline_render_is_retried_once_and_never_leaves_a_partial_file(tmp_path):
    source, audio, out = _render_inputs(tmp_path)
    out.parent.mkdir()
    handle = _Renders(deaths=1, answer=("ok", b"mp4 bytes"))
    RemoteRenderer(handle).render_to_file(source, audio, out)
    assert handle.calls == 2 and out.read_bytes() == b"mp4 bytes"
    out.unlink()
    with pytest.raises(ActorDiedError):
        RemoteRenderer(_Renders(deaths=2, answer=None)).render_to_file(source, audio, out)
    with pytest.raises(ValueError, match="no face"):
        RemoteRenderer(_Renders(deaths=0, answer=("value", "s.png: no face found"))).render_to_file(source, audio, out)
    assert list(out.parent.iterdir()) == []


def test_config_builder_and_replica_options():
    with pytest.raises(ValueError, match="unknown ditto-fast cluster argument.*replicaz"):
        app_builder({"replicaz": 2})
    with pytest.raises(ValueError, match="MIN:MAX"):
        ClusterConfig(autoscale=(3, 2))
    fixed = _replica_options(ClusterConfig(replicas=3, max_sessions=4))
    assert fixed["num_replicas"] == 3 and fixed["max_ongoing_requests"] == 6
    assert fixed["ray_actor_options"] == {"num_cpus": 1.0}
    scaled = _replica_options(ClusterConfig(autoscale=(1, 4), max_sessions=4, device="cuda"))
    assert scaled["ray_actor_options"] == {"num_gpus": 1} and "num_replicas" not in scaled
    assert scaled["autoscaling_config"]["min_replicas"] == 1 and scaled["autoscaling_config"]["max_replicas"] == 4
    assert scaled["autoscaling_config"]["target_ongoing_requests"] == 3.0


def test_the_shipped_serve_config_file_is_valid():
    import yaml
    from ray.serve.schema import ServeDeploySchema

    text = (Path(__file__).resolve().parents[1] / "deploy" / "ray-serve.yaml").read_text()
    config = ServeDeploySchema.model_validate(yaml.safe_load(text))  # Ray's own check of a config file
    (application,) = config.applications
    assert application.import_path == "ditto_fast.serving.cluster.app:app_builder"
    ClusterConfig(**application.args)  # every argument is a ClusterConfig field


@pytest.mark.parametrize("argv, message", [
    (["serve", "--replicas", "2"], "need --ray"),
    (["serve", "--ray", "--replicas", "2", "--autoscale", "1:2"], "not both"),
    (["serve", "--ray", "--autoscale", "3:1"], "MIN:MAX"),
])
def test_cli_refuses_bad_cluster_flags(argv, message):
    result = subprocess.run([sys.executable, "-m", "ditto_fast.cli", *argv], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
