"""Scenarios of test_serving_net.py, run inside a network namespace that has only loopback
(`unshare -n`): each starts a real uvicorn server over the fake engine in a subprocess, drives
it over real sockets, and prints one JSON line of findings for the test to check.

    python3 serving_net_scenarios.py SCENARIO WORKDIR
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

TESTS = Path(__file__).resolve().parent
TOKEN = "net-token"
SERVER = """
import sys
sys.path.insert(0, {tests!r})
from serving_fakes import FakeEngine
from ditto_fast.serving.app import create_app
from ditto_fast.serving.protocol import Limits
from ditto_fast.serving.server import run_app
engine = FakeEngine(max_sessions={max_sessions}, frame_size={frame_size})
run_app(create_app(engine, token={token!r}), "127.0.0.1", {port}, Limits(), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """The fake-engine server as a subprocess, ready once /healthz answers (at most 20 s)."""

    def __init__(self, workdir: Path, max_sessions: int = 4, frame_size=(64, 64), command: list[str] | None = None
                 ) -> None:
        """The fake engine's server, or `command` (formatted with the port) with the token in
        $DITTO_FAST_TOKEN."""
        self.port = free_port()
        self.log = workdir / f"server-{self.port}.log"
        code = SERVER.format(tests=str(TESTS), max_sessions=max_sessions, frame_size=tuple(frame_size),
                             token=TOKEN, port=self.port)
        argv = [part.format(port=self.port) for part in command] if command else [sys.executable, "-c", code]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "DITTO_FAST_TOKEN": TOKEN})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.http}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server not ready within 30 s")

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.http}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).text
        return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024

    def __enter__(self) -> Server:
        return self

    def stop(self) -> int:
        """SIGTERM (uvicorn's graceful shutdown), then SIGKILL after 10 s; the exit status."""
        self.process.terminate()
        try:
            return self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)

    def __exit__(self, *exc_info) -> None:
        if self.process.poll() is None:
            self.stop()


