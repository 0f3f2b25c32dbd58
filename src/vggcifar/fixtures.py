"""Write CIFAR archives in the exact official layouts, from arrays you choose.

For tests and for users who want a small stand-in for the real files. The
python-layout batches are pickled here by hand, opcode by opcode, the way
numpy under Python 2 wrote the official files (protocol 2, byte strings as
SHORT_BINSTRING / BINSTRING, arrays through ``numpy.core.multiarray
_reconstruct``). Python 3's ``pickle.dumps(..., protocol=2)`` writes bytes
through ``_codecs.encode`` instead, which is not what the official files hold.

Images are given as uint8 ``(N, 32, 32, 3)`` channels-last arrays and labels
as 1-D integer arrays; any count per batch works, from 0 to the full 10,000.
"""

from __future__ import annotations

import io
import os
import struct
import tarfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from vggcifar.data import CIFAR10_CLASSES

PY_DIR = "cifar-10-batches-py"
BIN_DIR = "cifar-10-batches-bin"
C100_DIR = "cifar-100-python"
README = b"<meta HTTP-EQUIV=\"REFRESH\" content=\"0; url=http://www.cs.toronto.edu/~kriz/cifar.html\">\n"


# ---------------------------------------------------------------- pickling
class _Py2Pickler:
    """The subset of Python 2's cPickle (protocol 2) that CIFAR files use."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.memo = 0

    def put(self) -> None:
        # cPickle memoises every container and string it writes.
        self.memo += 1
        w = self.out.write
        w(b"q" + bytes([self.memo]) if self.memo < 256 else b"r" + struct.pack("<I", self.memo))

    def int(self, v: int) -> None:
        w = self.out.write
        if 0 <= v < 256:
            w(b"K" + bytes([v]))
        elif 0 <= v < 65536:
            w(b"M" + struct.pack("<H", v))
        elif -2**31 <= v < 2**31:
            w(b"J" + struct.pack("<i", v))
        else:
            raise ValueError(f"Expected a 32-bit integer. Received: v={v}")

    def bytes(self, v: bytes) -> None:
        w = self.out.write
        w(b"U" + bytes([len(v)]) if len(v) < 256 else b"T" + struct.pack("<I", len(v)))
        w(v)
        self.put()

    def global_(self, module: str, name: str) -> None:
        self.out.write(b"c" + module.encode() + b"\n" + name.encode() + b"\n")
        self.put()

    def items(self, values, many: bytes, one: bytes, emit) -> None:
        # cPickle writes containers in batches of 1000: MARK items APPENDS /
        # SETITEMS, or a single APPEND / SETITEM for a batch of one.
        values = list(values)
        for i in range(0, len(values), 1000):
            chunk = values[i:i + 1000]
            if len(chunk) > 1:
                self.out.write(b"(")
            for v in chunk:
                emit(v)
            self.out.write(many if len(chunk) > 1 else one)

    def array(self, a: np.ndarray) -> None:
        w = self.out.write
        a = np.ascontiguousarray(a)
        self.global_("numpy.core.multiarray", "_reconstruct")
        self.global_("numpy", "ndarray")
        w(b"K\x00\x85")  # (0,)
        self.put()
        self.bytes(b"b")
        w(b"\x87")  # (ndarray, (0,), 'b')
        self.put()
        w(b"R")
        self.put()
        w(b"(K\x01")  # state: (version 1, shape, dtype, fortran, raw bytes)
        for d in a.shape:
            self.int(d)
        w({1: b"\x85", 2: b"\x86", 3: b"\x87"}[a.ndim])
        self.put()
        self.global_("numpy", "dtype")
        self.bytes(a.dtype.str[1:].encode())
        w(b"K\x00K\x01\x87")
        self.put()
        w(b"R")
        self.put()
        w(b"(K\x03")
        self.bytes(b"|" if a.dtype.itemsize == 1 else b"<")
        w(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
        self.put()
        w(b"\x89")  # not Fortran order
        self.bytes(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
        w(b"tb")
        self.put()

    def obj(self, v) -> None:
        w = self.out.write
        if isinstance(v, np.ndarray):
            self.array(v)
        elif isinstance(v, bytes):
            self.bytes(v)
        elif isinstance(v, bool):
            w(b"\x88" if v else b"\x89")
        elif isinstance(v, int | np.integer):
            self.int(int(v))
        elif v is None:
            w(b"N")
        elif isinstance(v, list):
            w(b"]")
            self.put()
            self.items(v, b"e", b"a", self.obj)
        elif isinstance(v, dict):
            w(b"}")
            self.put()
            self.items(v.items(), b"u", b"s", lambda kv: (self.obj(kv[0]), self.obj(kv[1])))
        else:
            raise TypeError(f"Cannot write {type(v).__name__} as a Python 2 pickle")


def dumps_py2(obj) -> bytes:
    """Pickle ``obj`` (dict, list, bytes, int, bool, None, numeric ndarray) as
    Python 2's cPickle protocol 2 did. Use bytes, not str, for strings: the
    official files hold Python 2 byte strings."""
    p = _Py2Pickler()
    p.out.write(b"\x80\x02")
    p.obj(obj)
    p.out.write(b".")
    return p.out.getvalue()


# ---------------------------------------------------------------- members
def _check(x: np.ndarray, y: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x)
    y = np.asarray(y).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
        raise ValueError(f"Expected uint8 images of shape (N, 32, 32, 3). Received: x_{split}.shape={x.shape}, dtype={x.dtype}")
    if len(y) != len(x):
        raise ValueError(f"Expected one label per image. Received: {len(x)} images, {len(y)} labels in {split}")
    return x, y


def rows(x: np.ndarray) -> np.ndarray:
    """Channels-last images as CIFAR rows: the R plane, then G, then B."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(len(x), 3072)


