"""Many live sessions in one process on one device, sharing its warp and decoder.

Each session has its own motion side (engine/live_motion.py: resampling, HuBERT windows, the
online LMDM driver) on its own thread, and its own stitch state and source (a FrameRenderer).
Scheduler workers render for all of them: each takes the frames whose motion is ready, earliest
deadline first across the sessions no other worker holds, up to `max_batch`, stitches them per
session, runs warp + decode as ONE batch (pipeline/warp_decode.py; frames of different avatars
share it), pastes each back, and hands it to its session with its slice of the session's audio.
On a device one worker runs the batches on one stream, and the batch is what makes N sessions
cost less than N engines; on the CPU (the official ONNX files take batch 1) a worker per core
overlaps one batch's stitch and paste-back with another's networks (bench/test_serving_bench.py).

Per session:
- a clock that starts when it opens: frame i is due at `open + latency + i/25`; a frame made
  after that is late (`stats.late_frames`).
- idle motion: while no speech arrives, silence is placed on its timeline (in window-sized
  steps, once the audio lags real time by `idle_after` seconds) and goes through the driver like
  speech, so the avatar keeps moving and speech that follows blends in without a jump. Frames
  from inserted silence are counted (`stats.idle_seconds`); a client that sends its audio at
  least as fast as real time gets none.
- `interrupt()` drops the queued speech, the motion not yet rendered and the frames not yet taken
  but one; idle motion follows.
- `set_controls(emo=..., delta_pitch=..., ...)`: pose and expression controls (the stitch's
  per-frame controls) apply from the next frame rendered; emotion from the next motion clip.
- back-pressure, never silent drops: each session holds at most `max_pending` frames of motion
  and `max_ready` rendered frames; a consumer that stops reading stops its own session's
  rendering (and then its `push`), not anyone else's. Frames rendered but never taken (the
  session closed first) are counted as dropped.

Admission: at most `max_sessions` open at once; one more raises `EngineBusy` at once.
`measure_capacity()` renders one session of the project's demo portrait and gives the number of
sessions the measured rate keeps at 25 fps (at least one): the default of `ditto-fast serve`.
Thread safety: every method may be called from any thread; one session's push, end and
controls from one producer thread, its frames from one consumer thread; `interrupt` from any
thread (also while a `push` waits on back-pressure: that push's audio is dropped too).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ditto_fast.engine.live_motion import LiveMotion, MotionBlock
from ditto_fast.engine.stream_stats import StreamStats
from ditto_fast.options import canonical_controls
from ditto_fast.pipeline.frames import FrameRenderer
from ditto_fast.pipeline.warp_decode import WarpDecode
from ditto_fast.runtime.heap import release_free_heap
from ditto_fast.serving.avatar_cache import DEFAULT_CACHE_BYTES, AvatarCache, avatar_id
from ditto_fast.serving.interface import EngineBusy
from ditto_fast.stages.audio import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from ditto_fast.stages.audio_windows import DEFAULT_CHUNKSIZE
from ditto_fast.stages.register import register

# Without a measurement (`measure_capacity`, which `ditto-fast serve` runs at start unless given
# --max-sessions): a bound on how far sessions slow each other down, not a capacity.
DEFAULT_MAX_SESSIONS = 4
DEFAULT_LATENCY_S = 1.0  # open → first frame due: the driver's look-ahead plus compute
DEFAULT_IDLE_AFTER_S = 0.2  # how far the audio may lag real time before silence fills it
MAX_PENDING_FRAMES = 60  # motion rows waiting to be rendered, per session
MAX_READY_FRAMES = 50  # rendered frames waiting to be taken, per session (2 s)
IDLE_BACKLOG_FRAMES = 10  # idle silence is placed only while fewer frames than this wait, per session


class Capacity(NamedTuple):
    """What `SessionEngine.measure_capacity` measured."""

    frames_per_second: float  # one session's sustained rate, frames after its first
    sessions: int  # sessions that rate keeps at 25 fps (at least 1; cross-session batching only adds)


class LiveFrame(NamedTuple):
    """One frame of a live session."""

    index: int
    pts: float  # seconds on the session's audio clock: index / 25
    rgb: np.ndarray  # (H, W, 3) uint8, the receiver's own
    audio: np.ndarray  # (640,) float32 at 16 kHz: the audio this frame shows (speech or inserted silence)


class LiveSession:
    """One live session of a `SessionEngine` (see the module docstring)."""

    def __init__(self, engine: SessionEngine, avatar: Any, options: Any, chunksize: tuple[int, int, int]) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.frame_size: tuple[int, int] = avatar.frame_size
        self._engine = engine
        self._failure: BaseException | None = None
        self.motion = LiveMotion(engine.renderer.networks, avatar, options, chunksize, keep_audio=True,
                                 check=self._raise_failure)
        self.render = FrameRenderer(engine.renderer.networks, avatar, options, options.N_d,
                                    warp_decode=engine.warp_decode)
        self.stats: StreamStats = self.motion.stats
        self.opened = time.perf_counter()
        self.next_index = 0  # the next frame to render
        self.pending: deque[list] = deque()  # [motion rows, their audio, d0] blocks, under the engine lock
        self.pending_rows = 0
        self.in_flight = 0  # rows the scheduler took and has not delivered yet
        self.busy = False  # a worker holds this session's rows (under the engine lock)
        self._dropping = False  # interrupt() until the motion side's reset: blocks of old speech are dropped
        self._ready: deque[LiveFrame] = deque()
        self._motion_done = False
        self._closed = False
        self._thread = threading.Thread(target=self._run_motion, name=f"ditto-fast-session-{self.id}", daemon=True)
        self._thread.start()

    # -- producer side ---------------------------------------------------------------------------

    def push(self, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
        """Queue speech: float32 in [-1, 1] or int16, mono, any length and rate; blocks only while
        this session's own queues are full (its consumer is not keeping up)."""
        self._raise_failure()
        self.motion.push(pcm, sample_rate)

    def end(self) -> None:
        """No more audio: `frames()` ends after the frames of what was pushed."""
        self.motion.end()

    def interrupt(self) -> None:
        """Drop queued speech, motion not yet rendered and frames not yet taken but the next one."""
        with self._engine.lock:
            # Until the motion side's reset comes through, _hand_on drops what it hands on.
            self._dropping = True
            self.pending.clear()
            self.pending_rows = 0
            while len(self._ready) > 1:
                self._ready.pop()
                self.stats.dropped_frames += 1
            kept = self.next_index
            self._engine.lock.notify_all()
        self.motion.interrupt(frames_kept=kept)  # idle silence follows from the last frame kept

    def set_controls(self, **controls: Any) -> None:
        """`emo` (a RenderOptions.emo value) for the next motion clip; the stitch's frame controls
        (delta_pitch/yaw/roll, alpha_*, delta_exp, vad_alpha, fade_alpha) and the eyes' blink gaps
        (`delta_eye_open_n`: -1 never, N frames, 0 random; needs a blink table) from the next frame."""
        emo = controls.pop("emo", None)
        gaps = controls.pop("delta_eye_open_n", None)
        if gaps is not None:  # checked by the options' rule before any change
            gaps = self.motion.options.replace(delta_eye_open_n=gaps).delta_eye_open_n
        frame_controls = canonical_controls("controls", controls) if controls else None
        if emo is not None:
            self.motion.set_emotion(emo)
        if gaps is not None:  # an attribute swap, as the controls: the next stitch reads it whole
            self.render.stitch.set_blink_gaps(gaps)
        if frame_controls is not None:
            # One attribute swap: the scheduler's next stitch reads the new controls whole.
            merged = {**self.render.stitch.options.overall_ctrl, **frame_controls}
            self.render.stitch.set_overall_controls(merged)

    # -- consumer side ---------------------------------------------------------------------------

    def frames(self, timeout: float | None = None) -> Iterator[LiveFrame]:
        """Frames in index order as they are made, until the session ended and drained (or closed).
        `timeout`: seconds to wait for one frame (TimeoutError past it)."""
        lock = self._engine.lock
        while True:
            with lock:
                deadline = None if timeout is None else time.monotonic() + timeout
                while not self._ready and not self._finished():
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(f"session {self.id}: no frame within {timeout} s")
                    lock.wait(left)
                if not self._ready:
                    if self._failure is not None:
                        raise self._failure
                    return  # ended and drained, or closed
                frame = self._ready.popleft()
                self.stats.frames_taken += 1
                lock.notify_all()  # room for the scheduler
            yield frame

    def stats_dict(self) -> dict:
        """The session's figures (StreamStats.as_dict, plus its id and idle frames)."""
        return {"session": self.id, **self.stats.as_dict(), "idle_frames": round(self.stats.idle_seconds * FPS)}

    def close(self) -> None:
        """Stop the session and free its slot; idempotent."""
        with self._engine.lock:
            if self._closed:
                return
            self._closed = True
            self.stats.dropped_frames += len(self._ready)
            self._ready.clear()
            self.pending.clear()
            self._engine.lock.notify_all()
        self.motion.stop()
        self._engine.forget(self)

    # -- what the engine's threads call ----------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def stopped(self) -> bool:
        """Closed, or failed: the scheduler renders nothing more for it."""
        return self._closed or self._failure is not None

    def _finished(self) -> bool:
        return self.stopped or (self._motion_done and not self.pending and not self.in_flight)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise RuntimeError(f"session {self.id} is closed")

    def fail(self, exc: BaseException) -> None:
        """Stop this session with `exc` (raised to its producer and consumer); others go on."""
        with self._engine.lock:
            if self._failure is None:
                self._failure = exc
            self.pending.clear()
            self._engine.lock.notify_all()
        self.motion.stop()

    def _run_motion(self) -> None:
        try:
            self.motion.run(self._hand_on)
        except BaseException as exc:  # noqa: BLE001 - the session fails, the engine goes on
            if not self._closed:
                self.fail(exc)
        finally:
            with self._engine.lock:
                self._motion_done = True
                self._engine.lock.notify_all()

    def _hand_on(self, block: MotionBlock) -> None:
        lock = self._engine.lock
        with lock:
            while self.pending_rows >= MAX_PENDING_FRAMES and not self.stopped:
                lock.wait(0.1)
            if self.stopped:
                raise RuntimeError("session stopped")
            if block.reset:
                self.pending.clear()
                self.pending_rows = 0
                self._dropping = False
            elif len(block.motion) and not self._dropping:
                # d0 is known from the first clip on, which emits no rows: every block with rows has it.
                self.pending.append([block.motion, block.audio, block.d0])
                self.pending_rows += len(block.motion)
            lock.notify_all()

    def due(self, index: int) -> float:
        return self.opened + self._engine.latency + index / FPS

    def room(self) -> int:
        """How many more rendered frames this session may hold."""
        return MAX_READY_FRAMES - len(self._ready)

    def take_rows(self, count: int) -> tuple[int, np.ndarray, np.ndarray]:
        """The first frame index, and the next `count` motion rows (1 ≤ count ≤ pending_rows) and
        their audio (under the engine lock)."""
        first = self.next_index
        rows, audio = [], []
        while count and self.pending:
            block = self.pending[0]
            motion, samples, d0 = block
            if d0 is not None:
                self.render.stitch.set_d0(d0)
                block[2] = None
            used = min(count, len(motion))
            rows.append(motion[:used])
            audio.append(samples[:used * SAMPLES_PER_FRAME])
            block[0], block[1] = motion[used:], samples[used * SAMPLES_PER_FRAME:]
            if not len(block[0]):
                self.pending.popleft()
            count -= used
        taken = np.concatenate(rows)
        self.pending_rows -= len(taken)
        self.in_flight += len(taken)
        self.next_index += len(taken)
        return first, taken, np.concatenate(audio)

    def deliver(self, frame: LiveFrame) -> None:
        """A rendered frame (under the engine lock); its session's clock starts at its open."""
        self.in_flight -= 1
        if self._closed:
            return
        self.stats.count_frame(frame.index, self.opened)
        self._ready.append(frame)

    def fill_idle(self, now: float) -> None:
        """Silence onto the timeline while the audio lags real time (see the module docstring):
        one window's worth per call, and only into an empty queue, so it never blocks."""
        motion = self.motion
        if self._closed or motion.ended or motion.queued_windows:
            return
        if self.pending_rows + self.in_flight + len(self._ready) >= IDLE_BACKLOG_FRAMES:
            return  # a machine slower than real time: more silence would only delay the next speech
        if (now - self.opened - self._engine.idle_after) > motion.timeline_seconds:
            motion.fill_silence(motion.chunksize[1])


