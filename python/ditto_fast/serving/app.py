"""The network service: a FastAPI app over a session engine.

    WebSocket /v1/session   live sessions (protocol.py)
    POST /v1/avatars        multipart "file" (+ optional "options", a JSON object) → {"id": ...}
    POST /v1/render         multipart "audio" + ("avatar" id | "image" file) (+ "options", "preset")
                            → the rendered mp4, streamed back
    GET  /healthz           liveness, never authenticated
    GET  /metrics           Prometheus text format 0.0.4 (metrics.py)
    GET  /                  the browser demo page (static/)

With a token, every endpoint but /healthz needs `Authorization: Bearer <token>`; the WebSocket
and the demo page (which a browser opens without headers) also take `?token=<token>`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import shutil
import tempfile
from collections.abc import Mapping
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile, WebSocket
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.background import BackgroundTask

from ditto_fast.errors import one_line
from ditto_fast.serving.avatars import AvatarStore
from ditto_fast.serving.interface import EngineLike
from ditto_fast.serving.live import LiveConnection
from ditto_fast.serving.metrics import CONTENT_TYPE, ServerCounters, render_metrics
from ditto_fast.serving.protocol import CLOSE_POLICY, DEFAULT_LIMITS, Limits

STATIC = resources.files("ditto_fast.serving") / "static"
_STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}
_STATIC_NAME = re.compile(r"[A-Za-z0-9_-]+\.(html|js|css)")
SCRIPT_TAG = '<script src="/static/app.js"></script>'  # index.html's, replaced by the script itself
MULTIPART_OVERHEAD = 1 << 20  # headers and form fields around the files of one request


def create_app(engine: EngineLike, *, token: str | None = None, limits: Limits = DEFAULT_LIMITS,
               session_defaults: Mapping[str, Any] | None = None) -> FastAPI:
    """The service over `engine` (any object with SessionEngine's interface, interface.py).

    `session_defaults`: render options every session and render starts from (a client's own
    options override them). The app does not close the engine: its owner does (server.py)."""
    avatars = AvatarStore(limits.max_stored_avatar_bytes)
    counters = ServerCounters()
    renders = asyncio.Semaphore(limits.max_concurrent_renders)
    defaults = dict(session_defaults or {})

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        avatars.close()

    app = FastAPI(title="ditto-fast", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.avatars, app.state.counters, app.state.limits = engine, avatars, counters, limits
    body_limit = limits.max_audio_upload_bytes + limits.max_image_bytes + MULTIPART_OVERHEAD
    app.add_middleware(BodyLimit, max_bytes=body_limit)

    def require_token(request: Request) -> None:
        if not _authorized(token, request.headers.get("authorization")):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    def require_token_or_query(request: Request) -> None:
        if not _authorized(token, request.headers.get("authorization"), request.query_params.get("token")):
            raise HTTPException(401, "missing or wrong token: add ?token=... to the address",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/metrics", dependencies=[Depends(require_token)])
    async def metrics() -> Response:
        figures = await asyncio.to_thread(engine.metrics)
        return PlainTextResponse(render_metrics(figures, counters, engine.max_sessions), media_type=CONTENT_TYPE)

    @app.post("/v1/avatars", dependencies=[Depends(require_token)])
    async def upload_avatar(file: Annotated[UploadFile, File()], options: Annotated[str | None, Form()] = None
                            ) -> dict:
        data = await _read_limited(file, limits.max_image_bytes)
        try:
            avatar_id = await avatars.add(engine, data, file.filename or "", _json_object(options))
        except (ValueError, OSError) as exc:
            raise HTTPException(422, one_line(exc)) from None
        return {"id": avatar_id}

    @app.post("/v1/render", dependencies=[Depends(require_token)])
    async def render(audio: Annotated[UploadFile, File()], avatar: Annotated[str | None, Form()] = None,
                     image: Annotated[UploadFile | None, File()] = None,
                     options: Annotated[str | None, Form()] = None,
                     preset: Annotated[str | None, Form()] = None) -> Response:
        if (avatar is None) == (image is None):
            raise HTTPException(422, 'give exactly one of "avatar" (an id) and "image" (a file)')
        requested = _json_object(options)
        if renders.locked():  # admission, not a queue: a render holds a slot for its whole length
            raise HTTPException(503, f"busy: {limits.max_concurrent_renders} render(s) running")
        async with renders:
            scratch = Path(tempfile.mkdtemp(prefix="ditto_fast_render_"))
            try:
                source, registration = await _render_source(avatars, avatar, image, scratch, limits)
                audio_path = scratch / ("audio" + _suffix(audio.filename))
                audio_path.write_bytes(await _read_limited(audio, limits.max_audio_upload_bytes))
                out = scratch / "render.mp4"
                # The Renderer registers the source again, with the options it was uploaded with.
                await asyncio.to_thread(engine.renderer.render_to_file, source, audio_path, out, preset=preset,
                                        **{**registration, **defaults, **requested})
            except BaseException as exc:
                shutil.rmtree(scratch, ignore_errors=True)
                if isinstance(exc, (ValueError, OSError)):  # no face, undecodable audio, bad option
                    raise HTTPException(422, one_line(exc)) from None
                raise
        # The file is streamed from disk, then its folder removed.
        return FileResponse(out, media_type="video/mp4", filename="render.mp4",
                            background=BackgroundTask(shutil.rmtree, scratch, True))

    @app.get("/", dependencies=[Depends(require_token_or_query)])
    async def index() -> Response:
        return _page()

    @app.get("/static/{name}", dependencies=[Depends(require_token_or_query)])
    async def static(name: str) -> Response:
        return _static(name)

    @app.websocket("/v1/session")
    async def session(ws: WebSocket) -> None:
        if not _authorized(token, ws.headers.get("authorization"), ws.query_params.get("token")):
            await ws.close(code=CLOSE_POLICY, reason="missing or wrong bearer token")
            return
        await ws.accept()
        await LiveConnection(ws, engine, avatars, limits, counters, defaults).run()

    return app


def _authorized(token: str | None, header: str | None, query: str | None = None) -> bool:
    """Whether a request carries the token (always, when there is none). Constant-time compare."""
    if token is None:
        return True
    given = header[7:] if header is not None and header[:7].lower() == "bearer " else query
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _json_object(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise HTTPException(422, '"options" must be a JSON object') from None
    if not isinstance(value, dict):
        raise HTTPException(422, '"options" must be a JSON object')
    return value


def _suffix(filename: str | None) -> str:
    suffix = Path(filename or "").suffix
    return suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,5}", suffix) else ""


async def _read_limited(file: UploadFile, limit: int) -> bytes:
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"{file.filename or 'the file'} is over the limit of {limit} bytes")
    if not data:
        raise HTTPException(422, f"{file.filename or 'the file'} is empty")
    return data


async def _render_source(avatars: AvatarStore, avatar: str | None, image: UploadFile | None, scratch: Path,
                         limits: Limits) -> tuple[Path, dict[str, Any]]:
    """The file the Renderer registers and its registration options: an upload kept under its
    avatar id, or this request's image."""
    if avatar is not None:
        kept = avatars.get(avatar)
        if kept is None:
            raise HTTPException(404, f"unknown avatar {avatar!r}: upload it with POST /v1/avatars first")
        return kept.path, kept.options
    path = scratch / ("source" + _suffix(image.filename))
    path.write_bytes(await _read_limited(image, limits.max_image_bytes))
    return path, {}


def _page() -> Response:
    """index.html with its script inline: a browser fetches a <script src> without the page's
    ?token=, so with a token set the script would be refused."""
    page = (STATIC / "index.html").read_text()
    script = (STATIC / "app.js").read_text()
    return Response(page.replace(SCRIPT_TAG, f"<script>\n{script}</script>"), media_type=_STATIC_TYPES[".html"])


def _static(name: str) -> Response:
    file = STATIC / name
    if not _STATIC_NAME.fullmatch(name) or not file.is_file():
        raise HTTPException(404, "not found")
    return Response(file.read_bytes(), media_type=_STATIC_TYPES[Path(name).suffix])


class BodyLimit:
    """ASGI middleware: HTTP request bodies over `max_bytes` get 413 before the app parses them
    (multipart uploads would otherwise be spooled to disk in full first)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        received = 0
        started = overflowed = False

        async def counted_receive():
            nonlocal received, overflowed
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                overflowed = True
                raise _BodyTooLarge  # reading stops here
            return message

        async def guarded_send(message):
            nonlocal started
            if overflowed:
                # The app's parser may turn the error into a response of its own (FastAPI: 400);
                # the client is told what happened instead.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._too_large(scope, receive, send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _BodyTooLarge:
            if not started:
                await self._too_large(scope, receive, send)

    async def _too_large(self, scope, receive, send) -> None:
        response = JSONResponse({"detail": f"request body over the limit of {self.max_bytes} bytes"}, 413)
        await response(scope, receive, send)


class _BodyTooLarge(Exception):
    pass
