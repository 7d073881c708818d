"""What the LiveKit and Pipecat adapter tests share: a small session engine with one avatar, a
bounded way to run an async scenario, and the check that a missing framework names its extra."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Iterator

import pytest

from ditto_fast import Renderer
from ditto_fast.serving.engine import SessionEngine
from ditto_fast.tools.demo import write_demo_inputs

# The engine inserts idle silence once speech lags real time by this much. On this CPU a session
# renders ~7 frames/s, so idle motion piles up ahead of the renderer; a longer lag keeps that
# backlog (and the wait for the next utterance's frames) short.
IDLE_AFTER = 1.0


def engine_with_avatar(folder) -> Iterator[SessionEngine]:
    """A two-session engine on the shipped tree, the demo portrait registered as `test_avatar`."""
    portrait, _ = write_demo_inputs(folder, seconds=0.5)
    with SessionEngine(Renderer(), max_sessions=2, idle_after=IDLE_AFTER) as engine:
        engine.test_avatar = engine.add_avatar(portrait)
        yield engine


def run(scenario, timeout: float = 28.0):
    return asyncio.run(asyncio.wait_for(scenario(), timeout))


def assert_import_hint(monkeypatch, framework: str, extra: str) -> None:
    """Importing ditto_fast.serving.<extra> without `framework` says which extra to install."""
    for module in [m for m in sys.modules if m == framework or m.startswith(f"{framework}.")]:
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    monkeypatch.delitem(sys.modules, f"ditto_fast.serving.{extra}")
    with pytest.raises(ImportError, match=rf'pip install "ditto-fast\[{extra}\]"'):
        importlib.import_module(f"ditto_fast.serving.{extra}")
