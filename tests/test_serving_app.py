"""The network service in-process (FastAPI's TestClient, no sockets) over a fake session engine:
the protocol's messages and checks, authentication, admission, errors that end one session
only, the video formats, HTTP endpoints, metrics, and the slow-client bound."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import threading
import time

import av
import cv2
import numpy as np
import pytest

# The service's packages are not the library's dependencies.
pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from fastapi.testclient import TestClient  # noqa: E402
from serving_fakes import FakeEngine, LiveFrame, portrait_png  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

from ditto_fast.serving import protocol  # noqa: E402
from ditto_fast.serving.app import STATIC, create_app  # noqa: E402
from ditto_fast.serving.outbox import Outbox  # noqa: E402
from ditto_fast.serving.protocol import Limits, ProtocolError  # noqa: E402
from ditto_fast.serving.pump import FramePump  # noqa: E402
from ditto_fast.serving.video import JpegFrames, make_encoder  # noqa: E402

pytestmark = pytest.mark.timeout(30)
TOKEN = "s3cret"


def speech(frames: int, rate: int = 16000) -> bytes:
    """`frames` video frames' worth of int16 PCM (a tone, so the audio is not all zeros)."""
    n = frames * rate // 25
    return (np.sin(np.arange(n) * 0.05) * 8000).astype("<i2").tobytes()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(max_sessions=2)


@pytest.fixture
def client(engine):
    with TestClient(create_app(engine)) as test_client:
        yield test_client


@pytest.fixture
def avatar(client) -> str:
    response = client.post("/v1/avatars", files={"file": ("face.png", portrait_png(), "image/png")})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def until_closed(ws) -> tuple[list, int]:
    """Every message up to the server's close, and the close code (bounded by the close)."""
    messages = []
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            return messages, message.get("code", 1000)
        messages.append(json.loads(message["text"]) if message.get("text") is not None else message["bytes"])


def expect_error(ws, fragment: str, code: int = protocol.CLOSE_POLICY) -> str:
    messages, closed_with = until_closed(ws)
    errors = [m for m in messages if isinstance(m, dict) and m.get("type") == "error"]
    assert errors and fragment in errors[-1]["message"], messages
    assert closed_with == code
    return errors[-1]["message"]


def start(ws, avatar: str, **fields) -> dict:
    ws.send_json({"type": "start", "avatar": avatar, **fields})
    started = ws.receive_json()
    assert started["type"] == "started", started
    return started


def full_session(client, avatar, frames=10, **fields) -> tuple[dict, list, dict]:
    with client.websocket_connect("/v1/session") as ws:
        started = start(ws, avatar, **fields)
        pcm = speech(frames)
        for at in range(0, len(pcm), 1280):  # 40 ms pieces, as a live client sends them
            ws.send_bytes(pcm[at:at + 1280])
        ws.send_json({"type": "end"})
        messages, code = until_closed(ws)
    assert code == protocol.CLOSE_NORMAL, messages[-1:]
    assert messages[-1]["type"] == "stats"
    return started, messages[:-1], messages[-1]


# ----------------------------------------------------------------------------- protocol


def test_protocol_messages_round_trip():
    limits = Limits()
    image = portrait_png()
    start = protocol.parse_text(json.dumps({
        "type": "start", "image": base64.b64encode(image).decode(), "options": {"emo": 3},
        "chunksize": [2, 4, 1], "video": "jpeg", "sample_rate": 48000, "jpeg_quality": 60}), limits)
    assert start == protocol.Start(image=image, options={"emo": 3}, chunksize=(2, 4, 1), video="jpeg",
                                   sample_rate=48000, jpeg_quality=60)
    assert protocol.parse_text('{"type": "start", "avatar": "abc"}', limits) == protocol.Start(avatar="abc")
    assert protocol.parse_text('{"type": "interrupt"}', limits) == protocol.Interrupt()
    assert protocol.parse_text('{"type": "end"}', limits) == protocol.End()
    assert protocol.parse_text('{"type": "controls", "emo": 2}', limits) == protocol.Controls({"emo": 2})
    assert protocol.parse_audio(b"\x01\x00\xff\xff", limits).tolist() == [1, -1]

    started = json.loads(protocol.started_message("s1", "abc", 48, 64, start, limits))
    assert started == {"type": "started", "session": "s1", "avatar": "abc", "width": 48, "height": 64, "fps": 25,
                       "video": "jpeg", "sample_rate": 48000, "audio_rate": 16000,
                       "max_pending_audio_s": limits.max_pending_audio_s}
    stats = json.loads(protocol.stats_message({"frames_emitted": np.int64(3), "chunksize": (3, 5, 2)}))
    assert stats == {"type": "stats", "frames_emitted": 3, "chunksize": [3, 5, 2]}


