"""Avatar uploads: registering an uploaded file with the engine, and keeping the file so that
`POST /v1/render` (which renders through the Renderer, not the session engine) can use the
same avatar id later. The kept files are bounded in bytes; the oldest go first."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any, NamedTuple

from ditto_fast.serving.interface import EngineLike

# The loader tells images from videos by their content (cv2.haveImageReader); a suffix is
# kept only so that FFmpeg's probe has its usual hint for videos.
_SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,5}")


class KeptAvatar(NamedTuple):
    path: Path
    options: dict[str, Any]  # registration options it was uploaded with (crop_scale, ...)


class AvatarStore:
    """Uploaded avatar files by engine id, in a private folder removed by `close()`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.root = Path(tempfile.mkdtemp(prefix="ditto_fast_avatars_"))
        self._files: OrderedDict[str, KeptAvatar] = OrderedDict()
        self._lock = threading.Lock()
        # The folder goes with the store even when nobody calls close() (an app never started).
        self._remove = weakref.finalize(self, shutil.rmtree, self.root, True)

    async def add(self, engine: EngineLike, data: bytes, filename: str = "", options: dict[str, Any] | None = None
                  ) -> str:
        """Register `data` (an image or video file's bytes) with the engine; returns its id.
        The engine's errors (NoFaceError and other ValueErrors) pass through."""
        suffix = Path(filename).suffix
        suffix = suffix if _SAFE_SUFFIX.fullmatch(suffix) else ""
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=suffix, dir=self.root)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            avatar_id = await asyncio.to_thread(engine.add_avatar, path, **(options or {}))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        self._keep(str(avatar_id), KeptAvatar(path, dict(options or {})))
        return str(avatar_id)

    def _keep(self, avatar_id: str, kept: KeptAvatar) -> None:
        with self._lock:
            if avatar_id in self._files:  # the same content (and options) again: keep the first copy
                self._files.move_to_end(avatar_id)
                kept.path.unlink(missing_ok=True)
                return
            self._files[avatar_id] = kept
            total = sum(file.path.stat().st_size for file in self._files.values())
            while total > self.max_bytes and len(self._files) > 1:
                _, oldest = self._files.popitem(last=False)
                total -= oldest.path.stat().st_size
                oldest.path.unlink(missing_ok=True)

    def get(self, avatar_id: str) -> KeptAvatar | None:
        """The kept file of `avatar_id` and its registration options, or None when it was never
        uploaded here or was evicted."""
        with self._lock:
            kept = self._files.get(avatar_id)
            if kept is not None:
                self._files.move_to_end(avatar_id)
            return kept

    def close(self) -> None:
        with self._lock:
            self._files.clear()
        self._remove()
