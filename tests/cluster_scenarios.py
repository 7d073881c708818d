"""Scenarios of test_serving_cluster.py: a local Ray cluster (Ray Serve's proxy, the ingress, CPU
engine replicas over the shipped synthetic-tiny weights), run inside a network namespace that
has only loopback (`unshare -n`: Ray's own processes listen on every interface) with HOME in the
work folder (Ray writes there). Each drives the cluster over real sockets and prints one JSON
line of findings for the test to check.

    python3 cluster_scenarios.py SCENARIO WORKDIR
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import httpx

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))
from serving_net_scenarios import free_port  # noqa: E402

SPEECH_S = 2.0  # each session's speech: 50 frames


def _cluster_resources() -> dict:
    """The local cluster's size: 4 logical CPUs on 2 cores (replicas reserve 1, the ingress 0.1),
    a small object store."""
    return {"num_cpus": 4, "object_store_memory": 300 << 20, "include_dashboard": False, "log_to_driver": False}


@contextmanager
def cluster(config):
    """A local Ray cluster serving `config` on a free loopback port; yields the port."""
    import ray
    from ray import serve

    from ditto_fast.serving.cluster.app import NAMESPACE, build_application

    ray.init(namespace=NAMESPACE, **_cluster_resources())
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_application(config), name=config.name, route_prefix="/")
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()


def relay(config):
    import ray

    from ditto_fast.serving.cluster.app import NAMESPACE

    return ray.get_actor(config.relay_name, namespace=NAMESPACE)


def reports(config) -> dict:
    import ray

    return ray.get(relay(config).reports.remote())


def portraits(workdir: Path, sizes=(512, 448, 384)) -> list[Path]:
    """Three different avatars: the demo portrait at three sizes."""
    from ditto_fast.tools.demo import demo_portrait

    paths = []
    for size in sizes:
        path = workdir / f"portrait-{size}.png"
        cv2.imwrite(str(path), cv2.cvtColor(demo_portrait(size), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def speech(workdir: Path, seconds: float) -> Path:
    from ditto_fast.tools.demo import demo_speech
    from ditto_fast.stages.audio import write_wav

    path = workdir / f"speech-{seconds:g}.wav"
    write_wav(path, demo_speech(seconds))
    return path


def run_sessions(port: int, sources: list[Path], audio: Path, per_source: int, out: Path,
                 realtime: bool = True) -> list[dict]:
    """`per_source` concurrent sessions of each source through the load generator; their results."""
    from ditto_fast.serving.client import run_clients_async

    async def all_of_them():
        return await asyncio.gather(*(
            run_clients_async(f"ws://127.0.0.1:{port}", source, audio, per_source, out / source.stem,
                              realtime=realtime) for source in sources))

    return [session for report in asyncio.run(all_of_them()) for session in report["sessions"]]


def wait_for(predicate, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


# ----------------------------------------------------------------------------- scenarios


def many(workdir: Path) -> dict:
    """3 replicas of 4 sessions: 12 real-time sessions over 3 avatars, one replica SIGKILLed
    mid-run; then the unchanged CLI client, an offline render and a session drained by the
    application's removal."""
    from ditto_fast.serving.cluster.app import ClusterConfig, remove

    config = ClusterConfig(replicas=3, max_sessions=4, threads=1)
    sources, audio = portraits(workdir), speech(workdir, SPEECH_S)
    found: dict = {}
    with cluster(config) as port:
        outcome: dict = {}
        runner = threading.Thread(target=lambda: outcome.update(
            sessions=run_sessions(port, sources, audio, 4, workdir / "many")))
        runner.start()
        # Once most sessions run, the replica holding the most of them dies.
        busy = wait_for(lambda: (lambda r: r if sum(f["sessions_open"] for f in r.values()) >= 8 else None)(
            reports(config)), timeout=60)
        victim = max(busy.values(), key=lambda figures: figures["sessions_open"])
        os.kill(victim["pid"], signal.SIGKILL)
        found["killed"] = {"replica": victim["replica"], "sessions_open": victim["sessions_open"]}
        found["registrations_before_kill"] = {r: f["registrations"] for r, f in busy.items()}
        runner.join(180)
        found["sessions"] = outcome.get("sessions")
        # The cluster replaces the replica; the CLI client, unchanged, then gets its session.
        found["replicas_after"] = wait_for(lambda: (lambda r: len(r) if len(r) == 3 and victim["replica"] not in r
                                                     else None)(reports(config)), timeout=90)
        client = subprocess.run([sys.executable, "-m", "ditto_fast.cli", "client", "--url", f"ws://127.0.0.1:{port}",
                                 "--source", str(sources[0]), "--audio", str(speech(workdir, 1.0)), "--sessions", "2",
                                 "--out-dir", str(workdir / "cli"), "--stats-json", str(workdir / "cli.json"),
                                 "--no-realtime"], capture_output=True, text=True, timeout=120)
        found["cli"] = {"rc": client.returncode, "out": client.stdout, "err": client.stderr[-1500:]}
        found["cli_stats"] = json.loads((workdir / "cli.json").read_text()) if (workdir / "cli.json").exists() else None
        render = httpx.post(f"http://127.0.0.1:{port}/v1/render", files={
            "image": ("p.png", sources[2].read_bytes()), "audio": ("a.wav", speech(workdir, 0.5).read_bytes())},
            data={"options": json.dumps({"sampling_timesteps": 2})}, timeout=120)
        (workdir / "render.mp4").write_bytes(render.content)
        found["render"] = {"status": render.status_code, "bytes": len(render.content)}
        found["registrations_after"] = {r: f["registrations"] for r, f in reports(config).items()}
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        found["metrics_sessions_max"] = next(float(line.split()[1]) for line in metrics.splitlines()
                                             if line.startswith("ditto_sessions_max "))
        # A session still running when the application is removed is drained, not cut.
        drained: dict = {}

        def drain() -> None:
            try:
                drained["sessions"] = run_sessions(port, sources[:1], audio, 1, workdir / "drain")
            except Exception as exc:  # reported, not lost with the thread
                drained["error"] = repr(exc)

        late = threading.Thread(target=drain)
        late.start()
        # Removal waits for the session to be streaming (on a loaded machine its upload and start
        # can take a while); a removal before it would refuse the upload instead of draining.
        wait_for(lambda: sum(f["sessions_open"] for f in reports(config).values()) >= 1, timeout=150)
        started = time.monotonic()
        remove(config)
        found["remove_s"] = time.monotonic() - started
        late.join(150)
        found["drained"] = drained.get("sessions")
        found["drain_error"] = drained.get("error")
    return found