@pytest.mark.parametrize(("text", "fragment"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be JSON objects"),
    ('{"type": "dance"}', "unknown message type 'dance'"),
    ('{"type": "start"}', "exactly one of"),
    ('{"type": "start", "avatar": "a", "image": "AAAA"}', "exactly one of"),
    ('{"type": "start", "avatar": "a", "colour": 1}', "unknown field 'colour'"),
    ('{"type": "start", "image": "not base64!"}', "not valid base64"),
    ('{"type": "start", "avatar": "a", "video": "gif"}', '"video" must be one of'),
    ('{"type": "start", "avatar": "a", "sample_rate": 7999}', "sample_rate must be an integer 8000..48000"),
    ('{"type": "start", "avatar": "a", "sample_rate": 48001}', "sample_rate must be an integer 8000..48000"),
    ('{"type": "start", "avatar": "a", "sample_rate": true}', "sample_rate must be an integer"),
    ('{"type": "start", "avatar": "a", "chunksize": [3, 5]}', "three non-negative integers"),
    ('{"type": "start", "avatar": "a", "options": [1]}', "'options' must be an object"),
    ('{"type": "start", "avatar": "a", "fragment_frames": 0}', "'fragment_frames' must be an integer 1..50"),
    ('{"type": "end", "now": true}', "end takes no fields"),
    ('{"type": "controls"}', "names no control"),
])
def test_protocol_refuses(text, fragment):
    with pytest.raises(ProtocolError, match=re.escape(fragment)):
        protocol.parse_text(text, Limits())


def test_protocol_size_limits():
    limits = Limits(max_message_bytes=100, max_image_bytes=30)
    with pytest.raises(protocol.MessageTooBig):
        protocol.parse_text(json.dumps({"type": "controls", "emo": "x" * 100}), limits)
    with pytest.raises(protocol.MessageTooBig):
        protocol.parse_audio(b"\0" * 102, limits)
    with pytest.raises(ProtocolError, match="even, non-zero"):
        protocol.parse_audio(b"\0" * 3, limits)
    with pytest.raises(protocol.MessageTooBig, match="image is over the limit of 30"):
        protocol.parse_text(json.dumps({"type": "start", "image": base64.b64encode(b"x" * 31).decode()}), limits)
    # A start message may carry the largest image; other messages are bounded tighter.
    assert limits.max_start_message_bytes > 4 * 30 // 3
    with pytest.raises(ValueError, match="Limits.max_message_bytes must be a positive number"):
        Limits(max_message_bytes=0)


def test_audio_budget_bounds_audio_ahead_of_real_time():
    now = [100.0]
    budget = protocol.AudioBudget(Limits(max_pending_audio_s=2.0), clock=lambda: now[0])
    budget.add(16000, 16000)  # 1 s at once: 1 s ahead
    now[0] += 0.5
    budget.add(8000, 16000)  # 1.5 s pushed after 0.5 s: 1 s ahead
    with pytest.raises(ProtocolError, match="ahead of real time"):
        budget.add(24000, 16000)  # would be 2.5 s ahead
    now[0] += 10
    budget.add(16000 * 5, 16000)  # paced pushes never trip it
    budget.reset()  # an interrupt drops the queued speech
    budget.add(32000, 16000)


def test_frame_header_round_trip():
    audio = np.arange(-5, 5, dtype=np.int16)
    data = protocol.pack_frame("rgb", 7, 0.28, audio, b"\x01\x02\x03")
    frame = protocol.unpack_frame(data)
    assert (frame.video, frame.index, frame.pts, frame.image) == ("rgb", 7, 0.28, b"\x01\x02\x03")
    assert frame.audio.tolist() == audio.tolist()
    assert data[:4] == b"DFR1" and len(data) == protocol.FRAME_HEADER.size + 2 * audio.size + 3
    with pytest.raises(ValueError, match="magic"):
        protocol.unpack_frame(b"XXXX" + data[4:])
    with pytest.raises(ValueError, match="too short"):
        protocol.unpack_frame(data[:protocol.FRAME_HEADER.size + 4])


