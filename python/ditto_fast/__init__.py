"""ditto_fast: a fast inference engine for Ditto, the motion-space diffusion talking-head model."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ditto-fast")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

# The API imports NumPy, OpenCV and onnxruntime; `ditto-fast info` must work without them,
# so the names below load on first use.
_LAZY = {
    "Renderer": "ditto_fast.renderer",
    "RenderResult": "ditto_fast.renderer",
    "Avatar": "ditto_fast.avatar",
    "RenderOptions": "ditto_fast.options",
    "Frame": "ditto_fast.engine.offline",
    "RenderJob": "ditto_fast.engine.offline",
    "RenderInfo": "ditto_fast.engine.offline",
    "StreamSession": "ditto_fast.engine.online",
    "StreamStats": "ditto_fast.engine.stream_stats",
    # The errors the API documents, each raised with a one-line message naming the file or option.
    "NoFaceError": "ditto_fast.stages.face_detect",
    "AudioError": "ditto_fast.stages.audio",
    "OutputError": "ditto_fast.stages.writer",
    "CheckpointError": "ditto_fast.checkpoints",
    "ConfigError": "ditto_fast.config",
    "ContractError": "ditto_fast.contract",
    "AvatarFileError": "ditto_fast.avatar",
    "UnsafePickleError": "ditto_fast.safe_pickle",
    "MissingBackendError": "ditto_fast.backends.base",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ditto_fast' has no attribute {name!r}")