def scaling(workdir: Path) -> dict:
    """Autoscaling 1 → 2 on ongoing sessions, and a full cluster answering busy at once."""
    from websockets.asyncio.client import connect

    from ditto_fast.serving.cluster.app import ClusterConfig

    config = ClusterConfig(autoscale=(1, 2), max_sessions=2, target_sessions=1, threads=1)
    sources, audio = portraits(workdir, sizes=(512,)), speech(workdir, 12.0)
    found: dict = {}
    with cluster(config) as port:
        found["replicas_at_start"] = len(wait_for(lambda: reports(config), timeout=30) or {})
        outcome: dict = {}
        runner = threading.Thread(target=lambda: outcome.update(
            sessions=run_sessions(port, sources, audio, 2, workdir / "load")))
        runner.start()
        started = time.monotonic()
        found["replicas_under_load"] = wait_for(lambda: (lambda n: n if n >= 2 else None)(len(reports(config))),
                                                timeout=60)
        found["scale_up_s"] = time.monotonic() - started
        # Every slot taken (2 replicas × 2 sessions: the 2 running and 2 more): the next is refused.
        holders = threading.Thread(target=lambda: outcome.update(
            extra=run_sessions(port, sources, speech(workdir, 6.0), 2, workdir / "extra")))
        holders.start()
        wait_for(lambda: sum(f["sessions_open"] for f in reports(config).values()) >= 4, timeout=60)

        async def refused():
            from ditto_fast.serving.client import upload_avatar

            avatar = await upload_avatar(f"http://127.0.0.1:{port}", sources[0])
            began = time.monotonic()
            async with connect(f"ws://127.0.0.1:{port}/v1/session", open_timeout=10) as ws:
                await ws.send(json.dumps({"type": "start", "avatar": avatar}))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
                try:
                    await asyncio.wait_for(ws.recv(), 10)
                except Exception:
                    pass
                return {"reply": reply, "code": ws.close_code, "seconds": time.monotonic() - began}

        found["busy"] = asyncio.run(refused())
        found["sessions_open_at_busy"] = sum(f["sessions_open"] for f in reports(config).values())
        runner.join(120)
        holders.join(120)
        found["sessions"] = outcome.get("sessions", []) + outcome.get("extra", [])
    return found