# ----------------------------------------------------------------------------- sessions


@pytest.mark.parametrize("video", ["jpeg", "rgb"])
def test_jpeg_and_rgb_frames(client, engine, avatar, video):
    started, frames, stats = full_session(client, avatar, frames=10, video=video)
    height, width = engine.frame_size
    assert (started["height"], started["width"]) == (height, width)
    parsed = [protocol.unpack_frame(data) for data in frames]
    assert [f.index for f in parsed] == list(range(10))
    assert [f.pts for f in parsed] == [i / 25 for i in range(10)]
    sent = np.frombuffer(speech(10), "<i2")
    for frame in parsed:
        assert frame.video == video
        # The frame's audio is its 40 ms slice of what was pushed (float32 → int16 and back).
        np.testing.assert_allclose(frame.audio, sent[frame.index * 640:(frame.index + 1) * 640], atol=2)
        if video == "rgb":
            rgb = np.frombuffer(frame.image, np.uint8).reshape(height, width, 3)
        else:
            rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(frame.image, np.uint8), cv2.IMREAD_COLOR),
                               cv2.COLOR_BGR2RGB)
        expected = (frame.index * 7 % 256, 128, 255 - frame.index * 3 % 256)
        np.testing.assert_allclose(rgb.reshape(-1, 3).mean(0), expected, atol=3)
    assert stats["frames_emitted"] == 10 and stats["frames_sent"] == 10
    assert stats["slow_client_dropped_frames"] == 0
    assert not engine.sessions  # closed after the end


def test_fmp4_stream_is_a_playable_mp4(client, engine, avatar):
    engine.frame_size = (64, 49)  # odd width: H.264 gets the even part
    started, messages, stats = full_session(client, avatar, frames=30, fragment_frames=10)
    assert (started["width"], started["height"]) == (48, 64)
    init, *fragments = messages
    assert init["type"] == "init" and init["mime_type"].startswith('video/mp4; codecs="avc1.')
    assert all(isinstance(m, bytes) for m in fragments) and fragments[0][4:8] == b"ftyp"
    with av.open(io.BytesIO(b"".join(fragments))) as container:
        assert {s.type for s in container.streams} == {"video", "audio"}
        decoded = list(container.decode(video=0))
    assert len(decoded) == 30 == stats["frames_sent"]
    assert (decoded[0].width, decoded[0].height) == (48, 64)


def test_image_in_start_registers_the_avatar(client, engine):
    with client.websocket_connect("/v1/session") as ws:
        ws.send_json({"type": "start", "image": base64.b64encode(portrait_png(40)).decode(), "video": "rgb"})
        started = ws.receive_json()
    assert started["type"] == "started" and engine.has_avatar(started["avatar"])