def inputs(workdir: Path, seconds: float) -> tuple[Path, Path]:
    from serving_fakes import portrait_png

    from ditto_fast.stages.audio import write_wav

    portrait = workdir / "portrait.png"
    portrait.write_bytes(portrait_png(64))
    t = np.arange(int(seconds * 16000)) / 16000
    speech = workdir / "speech.wav"
    write_wav(speech, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    return portrait, speech


def upload(server: Server, portrait: Path) -> str:
    response = httpx.post(f"{server.http}/v1/avatars", headers={"Authorization": f"Bearer {TOKEN}"},
                          files={"file": ("p.png", portrait.read_bytes())}, timeout=10)
    response.raise_for_status()
    return response.json()["id"]


# ----------------------------------------------------------------------------- scenarios


def clients(workdir: Path) -> dict:
    """K=4 real-time sessions through run_clients, then the CLI client as fast as allowed; and
    a handshake without the token."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    from ditto_fast.serving.client import run_clients

    portrait, speech = inputs(workdir, 2.0)
    with Server(workdir) as server:
        started = time.monotonic()
        report = run_clients(server.ws, portrait, speech, 4, workdir / "rt", workdir / "rt.json", token=TOKEN)
        realtime_s = time.monotonic() - started
        cli = subprocess.run([sys.executable, "-m", "ditto_fast.cli", "client", "--url", server.ws, "--source",
                              str(portrait), "--audio", str(speech), "--sessions", "2", "--out-dir",
                              str(workdir / "fast"), "--stats-json", str(workdir / "fast.json"), "--no-realtime"],
                             capture_output=True, text=True, timeout=60, env={**os.environ, "DITTO_FAST_TOKEN": TOKEN})

        async def without_token() -> int | None:
            try:
                async with connect(f"{server.ws}/v1/session", open_timeout=5):
                    return None
            except InvalidStatus as exc:
                return exc.response.status_code

        refused = asyncio.run(without_token())
        sessions_open = server.metric("ditto_sessions_open")
    return {"report": report, "realtime_s": realtime_s, "cli_rc": cli.returncode, "cli_out": cli.stdout,
            "cli_err": cli.stderr, "fast": json.loads((workdir / "fast.json").read_text()),
            "refused_status": refused, "sessions_open": sessions_open}


def disconnect(workdir: Path) -> dict:
    """A client vanishes mid-stream (TCP reset, no close frame): how soon its slot is free."""
    from websockets.asyncio.client import connect

    portrait, _ = inputs(workdir, 0.1)
    with Server(workdir) as server:
        avatar = upload(server, portrait)

        async def vanish() -> tuple[float, float]:
            async with connect(f"{server.ws}/v1/session?token={TOKEN}", open_timeout=5) as ws:
                await ws.send(json.dumps({"type": "start", "avatar": avatar, "video": "jpeg"}))
                json.loads(await asyncio.wait_for(ws.recv(), 5))
                for _ in range(5):
                    await ws.send(b"\0\0" * 640)
                await asyncio.wait_for(ws.recv(), 5)  # a frame: the stream runs
                during = server.metric("ditto_sessions_open")
                ws.transport.abort()
                return during, time.monotonic()

        during, gone_at = asyncio.run(vanish())
        deadline = gone_at + 10
        while server.metric("ditto_sessions_open") and time.monotonic() < deadline:
            time.sleep(0.02)
        return {"open_during": during, "open_after": server.metric("ditto_sessions_open"),
                "freed_after_s": time.monotonic() - gone_at, "server_alive": server.process.poll() is None}


def slow_reader(workdir: Path) -> dict:
    """An rgb client that stops reading while 10 s of 512x512 frames are made (~190 MiB unbounded):
    the server's memory stays bounded and it drops whole frames, which the stats report."""
    from websockets.asyncio.client import connect

    portrait, _ = inputs(workdir, 0.1)
    frames = 250
    with Server(workdir, frame_size=(512, 512)) as server:
        avatar = upload(server, portrait)
        baseline = server.rss_bytes()
        peak = baseline

        async def run() -> dict:
            nonlocal peak
            # A small read buffer, so the kernel's socket buffers hold little of the backlog.
            async with connect(f"{server.ws}/v1/session?token={TOKEN}", open_timeout=5, max_size=2 << 20,
                               max_queue=1, compression=None) as ws:
                await ws.send(json.dumps({"type": "start", "avatar": avatar, "video": "rgb"}))
                json.loads(await asyncio.wait_for(ws.recv(), 5))
                for _ in range(frames):
                    await ws.send(b"\0\0" * 640)
                await ws.send(json.dumps({"type": "end"}))
                for _ in range(30):  # 3 s of not reading
                    await asyncio.sleep(0.1)
                    peak = max(peak, server.rss_bytes())
                received = 0
                while True:
                    message = await asyncio.wait_for(ws.recv(), 10)
                    if isinstance(message, bytes):
                        received += 1
                        continue
                    reply = json.loads(message)
                    if reply["type"] == "stats":
                        return {"received": received, "stats": reply}

        result = asyncio.run(asyncio.wait_for(run(), 60))
        return {**result, "frames": frames, "frame_bytes": 512 * 512 * 3, "baseline_rss": baseline,
                "peak_rss": peak}


def real_engine(workdir: Path) -> dict:
    """`ditto-fast serve` with the real SessionEngine over the shipped synthetic-tiny weights, on
    0.0.0.0 with a token (the namespace has only loopback), and `ditto-fast client` against it."""
    from ditto_fast.tools.demo import write_demo_inputs

    portrait, speech = write_demo_inputs(workdir / "demo", seconds=1.0)
    serve = [sys.executable, "-m", "ditto_fast.cli", "serve", "--host", "0.0.0.0", "--port", "{port}",
             "--max-sessions", "2", "--log-level", "warning"]
    with Server(workdir, command=serve) as server:
        started = time.monotonic()
        cli = subprocess.run([sys.executable, "-m", "ditto_fast.cli", "client", "--url", server.ws, "--source",
                              str(portrait), "--audio", str(speech), "--sessions", "2", "--out-dir",
                              str(workdir / "out"), "--stats-json", str(workdir / "stats.json"), "--no-realtime"],
                             capture_output=True, text=True, timeout=120, env={**os.environ, "DITTO_FAST_TOKEN": TOKEN})
        client_s = time.monotonic() - started
        unauthorised = httpx.get(f"{server.http}/metrics", timeout=5).status_code
        sessions_open = server.metric("ditto_sessions_open")
        status = server.stop()
    stats = json.loads((workdir / "stats.json").read_text()) if (workdir / "stats.json").exists() else None
    return {"cli_rc": cli.returncode, "cli_out": cli.stdout, "cli_err": cli.stderr, "stats": stats,
            "client_s": client_s, "unauthorised": unauthorised, "sessions_open": sessions_open,
            "server_status": status}


class DevTools:
    """Just enough of the Chrome DevTools protocol: commands and JavaScript on one page."""

    def __init__(self, connection) -> None:
        self.connection, self.next_id = connection, 0

    async def call(self, method: str, **params) -> dict:
        self.next_id += 1
        await self.connection.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:  # events are skipped; every wait is bounded
            reply = json.loads(await asyncio.wait_for(self.connection.recv(), 30))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    async def js(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")


PLAYER_STATE = """(() => {
  const video = document.getElementById("video"), ranges = video.buffered;
  return {time: video.currentTime, width: video.videoWidth, error: video.error && video.error.message,
          buffered_end: ranges.length ? ranges.end(ranges.length - 1) : 0,
          log: document.getElementById("log").textContent};
})()"""


def browser(workdir: Path) -> dict:
    """The demo page in headless Chromium: a speech file, then the (fake) microphone; the fMP4
    answer played through Media Source Extensions."""
    from websockets.asyncio.client import connect

    portrait, speech = inputs(workdir, 2.0)
    devtools_port = free_port()
    with Server(workdir, frame_size=(128, 128)) as server:
        chromium = subprocess.Popen(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", f"--remote-debugging-port={devtools_port}",
             f"--user-data-dir={workdir / 'profile'}", "--autoplay-policy=no-user-gesture-required",
             "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    targets = httpx.get(f"http://127.0.0.1:{devtools_port}/json", timeout=1).json()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            page = next(target for target in targets if target["type"] == "page")

            async def run(microphone: bool) -> dict:
                async with connect(page["webSocketDebuggerUrl"], max_size=None) as connection:
                    tools = DevTools(connection)
                    await tools.call("Page.navigate", url=f"{server.http}/?token={TOKEN}")
                    for _ in range(50):
                        if await tools.js("document.readyState") == "complete":
                            break
                        await asyncio.sleep(0.1)
                    root = (await tools.call("DOM.getDocument"))["root"]["nodeId"]
                    for selector, path in (("#image", portrait), ("#audio", speech)):
                        node = await tools.call("DOM.querySelector", nodeId=root, selector=selector)
                        await tools.call("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(path)])
                    await tools.js(f"document.getElementById('mic').checked = {str(microphone).lower()}")
                    await tools.js("document.getElementById('start').click()")
                    for step in range(60):  # 15 s at most
                        await asyncio.sleep(0.25)
                        if microphone and step == 8:
                            await tools.js("document.getElementById('stop').click()")
                        state = await tools.js(PLAYER_STATE)
                        if "closed (" in state["log"]:
                            break
                    await asyncio.sleep(0.5)  # the last appends
                    return await tools.js(PLAYER_STATE)

            supported = asyncio.run(asyncio.wait_for(_type_supported(page), 30))
            return {"supported": supported, "file": asyncio.run(asyncio.wait_for(run(False), 40)),
                    "microphone": asyncio.run(asyncio.wait_for(run(True), 40))}
        finally:
            chromium.terminate()
            chromium.wait(10)


async def _type_supported(page: dict) -> bool:
    from websockets.asyncio.client import connect

    async with connect(page["webSocketDebuggerUrl"], max_size=None) as connection:
        return await DevTools(connection).js(
            "MediaSource.isTypeSupported('video/mp4; codecs=\"avc1.64001e, mp4a.40.2\"')")


SCENARIOS = {"clients": clients, "disconnect": disconnect, "slow_reader": slow_reader, "real_engine": real_engine,
             "browser": browser}

if __name__ == "__main__":
    sys.path.insert(0, str(TESTS))
    name, workdir = sys.argv[1], Path(sys.argv[2])
    print(json.dumps(SCENARIOS[name](workdir)), flush=True)
