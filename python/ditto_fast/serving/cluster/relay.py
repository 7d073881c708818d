"""The application's shared state, as one Ray actor (`SessionRelay`): the ingress replicas put,
the engine replicas take.

- avatars: uploaded files by id (bytes, suffix, registration options), bounded in bytes, oldest
  out first; an engine replica fetches one when it first serves that avatar;
- calls: each live session's producer calls in order. The ingress's `call()` waits for the
  answer; the replica holding the session takes them with `next_call()` and answers with
  `answer()`. `fail()` answers every waiting call of a session whose replica is gone;
- credit: how many frames the ingress has taken per session, so that a replica streams at most
  a window ahead of its reader (Ray's streaming calls do not push back on their own);
- figures: each replica's latest `SessionEngine.metrics()` and avatar registrations, for
  /metrics and the tests.

An async actor: every method runs on its event loop, so no locks; a waiting call costs nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict, defaultdict
from typing import Any

CALL_NAMES = frozenset({"push", "interrupt", "set_controls", "end"})
REPORT_MAX_AGE_S = 10.0  # figures older than this belong to a replica that is gone


class SessionRelay:
    def __init__(self, max_avatar_bytes: int) -> None:
        self.max_avatar_bytes = max_avatar_bytes
        self._avatars: OrderedDict[str, tuple[bytes, str, dict[str, Any]]] = OrderedDict()
        self._inboxes: defaultdict[str, asyncio.Queue] = defaultdict(asyncio.Queue)
        self._waiting: dict[tuple[str, int], asyncio.Future] = {}
        self._numbers = itertools.count()
        self._lost: dict[str, str] = {}  # session → why its calls fail
        self._taken: defaultdict[str, int] = defaultdict(int)
        self._credit_changed: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._reports: dict[str, tuple[float, dict[str, Any]]] = {}

    # -- avatars ---------------------------------------------------------------------------------

    def put_avatar(self, avatar_id: str, data: bytes, suffix: str, options: dict[str, Any]) -> None:
        self._avatars[avatar_id] = (data, suffix, dict(options))
        self._avatars.move_to_end(avatar_id)
        while sum(len(kept[0]) for kept in self._avatars.values()) > self.max_avatar_bytes and len(self._avatars) > 1:
            self._avatars.popitem(last=False)

    def avatar(self, avatar_id: str) -> tuple[bytes, str, dict[str, Any]] | None:
        return self._avatars.get(avatar_id)

    def has_avatar(self, avatar_id: str) -> bool:
        return avatar_id in self._avatars

    # -- a session's calls -----------------------------------------------------------------------

    async def call(self, session: str, name: str, args: tuple, kwargs: dict[str, Any]) -> tuple[str, str]:
        """Queue one call for the session's replica and wait for its answer: ("ok", ""),
        ("value", message) for a ValueError there, ("error", message) for anything else."""
        if name not in CALL_NAMES:
            return "error", f"no session call named {name!r}"
        if session in self._lost:
            return "error", self._lost[session]
        number = next(self._numbers)
        answer = asyncio.get_running_loop().create_future()
        self._waiting[(session, number)] = answer
        self._inboxes[session].put_nowait((number, name, args, kwargs))
        try:
            return await answer
        finally:
            self._waiting.pop((session, number), None)

    async def next_call(self, session: str, timeout: float) -> tuple[int, str, tuple, dict] | None:
        """The session's next call, or None after `timeout` seconds without one."""
        try:
            return await asyncio.wait_for(self._inboxes[session].get(), timeout)
        except asyncio.TimeoutError:
            return None

    def answer(self, session: str, number: int, kind: str, message: str) -> None:
        answer = self._waiting.get((session, number))
        if answer is not None and not answer.done():
            answer.set_result((kind, message))

    def fail(self, session: str, message: str) -> None:
        """The session is over (its replica died, or it was closed): answer what waits, refuse
        what comes, drop its state."""
        self._lost[session] = message
        for (owner, _), answer in list(self._waiting.items()):
            if owner == session and not answer.done():
                answer.set_result(("error", message))
        self._inboxes.pop(session, None)
        self._taken.pop(session, None)
        event = self._credit_changed.pop(session, None)
        if event is not None:
            event.set()  # a replica waiting for credit looks again and finds the session gone
        while len(self._lost) > 10_000:  # only recent sessions are asked about
            self._lost.pop(next(iter(self._lost)))

    # -- flow control ----------------------------------------------------------------------------

    def took(self, session: str, frames: int) -> None:
        """The ingress has taken `frames` frames of the session so far."""
        if session in self._lost:
            return
        self._taken[session] = max(self._taken[session], frames)
        self._credit_changed[session].set()

    async def wait_taken(self, session: str, frames: int, timeout: float) -> bool:
        """Wait until the ingress has taken at least `frames` frames; False if the session is
        gone or `timeout` passed first."""
        deadline = time.monotonic() + timeout
        while session not in self._lost and self._taken[session] < frames:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            event = self._credit_changed[session]
            event.clear()
            try:
                await asyncio.wait_for(event.wait(), left)
            except asyncio.TimeoutError:
                return False
        return session not in self._lost

    # -- figures ---------------------------------------------------------------------------------

    def report(self, replica: str, figures: dict[str, Any]) -> None:
        self._reports[replica] = (time.monotonic(), figures)

    def reports(self) -> dict[str, dict[str, Any]]:
        """The latest figures of every replica heard from within REPORT_MAX_AGE_S."""
        now = time.monotonic()
        return {replica: figures for replica, (at, figures) in self._reports.items()
                if now - at <= REPORT_MAX_AGE_S}
