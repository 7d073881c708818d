"""Fetching the official Ditto checkpoint tree from the model hub.

Downloads go through `huggingface_hub`, which resumes interrupted files, verifies them and
shows a progress bar per file; a failed run leaves only complete files plus resumable
partial ones, so running the same command again finishes the job.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ditto_fast.errors import one_line

OFFICIAL_REPO = "digital-avatar/ditto-talkinghead"

# What each part of the tree is, so users fetch only what their backend needs: the full
# repository is several GB (HuBERT alone is 1.46 GB, twice).
PARTS: dict[str, tuple[str, ...]] = {
    "cfg": ("ditto_cfg/*",),
    "onnx": ("ditto_onnx/*",),
    "trt": ("ditto_trt_*/*",),
    "pytorch": ("ditto_pytorch/*", "ditto_pytorch/*/*"),
}
DEFAULT_PARTS = ("cfg", "onnx")


class DownloadError(RuntimeError):
    """The checkpoint tree could not be fetched."""


def download_checkpoints(
    out: str | Path,
    parts: Iterable[str] = DEFAULT_PARTS,
    repo: str = OFFICIAL_REPO,
    revision: str | None = None,
) -> Path:
    """Fetch `parts` of the official tree into `out` and return it."""
    parts = tuple(parts)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown checkpoint parts {unknown}; choose from {sorted(PARTS)}")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise DownloadError(
            "downloading needs the huggingface_hub package: pip install 'ditto-fast[download]'"
        ) from None
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    patterns = [pattern for part in parts for pattern in PARTS[part]]
    try:
        snapshot_download(repo, revision=revision, local_dir=out, allow_patterns=patterns)
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise DownloadError(
            f"could not fetch {repo} into {out}: {one_line(exc)} (check the network; run the same "
            "command again to resume)"
        ) from None
    return out
