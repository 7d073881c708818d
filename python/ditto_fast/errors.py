"""Shared error formatting: messages users read are one line long."""

from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none.

    Third-party errors (onnxruntime, torch, the hub client) often carry multi-line dumps;
    ours quote just the line that says what went wrong.
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def default_mode(directory: bool = False) -> int:
    """The permissions a plainly created file (or folder) gets under the current umask.

    Temporary files start private (0600); outputs renamed from them should not stay so.
    """
    import os

    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask
