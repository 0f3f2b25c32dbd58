"""Load the pickles inside CIFAR archives without ever running code from them.

A pickle is a small program: its GLOBAL / STACK_GLOBAL / INST / OBJ / EXT
opcodes name any importable callable and REDUCE calls it. Every one of those
names goes through ``Unpickler.find_class``, so the only callables a file can
reach are the ones returned from there. The official CIFAR batches (written by
numpy under Python 2) need three: ``numpy.core.multiarray._reconstruct``,
``numpy.ndarray`` and ``numpy.dtype``. Each is handed out as a guard that
checks its arguments before numpy sees them, so a file can build a plain
numeric array and nothing else. Any other name is refused when the opcode is
read, before anything is called.
"""

from __future__ import annotations

import pickle

import numpy as np

# numpy < 2 writes `numpy.core.multiarray`, numpy >= 2 `numpy._core.multiarray`.
_RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
# Plain numeric dtypes only: an object dtype would let the pickle place
# arbitrary objects inside the array.
_DTYPE_KINDS = frozenset("biuf")


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allowed numpy set, or misuses one."""


class _NdarrayToken:
    """Stands in for ``numpy.ndarray`` inside the pickle: usable only as the
    first argument of ``_reconstruct``, never callable."""

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY = _NdarrayToken()


def _reconstruct(subtype, shape, typecode):
    """``numpy.core.multiarray._reconstruct`` restricted to an empty base-class
    array, which the following BUILD fills from the pickled bytes."""
    if subtype is not _NDARRAY:
        raise UnsafePickleError(f"_reconstruct may only build numpy.ndarray, got {type(subtype).__name__}")
    if shape not in ((0,), 0):
        raise UnsafePickleError(f"_reconstruct expects the empty shape (0,), got {shape!r}")
    if typecode not in (b"b", "b"):
        raise UnsafePickleError(f"_reconstruct expects the typecode 'b', got {typecode!r}")
    return np.ndarray((0,), np.uint8)


def _dtype(spec, align=0, copy=1):
    """``numpy.dtype`` restricted to plain numeric types (``u1``, ``i8``, ``f4``...)."""
    if isinstance(spec, bytes):
        spec = spec.decode("ascii", "replace")
    if not isinstance(spec, str) or len(spec) > 4:
        raise UnsafePickleError(f"dtype expects a short type code, got {spec!r}")
    try:
        dtype = np.dtype(spec)
    except TypeError as exc:
        raise UnsafePickleError(f"unknown dtype {spec!r}") from exc
    if dtype.kind not in _DTYPE_KINDS:
        raise UnsafePickleError(f"dtype {spec!r} is not a plain numeric type")
    return dtype


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals a CIFAR batch needs."""

    def find_class(self, module: str, name: str):
        if (module, name) in _RECONSTRUCT:
            return _reconstruct
        if (module, name) == ("numpy", "ndarray"):
            return _NDARRAY
        if (module, name) == ("numpy", "dtype"):
            return _dtype
        raise UnsafePickleError(f"refused global {module}.{name}: only numpy array globals are allowed")

    def persistent_load(self, pid):
        raise UnsafePickleError("refused persistent id: not used by CIFAR batches")


class _Reader:
    """A file over a bytes-like object, without BytesIO's copy of a bytearray."""

    def __init__(self, data):
        self.data, self.view, self.pos = data, memoryview(data), 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.view) if n is None or n < 0 else min(self.pos + n, len(self.view))
        out = bytes(self.view[self.pos:end])
        self.pos = end
        return out

    def readinto(self, b) -> int:
        n = min(len(b), len(self.view) - self.pos)
        b[:n] = self.view[self.pos:self.pos + n]
        self.pos += n
        return n

    def readline(self) -> bytes:
        end = self.data.find(b"\n", self.pos)
        return self.read(end + 1 - self.pos if end >= 0 else -1)


def loads(data: bytes | bytearray):
    """Unpickle ``data`` under the restrictions above.

    Strings written by Python 2 come back as ``bytes`` (as in keras' own
    reader); an array's buffer is used in place, not copied. Raises
    ``UnsafePickleError`` for a refused global and the usual ``pickle`` /
    ``ValueError`` / ``EOFError`` family for a damaged stream.
    """
    return RestrictedUnpickler(_Reader(data), encoding="bytes").load()