def _python_batch(x, y, label: bytes, start: int, label_key: bytes = b"labels", extra=None) -> bytes:
    d = {
        b"batch_label": label,
        label_key: [int(v) for v in y],
        b"data": rows(x),
        b"filenames": [b"fixture_%06d.png" % (start + i) for i in range(len(x))],
    }
    d.update(extra or {})
    return dumps_py2(d)


def python_members(x_train, y_train, x_test, y_test, *, class_names=None, batches: int = 5) -> dict[str, bytes]:
    """Members of ``cifar-10-python.tar.gz``: five training batches, the test
    batch, ``batches.meta`` and ``readme.html``, keyed by member name."""
    x_train, y_train = _check(x_train, y_train, "train")
    x_test, y_test = _check(x_test, y_test, "test")
    names = list(CIFAR10_CLASSES if class_names is None else class_names)
    members = {}
    start = 0
    for i, idx in enumerate(np.array_split(np.arange(len(x_train)), batches), 1):
        members[f"{PY_DIR}/data_batch_{i}"] = _python_batch(
            x_train[idx], y_train[idx], b"training batch %d of %d" % (i, batches), start)
        start += len(idx)
    members[f"{PY_DIR}/test_batch"] = _python_batch(x_test, y_test, b"testing batch 1 of 1", start)
    per_batch = -(-len(x_train) // batches)
    members[f"{PY_DIR}/batches.meta"] = dumps_py2(
        {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in names], b"num_vis": 3072})
    members[f"{PY_DIR}/readme.html"] = README
    return members


def binary_members(x_train, y_train, x_test, y_test, *, class_names=None, batches: int = 5) -> dict[str, bytes]:
    """Members of ``cifar-10-binary.tar.gz``: records of one label byte and
    3072 pixel bytes, and ``batches.meta.txt`` with one class name a line."""
    x_train, y_train = _check(x_train, y_train, "train")
    x_test, y_test = _check(x_test, y_test, "test")
    names = list(CIFAR10_CLASSES if class_names is None else class_names)

    def records(x, y):
        return np.concatenate([np.asarray(y, np.uint8)[:, None], rows(x)], axis=1).tobytes()

    members = {}
    for i, idx in enumerate(np.array_split(np.arange(len(x_train)), batches), 1):
        members[f"{BIN_DIR}/data_batch_{i}.bin"] = records(x_train[idx], y_train[idx])
    members[f"{BIN_DIR}/test_batch.bin"] = records(x_test, y_test)
    # The official file ends with blank lines; readers must skip them.
    members[f"{BIN_DIR}/batches.meta.txt"] = ("\n".join(names) + "\n\n").encode()
    members[f"{BIN_DIR}/readme.html"] = README
    return members