def test_controls_interrupt_and_sample_rate_reach_the_session(client, engine, avatar):
    with client.websocket_connect("/v1/session") as ws:
        start(ws, avatar, video="rgb", sample_rate=8000, options={"emo": 2})
        ws.send_json({"type": "controls", "emo": 5, "delta_pitch": 2.0})
        ws.send_bytes(speech(5, rate=8000)[:-100])
        ws.send_json({"type": "interrupt"})
        ws.send_json({"type": "end"})
        messages, code = until_closed(ws)
    session = engine.opened[-1]
    assert code == 1000 and session.controls == {"emo": 5, "delta_pitch": 2.0} and session.interrupts == 1
    assert messages[-1]["audio_seconds"] == pytest.approx(0.2 - 50 / 8000, abs=1e-3)
    assert len(messages) - 1 == 4  # 4 whole frames; the rest was interrupted


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("send", "fragment", "code"), [
    (lambda ws: ws.send_text("{oops"), "not valid JSON", 1008),
    (lambda ws: ws.send_json({"type": "wave"}), "unknown message type 'wave'", 1008),
    (lambda ws: ws.send_json({"type": "start", "avatar": "nobody"}), "unknown avatar 'nobody'", 1008),
    (lambda ws: ws.send_json({"type": "start", "avatar": "x", "sample_rate": 96000}), "sample_rate", 1008),
    (lambda ws: ws.send_json({"type": "end"}), "the first message must be", 1008),
    (lambda ws: ws.send_bytes(b"\0" * 4096), "over the limit of 2048", 1009),
    (lambda ws: ws.send_text(json.dumps({"type": "controls", "emo": "x" * 3000})), "over the limit", 1009),
    (lambda ws: ws.send_json({"type": "start", "image": base64.b64encode(b"not an image").decode()}),
     "no face found", 1008),
])
def test_a_bad_first_message_ends_that_session_only(engine, send, fragment, code):
    with TestClient(create_app(engine, limits=Limits(max_message_bytes=2048))) as client:
        avatar = client.post("/v1/avatars", files={"file": ("a.png", portrait_png())}).json()["id"]
        with client.websocket_connect("/v1/session") as ws:
            send(ws)
            expect_error(ws, fragment, code)
        # The server goes on: a good session right after works.
        _, frames, stats = full_session(client, avatar, frames=3, video="rgb")
        assert len(frames) == 3


@pytest.mark.parametrize(("send", "fragment", "code"), [
    (lambda ws: ws.send_text("]"), "not valid JSON", 1008),
    (lambda ws: ws.send_json({"type": "start", "avatar": "x"}), "start may be sent only once", 1008),
    (lambda ws: ws.send_json({"type": "controls", "volume": 11}), "unknown control 'volume'", 1008),
    (lambda ws: ws.send_bytes(b"\0\0\0"), "even, non-zero", 1008),
    (lambda ws: ws.send_bytes(b"\0" * 4096), "over the limit of 2048", 1009),
    (lambda ws: [ws.send_json({"type": "end"}), ws.send_json({"type": "end"})], "no message may follow end", 1008),
])
def test_a_bad_message_mid_session_ends_it_while_others_go_on(engine, send, fragment, code):
    with TestClient(create_app(engine, limits=Limits(max_message_bytes=2048))) as client:
        avatar = client.post("/v1/avatars", files={"file": ("a.png", portrait_png())}).json()["id"]
        with client.websocket_connect("/v1/session") as other:
            start(other, avatar, video="rgb")
            with client.websocket_connect("/v1/session") as ws:
                start(ws, avatar, video="rgb")
                ws.send_bytes(speech(1))
                send(ws)
                expect_error(ws, fragment, code)
            other.send_bytes(speech(2)[:1000])
            other.send_bytes(speech(2)[1000:])
            other.send_json({"type": "end"})
            messages, closed_with = until_closed(other)
        assert closed_with == 1000 and len(messages) == 3 and messages[-1]["frames_sent"] == 2


def test_audio_too_far_ahead_of_real_time_is_an_error(engine):
    with TestClient(create_app(engine, limits=Limits(max_pending_audio_s=1.0))) as client:
        avatar = client.post("/v1/avatars", files={"file": ("a.png", portrait_png())}).json()["id"]
        with client.websocket_connect("/v1/session") as ws:
            start(ws, avatar, video="rgb")
            ws.send_bytes(speech(20))  # 0.8 s: within the budget
            ws.send_bytes(speech(50))  # 2.8 s after a few milliseconds: over it
            expect_error(ws, "ahead of real time")


def test_admission_refuses_past_max_sessions_with_busy(client, engine, avatar):
    with client.websocket_connect("/v1/session") as first, client.websocket_connect("/v1/session") as second:
        start(first, avatar, video="rgb")
        start(second, avatar, video="rgb")
        with client.websocket_connect("/v1/session") as third:
            third.send_json({"type": "start", "avatar": avatar})
            message = expect_error(third, "busy", code=protocol.CLOSE_BUSY)
        assert message.startswith("busy: 2 of 2 sessions open")
    # The slots are free once those sessions went.
    deadline = time.monotonic() + 5
    while engine.sessions and time.monotonic() < deadline:
        time.sleep(0.01)
    full_session(client, avatar, frames=1, video="rgb")
    assert client.app.state.counters.sessions_refused_total == 1


