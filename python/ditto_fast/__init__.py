"""ditto_fast: a fast inference engine for Ditto, the motion-space diffusion talking-head model."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ditto-fast")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
