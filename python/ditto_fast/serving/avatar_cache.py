"""Registered avatars shared by every session of an engine, addressed by an id, bounded by bytes.

An avatar is registered once (face detection, crop, appearance features: the expensive part of a
session's start) and then opened by any number of sessions. Its id is a hash of the source file's
bytes and the registration options, so the same portrait uploaded twice is registered once. The
cache holds at most `max_bytes` of avatars (an image avatar is ~9 MB, mostly its feature volume);
past that the least recently used ones are forgotten. Sessions keep the avatar they opened, so
eviction never touches a running session; it only means the next open registers it again.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ditto_fast.avatar import Avatar

DEFAULT_CACHE_BYTES = 1 << 30


def avatar_id(source: str | Path, options: Mapping[str, Any]) -> str:
    """The id of a source file registered with `options`: a hash of both."""
    digest = hashlib.sha256(Path(source).read_bytes())
    digest.update(json.dumps(options, sort_keys=True, default=repr).encode())
    return digest.hexdigest()[:16]


class AvatarCache:
    """Thread-safe LRU of avatars by id (see the module docstring)."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"AvatarCache: max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self._avatars: OrderedDict[str, Avatar] = OrderedDict()
        self._lock = threading.Lock()
        self.registrations = 0  # how many times `get_or_register` had to register

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(avatar.nbytes for avatar in self._avatars.values())

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._avatars

    def __len__(self) -> int:
        with self._lock:
            return len(self._avatars)

    def get(self, key: str) -> Avatar:
        """The avatar of `key` (now the most recently used); KeyError when it is not held."""
        with self._lock:
            avatar = self._avatars[key]
            self._avatars.move_to_end(key)
            return avatar

    def put(self, key: str, avatar: Avatar) -> None:
        """Hold `avatar` under `key`, forgetting the least recently used ones past the budget (the
        newest is kept even when it alone exceeds it: a session is about to open it)."""
        with self._lock:
            self._avatars[key] = avatar
            self._avatars.move_to_end(key)
            total = sum(a.nbytes for a in self._avatars.values())
            while total > self.max_bytes and len(self._avatars) > 1:
                _, evicted = self._avatars.popitem(last=False)
                total -= evicted.nbytes

    def get_or_register(self, key: str, register: Callable[[], Avatar]) -> Avatar:
        """The avatar of `key`, registering it with `register()` when it is not held. Registration
        runs outside the lock, so other sessions are not held up by it."""
        try:
            return self.get(key)
        except KeyError:
            pass
        avatar = register()
        with self._lock:
            self.registrations += 1
        self.put(key, avatar)
        return avatar
