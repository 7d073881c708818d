"""The service over real sockets: a uvicorn server over the fake engine in a subprocess, in a
network namespace with only loopback (`unshare -n`, so nothing here can reach or be reached
from outside), driven by the load generator and raw WebSocket clients
(serving_net_scenarios.py); and the refusal to listen beyond loopback without a token."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import pytest

from ditto_fast.serving.server import SERVICE_PACKAGES, check_exposure, is_loopback

for _package in (*SERVICE_PACKAGES, "httpx"):  # the service's packages are not the library's dependencies
    pytest.importorskip(_package)

SCENARIOS = Path(__file__).resolve().parent / "serving_net_scenarios.py"


@functools.cache
def _namespace_problem() -> str | None:
    if not (shutil.which("unshare") and shutil.which("ip")):
        return "unshare or ip is not installed"
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True,
                           timeout=10)
    return None if probe.returncode == 0 else f"cannot make a network namespace: {probe.stderr.strip()}"


def scenario(name: str, workdir: Path, timeout: float) -> dict:
    problem = _namespace_problem()
    if problem:
        pytest.skip(problem)
    command = f"ip link set lo up && exec {sys.executable} {SCENARIOS} {name} {workdir}"
    result = subprocess.run(["unshare", "-n", "sh", "-c", command], capture_output=True, text=True,
                            timeout=timeout)
    logs = "".join(path.read_text()[-2000:] for path in workdir.glob("server-*.log"))
    assert result.returncode == 0, result.stderr[-3000:] + logs
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(60)
def test_load_generator_runs_concurrent_sessions_into_playable_mp4s(tmp_path):
    found = scenario("clients", tmp_path, timeout=50)
    report = found["report"]
    totals = report["aggregate"]
    assert totals["sessions"] == totals["sessions_ok"] == 4, report["sessions"]
    assert report["expected_frames"] == 50
    assert 0 < totals["first_video_latency_p50_s"] <= totals["first_video_latency_p99_s"] < 2.0
    assert found["realtime_s"] >= 2.0  # paced at the audio's own clock
    for session in report["sessions"]:
        assert session["frames_sent"] == session["frames_emitted"] == 50
        assert session["dropped_frames"] == 0 and session["real_time_factor"] is not None
        with av.open(session["mp4"]) as container:
            video = container.streams.video[0]
            assert container.streams.audio, "the stream carries the session's audio"
            frames = list(container.decode(video))
        assert len(frames) == 50 and (frames[0].width, frames[0].height) == (64, 64)
    assert json.loads((tmp_path / "rt.json").read_text())["aggregate"] == totals

    assert found["cli_rc"] == 0, found["cli_err"]
    assert found["cli_out"].startswith("2/2 sessions ok; first video p50 ")
    assert found["fast"]["aggregate"]["sessions_ok"] == 2 and not found["fast"]["realtime"]
    assert found["refused_status"] == 403  # the handshake without the token
    assert found["sessions_open"] == 0


@pytest.mark.timeout(40)
def test_client_vanishing_mid_stream_frees_its_session_promptly(tmp_path):
    found = scenario("disconnect", tmp_path, timeout=30)
    assert found["open_during"] == 1 and found["open_after"] == 0 and found["server_alive"]
    assert found["freed_after_s"] < 2.0


@pytest.mark.timeout(90)
def test_a_slow_reader_costs_dropped_frames_not_server_memory(tmp_path):
    found = scenario("slow_reader", tmp_path, timeout=80)
    stats, frame_bytes = found["stats"], found["frame_bytes"]
    assert stats["frames_emitted"] == found["frames"]
    assert stats["slow_client_dropped_frames"] > 0
    assert stats["frames_sent"] + stats["slow_client_dropped_frames"] == found["frames"]
    assert found["received"] == stats["frames_sent"]
    # Unbounded, the backlog would be all 250 frames (~190 MiB); the outbox holds at most
    # max_queued_video_bytes (32 MiB) plus a frame, and the sockets a few MiB.
    grown = found["peak_rss"] - found["baseline_rss"]
    assert grown < 100 * frame_bytes, f"server grew by {grown / 2**20:.0f} MiB"


@pytest.mark.timeout(90)
def test_serve_and_client_commands_with_the_real_engine(tmp_path):
    found = scenario("real_engine", tmp_path, timeout=80)
    assert found["cli_rc"] == 0, found["cli_err"] + found["cli_out"]
    assert found["cli_out"].startswith("2/2 sessions ok")
    assert found["unauthorised"] == 401 and found["sessions_open"] == 0
    # uvicorn's graceful shutdown re-raises the SIGTERM it caught; the CLI turns it into its own
    # clean exit (the engine closed, status 143).
    assert found["server_status"] == 143
    for session in found["stats"]["sessions"]:
        assert session["frames_sent"] == session["frames_emitted"] == 25
        with av.open(session["mp4"]) as container:
            assert container.streams.audio
            frames = list(container.decode(container.streams.video[0]))
        assert len(frames) == 25 and (frames[0].width, frames[0].height) == (512, 512)


@pytest.mark.timeout(120)
def test_demo_page_plays_the_stream_in_a_browser(tmp_path):
    if not shutil.which("chromium"):
        pytest.skip("chromium is not installed")
    found = scenario("browser", tmp_path, timeout=110)
    if not found["supported"]:
        pytest.skip("this chromium build plays no H.264/AAC in Media Source Extensions")
    for mode in ("file", "microphone"):
        state = found[mode]
        assert "closed (1000)" in state["log"] and '"frames_sent"' in state["log"], state["log"]
        assert state["error"] is None and state["width"] == 128
        assert state["buffered_end"] > 1.0 and state["time"] > 0.5  # played, not only buffered
    assert found["file"]["buffered_end"] == pytest.approx(2.0, abs=0.1)  # the whole speech file


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_hosts_need_no_token(host):
    assert is_loopback(host)
    check_exposure(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.com", "localhost.example.com"])
def test_other_hosts_need_a_token(host):
    assert not is_loopback(host)
    with pytest.raises(ValueError, match=f"refusing to listen on {host} without a token"):
        check_exposure(host, None)
    check_exposure(host, "a-token")


@pytest.mark.timeout(60)
def test_serve_refuses_a_public_host_without_a_token_in_one_line():
    environ = {key: value for key, value in os.environ.items() if key != "DITTO_FAST_TOKEN"}
    result = subprocess.run([sys.executable, "-m", "ditto_fast.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
                            capture_output=True, text=True, timeout=50, env=environ)
    assert result.returncode == 1
    assert result.stderr.strip() == ("ditto-fast serve: error: refusing to listen on 0.0.0.0 without a token: give "
                                     "--token (or set DITTO_FAST_TOKEN), or listen on 127.0.0.1")
