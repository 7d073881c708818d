"""A long live soak: `ditto-fast serve` (the real session engine, synthetic-tiny) driven by the load
generator over loopback, round after round, for a wall-clock budget; it records per round the
server's resident memory and every session's figures, and judges whether memory and lateness
drift between the first and the last part of the run.

    python3 bench/soak_live.py --minutes 30 --sessions 1 --speech 10 --json bench/results/NAME.soak.json

Runs itself inside a network namespace with only loopback (`unshare -n`) unless --in-namespace.
Each round is bounded (the load generator's own deadline), the number of rounds too (--max-rounds).
On this CPU a session renders below 25 frames/s, so each real-time session ends late by a
similar amount: the check is that rounds at the end look like rounds at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARE_COMPARED = 0.2  # the first and the last fifth of the rounds are compared


def _rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024


def _drift(rounds: list[dict], key: str) -> dict:
    """Median of `key` over the first and the last SHARE_COMPARED of the rounds, and their ratio."""
    n = max(1, round(len(rounds) * SHARE_COMPARED))
    first = statistics.median(r[key] for r in rounds[:n])
    last = statistics.median(r[key] for r in rounds[-n:])
    return {"first": first, "last": last, "last_over_first": last / first if first else None}


def _slope(rounds: list[dict], key: str) -> float | None:
    """Least-squares slope of `key` per minute over the second half of the run (0: flat)."""
    half = rounds[len(rounds) // 2:]
    if len(half) < 2:
        return None
    ts = [r["t_s"] / 60 for r in half]
    values = [r[key] for r in half]
    mean_t, mean_v = statistics.fmean(ts), statistics.fmean(values)
    spread = sum((t - mean_t) ** 2 for t in ts)
    return sum((t - mean_t) * (v - mean_v) for t, v in zip(ts, values)) / spread if spread else None


def soak(minutes: float, sessions: int, speech_s: float, max_rounds: int, workdir: Path) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from serving_net_scenarios import TOKEN, Server

    from ditto_fast.serving.client import run_clients
    from ditto_fast.tools.demo import write_demo_inputs

    portrait, speech = write_demo_inputs(workdir / "demo", seconds=speech_s)
    serve = [sys.executable, "-m", "ditto_fast.cli", "serve", "--port", "{port}", "--max-sessions", str(sessions),
             "--log-level", "warning"]
    rounds: list[dict] = []
    with Server(workdir, command=serve) as server:
        started = time.monotonic()
        baseline = _rss_bytes(server.process.pid)
        while time.monotonic() - started < minutes * 60 and len(rounds) < max_rounds:
            report = run_clients(server.ws, portrait, speech, sessions, workdir / "out", token=TOKEN, realtime=True)
            ok = [s for s in report["sessions"] if s["ok"]]
            rounds.append({
                "t_s": time.monotonic() - started, "rss_mb": _rss_bytes(server.process.pid) / 2**20,
                "sessions_ok": len(ok), "sessions": len(report["sessions"]),
                "frames": sum(s["frames_sent"] for s in ok),
                "late_fraction": sum(s["late_frames"] for s in ok) / max(1, sum(s["frames_emitted"] for s in ok)),
                "max_lateness_s": max((s["max_lateness_s"] for s in ok), default=0.0),
                "first_video_s": max((s["first_video_latency_s"] for s in ok), default=0.0),
                "real_time_factor": max((s["real_time_factor"] for s in ok), default=0.0),
                "errors": [s["error"] for s in report["sessions"] if not s["ok"]],
            })
            print(json.dumps(rounds[-1]), file=sys.stderr, flush=True)
        status = server.stop()
    return {
        "minutes": minutes, "sessions_per_round": sessions, "speech_s": speech_s, "rounds": len(rounds),
        "server_exit_status": status, "rss_at_start_mb": baseline / 2**20,
        "failed_sessions": sum(r["sessions"] - r["sessions_ok"] for r in rounds),
        "drift": {key: _drift(rounds, key) for key in ("rss_mb", "max_lateness_s", "first_video_s", "real_time_factor")},
        "second_half_slope_per_minute": {key: _slope(rounds, key) for key in ("rss_mb", "max_lateness_s")},
        "per_round": rounds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--sessions", type=int, default=1, help="concurrent sessions per round")
    parser.add_argument("--speech", type=float, default=10.0, help="seconds of speech per session")
    parser.add_argument("--max-rounds", type=int, default=1000)
    parser.add_argument("--json", required=True)
    parser.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.in_namespace:
        command = " ".join([f"ip link set lo up && exec {sys.executable}", *map(str, [
            Path(__file__).resolve(), "--in-namespace", "--minutes", args.minutes, "--sessions", args.sessions,
            "--speech", args.speech, "--max-rounds", args.max_rounds, "--json", Path(args.json).resolve()])])
        return subprocess.run(["unshare", "-n", "sh", "-c", command]).returncode
    with tempfile.TemporaryDirectory(prefix="ditto_fast_soak_") as workdir:
        found = soak(args.minutes, args.sessions, args.speech, args.max_rounds, Path(workdir))
    Path(args.json).write_text(json.dumps(found, indent=1) + "\n")
    print(json.dumps({key: found[key] for key in ("rounds", "failed_sessions", "drift", "second_half_slope_per_minute")}, indent=1))
    return 0 if found["failed_sessions"] == 0 and found["server_exit_status"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
