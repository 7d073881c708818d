"""Loading Ditto's config pickles without executing arbitrary code.

A pickle can name any importable callable and have it called while loading, so the official
`ditto_cfg/*.pkl` files are read with an unpickler that resolves only the globals plain data
needs: NumPy arrays, dtypes and scalars. Containers, strings, numbers, booleans and None need
no globals at all. Anything else is refused before it is imported.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

# NumPy >= 2 pickles name `numpy._core`; older ones `numpy.core`. Both resolve to the
# functions of the installed NumPy, so files from either side load.
_NUMPY_CORE = ("numpy._core", "numpy.core")
_ALLOWED: dict[tuple[str, str], Any] = {
    **{(f"{core}.multiarray", "_reconstruct"): np._core.multiarray._reconstruct
       for core in _NUMPY_CORE},
    **{(f"{core}.multiarray", "scalar"): np._core.multiarray.scalar for core in _NUMPY_CORE},
    # Protocol-5 pickles rebuild arrays from an out-of-band or inline buffer.
    **{(f"{core}.numeric", "_frombuffer"): np._core.numeric._frombuffer for core in _NUMPY_CORE},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Protocol-2 pickles store an array's raw bytes as a latin-1 str re-encoded by this call.
    ("_codecs", "encode"): codecs.encode,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references something other than plain data."""


class _PlainDataUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._path}: refusing to load: it references {module}.{name}, which is not "
                "plain data (dict, list, tuple, str, numbers, bool, None, NumPy arrays); the "
                "file may be unsafe"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._path}: refusing to load: it uses persistent references")


def load_plain_pickle(path: str | Path) -> Any:
    """Unpickle `path`, allowing only plain data and NumPy arrays."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            return _PlainDataUnpickler(file, path).load()
    except UnsafePickleError:
        raise
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: config pickle not found") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise pickle.UnpicklingError(f"{path}: not a readable config pickle ({exc})") from None