def test_client_disconnect_mid_stream_closes_the_session(client, engine, avatar):
    with client.websocket_connect("/v1/session") as ws:
        start(ws, avatar, video="jpeg")
        ws.send_bytes(speech(5))
        assert protocol.unpack_frame(ws.receive_bytes()).index == 0
    deadline = time.monotonic() + 5
    while engine.sessions and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not engine.sessions and engine.opened[-1]._closed


def test_unknown_option_and_bad_chunksize_are_the_engines_to_refuse(client, avatar):
    with client.websocket_connect("/v1/session") as ws:
        ws.send_json({"type": "start", "avatar": avatar, "options": {"colour": "red"}})
        expect_error(ws, "unknown option 'colour'")


# ----------------------------------------------------------------------------- authentication


def test_token_guards_every_endpoint_but_healthz(engine):
    with TestClient(create_app(engine, token=TOKEN)) as client:
        assert client.get("/healthz").status_code == 200
        for method, path in (("get", "/metrics"), ("get", "/"), ("post", "/v1/avatars"), ("post", "/v1/render"),
                             ("get", "/static/app.js")):
            response = getattr(client, method)(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert client.get("/metrics", params={"token": TOKEN}).status_code == 401  # headers only, but the page
        assert client.get("/", params={"token": TOKEN}).status_code == 200

        for kwargs in ({}, {"headers": {"Authorization": "Bearer nope"}}, {"params": {"token": "nope"}}):
            with pytest.raises(WebSocketDisconnect) as refused:
                with client.websocket_connect("/v1/session", **kwargs):
                    pass
            assert refused.value.code == 1008
        upload = client.post("/v1/avatars", files={"file": ("a.png", portrait_png())},
                             headers={"Authorization": f"Bearer {TOKEN}"})
        avatar = upload.json()["id"]
        for kwargs in ({"headers": {"Authorization": f"Bearer {TOKEN}"}}, {"params": {"token": TOKEN}}):
            with client.websocket_connect("/v1/session", **kwargs) as ws:
                start(ws, avatar, video="rgb")


# ----------------------------------------------------------------------------- HTTP


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{le="([^"]+)"\})? (\S+)$')