def cifar100_members(x_train, y_train, x_test, y_test, *, coarse_train=None, coarse_test=None,
                     fine_names=None, coarse_names=None) -> dict[str, bytes]:
    """Members of ``cifar-100-python.tar.gz``: ``train``, ``test`` and ``meta``,
    with ``fine_labels`` (and ``coarse_labels``, derived as fine // 5 unless
    given)."""
    x_train, y_train = _check(x_train, y_train, "train")
    x_test, y_test = _check(x_test, y_test, "test")
    fine_names = list(fine_names or [f"fine_{i:02d}" for i in range(100)])
    coarse_names = list(coarse_names or [f"coarse_{i:02d}" for i in range(20)])
    coarse_train = y_train // 5 if coarse_train is None else coarse_train
    coarse_test = y_test // 5 if coarse_test is None else coarse_test
    return {
        f"{C100_DIR}/train": _python_batch(x_train, y_train, b"training batch 1 of 1", 0, b"fine_labels",
                                           {b"coarse_labels": [int(v) for v in coarse_train]}),
        f"{C100_DIR}/test": _python_batch(x_test, y_test, b"testing batch 1 of 1", len(x_train), b"fine_labels",
                                          {b"coarse_labels": [int(v) for v in coarse_test]}),
        f"{C100_DIR}/meta": dumps_py2({b"fine_label_names": [n.encode() for n in fine_names],
                                       b"coarse_label_names": [n.encode() for n in coarse_names]}),
    }


# ---------------------------------------------------------------- writers
def write_tar(path, members: Mapping[str, bytes], *, symlinks: Mapping[str, str] | None = None,
              hardlinks: Mapping[str, str] | None = None, compresslevel: int = 9) -> Path:
    """A ``.tar.gz`` holding ``members`` (name -> bytes) under their folders,
    plus optional link members (name -> target) for hostile-input tests."""
    path = Path(path)
    mode = "w:gz" if path.name.endswith(("gz", "_archive")) else "w"
    kwargs = {"compresslevel": compresslevel} if mode == "w:gz" else {}
    with tarfile.open(path, mode, **kwargs) as tar:
        folders = sorted({name.split("/")[0] for name in members if "/" in name})
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for links, kind in ((symlinks, tarfile.SYMTYPE), (hardlinks, tarfile.LNKTYPE)):
            for name, target in (links or {}).items():
                info = tarfile.TarInfo(name)
                info.type, info.linkname = kind, target
                tar.addfile(info)
    return path


def write_folder(root, members: Mapping[str, bytes]) -> Path:
    """The members written as files under ``root`` (an extracted archive)."""
    root = Path(root)
    for name, data in members.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


_LAYOUTS = {"python": python_members, "binary": binary_members, "cifar100": cifar100_members}


def write_archive(path, x_train, y_train, x_test, y_test, *, layout: str = "python",
                  extracted: bool = False, compresslevel: int = 9, **kwargs) -> Path:
    """Write a CIFAR archive (or, with ``extracted=True``, its extracted folder
    under ``path``) in ``layout`` "python", "binary" or "cifar100"."""
    if layout not in _LAYOUTS:
        raise ValueError(f"Expected layout in {sorted(_LAYOUTS)}. Received: layout={layout!r}")
    members = _LAYOUTS[layout](x_train, y_train, x_test, y_test, **kwargs)
    if extracted:
        return write_folder(path, members)
    os.makedirs(Path(path).parent, exist_ok=True)
    return write_tar(path, members, compresslevel=compresslevel)


def random_arrays(n_train: int, n_test: int, num_classes: int = 10, seed: int = 0):
    """Random uint8 images and labels in the shapes the writers take."""
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        rng.integers(0, num_classes, n_train),
        rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
        rng.integers(0, num_classes, n_test),
    )