class SessionEngine:
    """N live sessions on one device; see the module docstring."""

    def __init__(self, renderer: Any, *, max_sessions: int | None = None, max_batch: int = 8,
                 avatar_cache_bytes: int = DEFAULT_CACHE_BYTES, latency: float = DEFAULT_LATENCY_S,
                 idle_after: float = DEFAULT_IDLE_AFTER_S, workers: int | None = None) -> None:
        """`renderer`: a `ditto_fast.Renderer` (its networks and options are shared by every
        session); `max_batch`: frames per warp/decoder call across sessions (capped at what the
        warp network's file takes); `workers`: scheduler threads, each rendering its own batch of
        other sessions' frames (None: one on a device, where one stream runs the batches; on the
        CPU one per core of the thread budget, up to 4, so the stitch and paste-back of one batch
        overlap the networks of another)."""
        self.renderer = renderer
        self.max_sessions = DEFAULT_MAX_SESSIONS if max_sessions is None else max_sessions
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {self.max_sessions}")
        self.latency, self.idle_after = latency, idle_after
        self.avatars = AvatarCache(avatar_cache_bytes)
        self.warp_decode = WarpDecode(renderer.networks, max_batch)
        if workers is None:
            workers = 1 if self.warp_decode.array_kind == "torch" else max(1, min(renderer.threads, 4))
        if workers < 1 or (workers > 1 and self.warp_decode.array_kind == "torch"):
            raise ValueError(f"workers must be at least 1 (and 1 with device executors), got {workers}")
        # Each worker has its own executors (host ones: onnxruntime sessions are shared, runs are not).
        self._warp_decoders = [self.warp_decode] + [WarpDecode(renderer.networks, max_batch)
                                                    for _ in range(workers - 1)]
        self.lock = threading.Condition()
        self._sessions: dict[str, LiveSession] = {}
        self._running = True
        self.frames_rendered = 0
        self.batches = 0
        self._first_latencies: deque[float] = deque(maxlen=1000)
        self._late_total = self._dropped_total = 0
        self._started = time.perf_counter()
        self._workers = [threading.Thread(target=self._schedule, args=(worker,), name=f"ditto-fast-engine-{worker}",
                                          daemon=True) for worker in range(workers)]
        for thread in self._workers:
            thread.start()

    # -- avatars and sessions ----------------------------------------------------------------------

    def add_avatar(self, source: str | Path, **options: Any) -> str:
        """Register an image or video file once (later calls with the same bytes and options reuse
        it); returns its id."""
        key = avatar_id(source, options)
        resolved = self.renderer.options(**options)
        self.avatars.get_or_register(key, lambda: register(source, self.renderer.networks, resolved))
        return key

    def has_avatar(self, avatar_id: str) -> bool:
        return avatar_id in self.avatars

    def open(self, avatar_id: str, *, chunksize: tuple[int, int, int] = DEFAULT_CHUNKSIZE,
             **options: Any) -> LiveSession:
        """A new live session of a registered avatar; `EngineBusy` at the limit, ValueError for an
        unknown avatar or a bad option."""
        try:
            avatar = self.avatars.get(avatar_id)
        except KeyError:
            raise ValueError(f"unknown avatar {avatar_id!r}: upload it first") from None
        resolved = self.renderer.online_options(**options)
        with self.lock:
            if not self._running:
                raise RuntimeError("the engine is closed")
            if len(self._sessions) >= self.max_sessions:
                raise EngineBusy(f"busy: {len(self._sessions)} of {self.max_sessions} sessions open")
            session = LiveSession(self, avatar, resolved, chunksize)
            self._sessions[session.id] = session
            self.lock.notify_all()
        return session

    def forget(self, session: LiveSession) -> None:
        with self.lock:
            removed = self._sessions.pop(session.id, None) is not None
            if removed:
                self._late_total += session.stats.late_frames
                self._dropped_total += session.stats.dropped_frames
            self.lock.notify_all()
        if removed:  # the session's threads freed their buffers: give the pages back (runtime/heap.py)
            release_free_heap()

    @property
    def sessions(self) -> list[LiveSession]:
        with self.lock:
            return list(self._sessions.values())

    def metrics(self) -> dict:
        """Figures for /metrics: sessions, frames, latencies, late and dropped frames, queues."""
        with self.lock:
            sessions = list(self._sessions.values())
            elapsed = time.perf_counter() - self._started
            return {
                "sessions_open": len(sessions),
                "max_sessions": self.max_sessions,
                "frames_rendered_total": self.frames_rendered,
                "batches_total": self.batches,
                "late_frames_total": self._late_total + sum(s.stats.late_frames for s in sessions),
                "dropped_frames_total": self._dropped_total + sum(s.stats.dropped_frames for s in sessions),
                "first_frame_latencies_s": list(self._first_latencies),
                "queued_windows": sum(s.motion.queued_windows for s in sessions),
                "pending_frames": sum(s.pending_rows for s in sessions),
                "frames_per_second": self.frames_rendered / elapsed if elapsed > 0 else 0.0,
                "avatars": len(self.avatars),
            }

    def measure_capacity(self, seconds: float = 2.0) -> Capacity:
        """Render `seconds` of the demo speech through one session of the demo portrait (pushed at
        once, no idle frames) and size the engine from its sustained frame rate."""
        import tempfile

        from ditto_fast.tools.demo import demo_speech, write_demo_inputs

        with tempfile.TemporaryDirectory(prefix="ditto_fast_capacity_") as scratch:
            portrait, _ = write_demo_inputs(scratch, seconds=0.5)
            avatar = self.add_avatar(portrait)
        idle_after, self.idle_after = self.idle_after, float("inf")
        try:
            session = self.open(avatar, seed=0)
            session.push(demo_speech(seconds))
            session.end()
            times = [time.perf_counter() for _ in session.frames(timeout=600)]
            session.close()
        finally:
            self.idle_after = idle_after
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        return Capacity(rate, max(1, int(rate // FPS)))

    def close(self) -> None:
        """Close every session and stop the scheduler."""
        for session in self.sessions:
            session.close()
        with self.lock:
            self._running = False
            self.lock.notify_all()
        for thread in self._workers:
            thread.join(timeout=10)

    def __enter__(self) -> SessionEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the scheduler -----------------------------------------------------------------------------

    def _choose(self) -> list[tuple[LiveSession, int]]:
        """Up to a batch of due frames, earliest deadline first: (session, frame count) in order
        of their first frame's deadline (under the lock)."""
        budget = self.warp_decode.batch_size
        candidates = [s for s in self._sessions.values() if s.pending_rows and s.room() > 0 and not s.busy
                      and not s.stopped]
        counts: dict[str, int] = {}
        while budget and candidates:
            # The next frame of each candidate is due at due(next + already chosen).
            session = min(candidates, key=lambda s: s.due(s.next_index + counts.get(s.id, 0)))
            counts[session.id] = counts.get(session.id, 0) + 1
            budget -= 1
            if counts[session.id] >= min(session.pending_rows, session.room()):
                candidates.remove(session)
        chosen = sorted(((self._sessions[key], n) for key, n in counts.items()),
                        key=lambda pair: pair[0].due(pair[0].next_index))
        return chosen

    def _schedule(self, worker: int) -> None:
        """One worker: pick a batch (sessions another worker holds are skipped, so each session's
        frames are stitched and delivered in order), render it, deliver it."""
        warp_decode = self._warp_decoders[worker]
        while True:
            if worker == 0:
                now = time.perf_counter()
                for session in self.sessions:
                    try:
                        session.fill_idle(now)
                    except Exception as exc:  # noqa: BLE001 - that session fails (or just closed); the engine goes on
                        if not session.closed:
                            session.fail(exc)
            with self.lock:
                chosen = self._choose()
                if not chosen:
                    if not self._running:
                        return
                    self.lock.wait(0.02)
                    continue
                work = []
                for session, count in chosen:
                    session.busy = True
                    first, motion, audio = session.take_rows(count)
                    work.append((session, first, motion, audio))
            try:
                self._render(warp_decode, work)
            except Exception as exc:  # noqa: BLE001 - the batch's sessions fail; the others go on
                for session, *_ in work:
                    session.fail(exc)
            finally:
                with self.lock:
                    for session, *_ in work:
                        session.busy = False
                    self.lock.notify_all()

    def _render(self, warp_decode: WarpDecode, work: list[tuple[LiveSession, int, np.ndarray, np.ndarray]]) -> None:
        """Stitch per session, warp + decode as one batch, paste back, deliver."""
        rows = []  # (session, index, source, x_s row, x_d row, audio)
        for session, first, motion, audio in work:
            try:
                sources, x_s, x_d = session.render.stitch_block(first, motion)
            except Exception as exc:  # noqa: BLE001 - this session fails, the others are rendered
                session.fail(exc)
                continue
            for row, source in enumerate(sources):
                rows.append((session, first + row, source, x_s[row], x_d[row],
                             audio[row * SAMPLES_PER_FRAME:(row + 1) * SAMPLES_PER_FRAME]))
        if not rows:
            return
        with warp_decode.activate():
            images = warp_decode([session.render.features(source) for session, _, source, *_ in rows],
                                 np.stack([r[3] for r in rows]), np.stack([r[4] for r in rows]))
            frames = []
            for position, (session, index, source, _, _, audio) in enumerate(rows):
                rgb = session.render.paste_to_host(source, images[position:position + 1])
                frames.append((session, LiveFrame(index, index / FPS, rgb, audio)))
        with self.lock:
            self.batches += 1
            for session, frame in frames:
                first = session.stats.frames_emitted == 0
                session.deliver(frame)
                if first and session.stats.first_frame_latency is not None:
                    self._first_latencies.append(session.stats.first_frame_latency)
                self.frames_rendered += 1
            self.lock.notify_all()