def cli(workdir: Path) -> dict:
    """`ditto-fast serve --ray --replicas 1` and `serve run deploy/ray-serve.yaml`, each serving
    the load generator, then stopped by a signal."""
    sources, audio = portraits(workdir, sizes=(512,)), speech(workdir, 1.0)
    found = {}
    for name, argv in {
        "ditto-fast": [sys.executable, "-m", "ditto_fast.cli", "serve", "--ray", "--replicas", "1",
                       "--max-sessions", "2", "--threads", "1", "--port", "{port}", "--log-level", "warning"],
        "serve-run": [sys.executable, "-m", "ray.serve.scripts", "run", str(REPO / "deploy" / "ray-serve.yaml")],
    }.items():
        port = free_port()
        config = REPO / "deploy" / "ray-serve.yaml"
        if name == "serve-run":  # the file's port, this run's free one
            local = workdir / "ray-serve.yaml"
            local.write_text(config.read_text().replace("port: 8000", f"port: {port}"))
            argv = argv[:-1] + [str(local)]
        log = workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen([part.format(port=port) for part in argv], stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        ready = wait_for(lambda: _healthy(port) or process.poll() is not None, timeout=120, step=0.5)
        report = None
        if ready and process.poll() is None:
            from ditto_fast.serving.client import run_clients

            report = run_clients(f"ws://127.0.0.1:{port}", sources[0], audio, 2, workdir / name, realtime=False)
        process.send_signal(signal.SIGINT)
        try:
            status = process.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            status = "killed"
        found[name] = {"ready": bool(ready), "report": report and report["aggregate"], "status": status,
                       "log": log.read_text()[-1500:]}
    return found


def capacity(workdir: Path) -> dict:
    """Aggregate frames/s of R = 1 and 2 CPU replicas (threads=1 each), 2 sessions per replica
    pushing their speech as fast as accepted, one deployment after the other in one cluster."""
    from ray import serve

    from ditto_fast.serving.cluster.app import ClusterConfig, build_application, remove

    sources, audio = portraits(workdir, sizes=(512,)), speech(workdir, SPEECH_S)
    found = {}
    with cluster(ClusterConfig(replicas=1, max_sessions=4, threads=1, name="warm-up")) as port:
        run_sessions(port, sources, audio, 1, workdir / "warm-up", realtime=False)  # first runs, allocations
        remove(ClusterConfig(name="warm-up"))
        for replicas in (1, 2):
            config = ClusterConfig(replicas=replicas, max_sessions=4, threads=1, name=f"r{replicas}")
            serve.run(build_application(config), name=config.name, route_prefix="/")
            started = time.monotonic()
            sessions = run_sessions(port, sources, audio, 2 * replicas, workdir / config.name, realtime=False)
            wall = time.monotonic() - started
            frames = sum(s["frames_sent"] or 0 for s in sessions)
            latencies = sorted(s["first_video_latency_s"] for s in sessions if s["ok"])
            found[f"replicas_{replicas}"] = {
                "sessions": len(sessions), "sessions_ok": sum(s["ok"] for s in sessions), "frames": frames,
                "wall_s": wall, "frames_per_second": frames / wall,
                "first_video_p50_s": latencies[len(latencies) // 2] if latencies else None}
            remove(config)
    return found


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    scenario, work = sys.argv[1], Path(sys.argv[2])
    print(json.dumps(globals()[scenario](work), default=str))
