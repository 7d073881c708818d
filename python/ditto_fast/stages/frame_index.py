"""The ping-pong frame order of a video source (DITTO_SPEC §5.7, §5.9): output frame i shows
source frame 0, 1, ..., n-1, n-1, ..., 0, 0, 1, ... Pure arithmetic, kept apart from the
decoders in `stages.source` so that the stages indexing source frames need no video I/O."""

from __future__ import annotations


def mirror_index(i: int, n: int) -> int:
    """Source frame for output frame `i` with `n` source frames: 0..n-1, n-1..0, 0..n-1, ..."""
    if n <= 0:
        raise ValueError(f"mirror_index: the source has no frames (n={n})")
    lap, offset = divmod(i, n)
    return offset if lap % 2 == 0 else n - 1 - offset
