"""`ditto-fast serve`: a Renderer, a session engine over it, the app over that, under uvicorn.

Without a token the service must not be reachable from other machines: a host that is not a
loopback address is refused before anything loads.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ditto_fast.serving.protocol import DEFAULT_LIMITS, Limits

# Import name → what to install: the service's packages are not dependencies of the library.
SERVICE_PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "websockets": "websockets",
                    "multipart": "python-multipart"}
# ... and those of `serve --ray`.
CLUSTER_PACKAGES = {"ray": "ray[serve]"}


def check_packages(packages: dict[str, str] = SERVICE_PACKAGES, extra: str = "serve") -> None:
    """ImportError naming every missing package of the service, before anything loads."""
    missing = [install for name, install in packages.items() if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"the service needs {', '.join(missing)}: pip install \"ditto-fast[{extra}]\" "
                          f"(or pip install {' '.join(missing)})")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and "localhost" (names are not resolved: a name could point anywhere)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token."""
    if not token and not is_loopback(host):
        raise ValueError(f"refusing to listen on {host} without a token: give --token (or set DITTO_FAST_TOKEN), "
                         "or listen on 127.0.0.1")


def run_app(app, host: str, port: int, limits: Limits = DEFAULT_LIMITS, log_level: str = "info") -> None:
    """Serve `app` with uvicorn until interrupted. The WebSocket frame limit is the largest
    message the protocol allows (a start carrying an image), so bigger ones never get buffered;
    no per-message deflate: video and PCM barely compress, and it would cost CPU per session."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            ws_max_size=limits.max_start_message_bytes, ws_per_message_deflate=False)
    uvicorn.Server(config).run()


def serve_renderer(renderer, host: str, port: int, *, max_sessions: int | None = None, token: str | None = None,
                   max_batch: int = 8, session_defaults: Mapping[str, Any] | None = None,
                   limits: Limits = DEFAULT_LIMITS, log_level: str = "info") -> None:
    """Open a SessionEngine of `max_sessions` slots (None: the engine's default) over a loaded
    Renderer and serve it on host:port until interrupted; the engine is closed on the way out."""
    check_exposure(host, token)
    check_packages()
    from ditto_fast.serving.app import create_app
    from ditto_fast.serving.engine import SessionEngine

    engine = SessionEngine(renderer, max_sessions=max_sessions, max_batch=max_batch)
    if max_sessions is None:  # admission from what this machine and tree sustain
        capacity = engine.measure_capacity()
        engine.max_sessions = capacity.sessions
        print(f"ditto-fast: one session renders {capacity.frames_per_second:.1f} frames/s here: admitting "
              f"{capacity.sessions} session(s) at once (--max-sessions to choose)", file=sys.stderr, flush=True)
    try:
        run_app(create_app(engine, token=token, limits=limits, session_defaults=session_defaults), host, port,
                limits, log_level)
    finally:
        engine.close()


def serve(host: str, port: int, checkpoints: str | Path | None = None, max_sessions: int | None = None,
          token: str | None = None, *, backend: str = "auto", device: str = "cpu", cfg: str | Path | None = None,
          frame_batch: int = 1, threads: int | None = None, **options: Any) -> None:
    """Load the checkpoints (None: the shipped synthetic-tiny tree) and `serve_renderer` them;
    `options` are serve_renderer's. The host is checked before anything loads."""
    check_exposure(host, token)
    check_packages()
    from ditto_fast.renderer import Renderer

    renderer = Renderer(checkpoints, backend=backend, device=device, cfg=cfg, frame_batch=frame_batch,
                        threads=threads)
    serve_renderer(renderer, host, port, max_sessions=max_sessions, token=token, **options)