def test_metrics_are_prometheus_text_format(client, engine, avatar):
    full_session(client, avatar, frames=4, video="rgb")
    full_session(client, avatar, frames=2, video="rgb")
    response = client.get("/metrics")
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response.text.endswith("\n")
    types, helps, samples = {}, set(), {}
    for line in response.text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in helps
            helps.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("gauge", "counter", "histogram") and name not in types
            types[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match, line
            name, _, le, value = match.groups()
            family = re.sub(r"_(bucket|sum|count)$", "", name) if le or name.endswith(("_sum", "_count")) else name
            assert family in types, f"{name} before its TYPE line"
            samples[(name, le)] = float(value)
    assert types["ditto_first_frame_latency_seconds"] == "histogram"
    assert types["ditto_frames_rendered_total"] == "counter" and types["ditto_sessions_open"] == "gauge"
    for name in ("ditto_late_frames_total", "ditto_dropped_frames_total", "ditto_queued_windows",
                 "ditto_frames_per_second"):
        assert name in types
    assert samples[("ditto_frames_rendered_total", None)] == 6
    assert samples[("ditto_sessions_open", None)] == 0
    assert samples[("ditto_sessions_started_total", None)] == 2
    buckets = [(float(le), count) for (name, le), count in samples.items()
               if name == "ditto_first_frame_latency_seconds_bucket" and le != "+Inf"]
    assert buckets == sorted(buckets) and [c for _, c in buckets] == sorted(c for _, c in buckets)
    assert samples[("ditto_first_frame_latency_seconds_bucket", "+Inf")] == 2
    assert samples[("ditto_first_frame_latency_seconds_count", None)] == 2


def test_avatar_upload(client, engine):
    response = client.post("/v1/avatars", files={"file": ("face.png", portrait_png())},
                           data={"options": json.dumps({"crop_scale": 2.0})})
    assert response.status_code == 200 and engine.has_avatar(response.json()["id"])
    again = client.post("/v1/avatars", files={"file": ("same.jpg", portrait_png())})
    assert again.json() == response.json()  # the id is the content's
    bad = client.post("/v1/avatars", files={"file": ("face.png", b"not an image")})
    assert bad.status_code == 422 and "no face found" in bad.json()["detail"]
    bad_options = client.post("/v1/avatars", files={"file": ("face.png", portrait_png())}, data={"options": "[1]"})
    assert bad_options.status_code == 422
    assert client.post("/v1/avatars").status_code == 422  # no file


def test_uploads_are_bounded(engine):
    limits = Limits(max_image_bytes=1000, max_audio_upload_bytes=1000)
    with TestClient(create_app(engine, limits=limits)) as client:
        response = client.post("/v1/avatars", files={"file": ("face.png", b"\0" * 1001)})
        assert response.status_code == 413
        # A body far past every file limit is refused before it is parsed.
        huge = client.post("/v1/avatars", files={"file": ("face.png", b"\0" * (3 << 20))})
        assert huge.status_code == 413 and "request body over the limit" in huge.json()["detail"]

        def chunked():  # no Content-Length: counted as it streams in
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
            for _ in range(40):
                yield b"\0" * 100_000
            yield b"\r\n--b--\r\n"

        streamed = client.post("/v1/avatars", content=chunked(),
                               headers={"content-type": "multipart/form-data; boundary=b"})
        assert streamed.status_code == 413 and "request body over the limit" in streamed.json()["detail"]


def test_render_streams_the_mp4_and_removes_it(client, engine, avatar):
    wav = speech(25)
    response = client.post("/v1/render", data={"avatar": avatar, "options": '{"emo": 3}', "preset": "fast"},
                           files={"audio": ("speech.wav", wav)})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4" and response.content == b"fake-mp4:" + wav[:16]
    source, audio, preset, options = engine.renderer.calls[-1]
    assert preset == "fast" and options == {"emo": 3}
    assert not audio.parent.exists()  # the render's folder went with the response
    assert source.parent == client.app.state.avatars.root  # the upload kept under its id

    # An avatar uploaded with registration options is registered with them again.
    cropped = client.post("/v1/avatars", files={"file": ("c.png", portrait_png(40))},
                          data={"options": '{"crop_scale": 2.5}'}).json()["id"]
    assert client.post("/v1/render", data={"avatar": cropped, "options": '{"emo": 1}'},
                       files={"audio": ("a.wav", wav)}).status_code == 200
    assert engine.renderer.calls[-1][3] == {"crop_scale": 2.5, "emo": 1}

    with_image = client.post("/v1/render", files={"audio": ("a.wav", wav), "image": ("f.png", portrait_png())})
    assert with_image.status_code == 200
    assert client.post("/v1/render", files={"audio": ("a.wav", wav)}).status_code == 422
    assert client.post("/v1/render", data={"avatar": "nope"}, files={"audio": ("a.wav", wav)}).status_code == 404
    no_face = client.post("/v1/render", files={"audio": ("a.wav", wav), "image": ("f.png", b"junk")})
    assert no_face.status_code == 422 and "no face found" in no_face.json()["detail"]


def test_static_page_ships_in_the_package(client):
    assert (STATIC / "index.html").is_file() and (STATIC / "app.js").is_file()
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/static/app.js" not in page.text and "new MediaSource()" in page.text  # the script inline
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/static/missing.js").status_code == 404


# ----------------------------------------------------------------------------- slow clients


class _Frames:
    """A session stand-in for the pump: `count` frames as fast as they are taken."""

    id = "slow"

    def __init__(self, count: int, size=(64, 64)) -> None:
        self.count, self.size, self.taken = count, size, 0

    def frames(self, timeout=None):
        for index in range(self.count):
            self.taken += 1
            yield LiveFrame(index, index / 25, np.full((*self.size, 3), index % 256, np.uint8),
                            np.zeros(640, np.float32))


def _pump(session, encoder, limits) -> tuple[FramePump, Outbox, asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    outbox = Outbox(loop, limits.max_queued_frames, limits.max_queued_video_bytes)
    pump = FramePump(session, encoder, outbox, frame_timeout=5)
    pump.start()
    return pump, outbox, loop


def test_a_slow_jpeg_client_loses_frames_not_memory():
    limits = Limits(max_queued_video_s=0.4)  # 10 frames
    session = _Frames(200)
    pump, outbox, loop = _pump(session, JpegFrames(64, 64, 80), limits)
    pump.join(10)  # nobody reads: the pump runs through every frame without waiting
    assert not pump.is_alive() and session.taken == 200
    assert outbox.peak_frames <= limits.max_queued_frames
    assert pump.frames_encoded == 10 and pump.frames_dropped == 190
    loop.close()


def test_a_slow_fmp4_client_stops_the_pump_so_the_engine_queue_applies():
    limits = Limits(max_queued_video_s=0.8)  # 20 frames: two fragments of 10
    session = _Frames(200)
    start = protocol.Start(avatar="a", fragment_frames=10)
    pump, outbox, loop = _pump(session, make_encoder(start, 64, 64), limits)
    deadline = time.monotonic() + 10
    while pump.frames_encoded < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    taken = session.taken
    time.sleep(0.3)
    # The pump waits for room: the rest of the frames stay with the engine (bounded there). Taken
    # so far: what the outbox holds, what the encoder holds until its fragment is cut (a
    # fragment, plus a frame while the audio lags), and the one waiting for room.
    assert pump.is_alive() and session.taken == taken and pump.frames_dropped == 0
    assert taken <= limits.max_queued_frames + 10 + 2
    assert outbox.peak_frames <= limits.max_queued_frames + 10

    received = []

    async def drain():
        while (item := await outbox.get()) is not None:
            received.append(item)

    loop.run_until_complete(asyncio.wait_for(drain(), 20))  # a reader again: the stream completes
    pump.join(5)
    loop.close()
    assert session.taken == 200 and sum(frames for _, frames in received) == 200
    assert outbox.peak_frames <= limits.max_queued_frames + 10


def test_closing_the_outbox_releases_a_waiting_pump():
    limits = Limits(max_queued_video_s=0.04)
    pump, outbox, loop = _pump(_Frames(1000), make_encoder(protocol.Start(avatar="a", fragment_frames=1), 64, 64),
                               limits)
    time.sleep(0.2)
    assert pump.is_alive()
    outbox.close()
    pump.join(5)
    assert not pump.is_alive()
    loop.close()


def test_outbox_hands_messages_across_threads_in_order():
    async def main():
        outbox = Outbox(asyncio.get_running_loop(), max_frames=5, max_bytes=1 << 20)

        def produce():
            for index in range(100):
                outbox.wait_for_room(5)
                outbox.put(index.to_bytes(2, "big"), 1)
            outbox.finish()

        thread = threading.Thread(target=produce)
        thread.start()
        got = []
        while (item := await asyncio.wait_for(outbox.get(), 5)) is not None:
            got.append(int.from_bytes(item[0], "big"))
        thread.join(5)
        return got, outbox.peak_frames

    got, peak = asyncio.run(main())
    assert got == list(range(100)) and peak <= 5


# ----------------------------------------------------------------------------- the real engine


@pytest.mark.timeout(120)
def test_the_real_engine_plugs_in(tmp_path):
    """SessionEngine over the shipped synthetic-tiny weights: a live session and an offline render."""
    engine_module = pytest.importorskip("ditto_fast.serving.engine")
    from ditto_fast import Renderer
    from ditto_fast.tools.demo import write_demo_inputs

    portrait, speech_file = write_demo_inputs(tmp_path, seconds=0.6)
    engine = engine_module.SessionEngine(Renderer(), max_sessions=1)
    try:
        with TestClient(create_app(engine)) as client:
            avatar = client.post("/v1/avatars", files={"file": ("p.png", portrait.read_bytes())}).json()["id"]
            started, messages, stats = full_session(client, avatar, frames=15)
            assert (started["width"], started["height"]) == (512, 512)
            with av.open(io.BytesIO(b"".join(messages[1:]))) as container:
                assert container.streams.audio and len(list(container.decode(video=0))) == 15
            assert stats["frames_sent"] == stats["frames_emitted"] == 15
            response = client.post("/v1/render", data={"avatar": avatar},
                                   files={"audio": ("s.wav", speech_file.read_bytes())})
            assert response.status_code == 200
            with av.open(io.BytesIO(response.content)) as container:
                assert len(list(container.decode(video=0))) == 15
    finally:
        engine.close()
