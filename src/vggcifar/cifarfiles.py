"""The official CIFAR files: their layouts, addresses and checksums, where keras caches them, and a safe reader of an archive or its extracted folder.

Pickled batches go through ``vggcifar.safepickle``, which refuses every global
but numpy's array ones; archive members are read in memory, never extracted.
Images come out uint8, shape (N, 32, 32, 3), channels-last; labels 1-D int
arrays. ``vggcifar.data`` turns what ``read_files`` returns into a dataset.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np


class DataError(ValueError):
    """A dataset that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class Archive:
    """One official archive: where it lives and the checksums of its bytes."""

    filename: str
    url: str
    md5: str  # published on the CIFAR page
    sha256: str | None  # the one keras verifies; none published for the binary archive


ARCHIVES = {
    "cifar10": Archive(
        "cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a", "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),
    "cifar10-binary": Archive(
        "cifar-10-binary.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "c32a1d4ab5d03f1284b67883e8d87530", None),
    "cifar100": Archive(
        "cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85", "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"),
}
#: Environment variables that point a download at a mirror (with its hash).
URL_ENV = {"cifar10": "VGGCIFAR_CIFAR10_URL", "cifar100": "VGGCIFAR_CIFAR100_URL"}
SHA256_ENV = {"cifar10": "VGGCIFAR_CIFAR10_SHA256", "cifar100": "VGGCIFAR_CIFAR100_SHA256"}


@dataclass(frozen=True)
class _Layout:
    """The members of one archive layout, relative to its top folder."""

    folder: str
    dataset: str
    format: str  # "python" (pickled batches) or "binary" (fixed-size records)
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: str = "labels"

    @property
    def members(self) -> tuple[str, ...]:
        return (*self.train, self.test, self.meta)


_LAYOUTS = (
    _Layout("cifar-10-batches-py", "cifar10", "python",
            tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
    _Layout("cifar-10-batches-bin", "cifar10", "binary",
            tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin", "batches.meta.txt"),
    _Layout("cifar-100-python", "cifar100", "python", ("train",), "test", "meta", "fine_labels"),
)
_BY_FOLDER = {layout.folder: layout for layout in _LAYOUTS}
_ROW = 3072  # 32 x 32 pixels x 3 planes, one byte each
_MAX_MEMBER = 512 * 2**20  # bytes; the largest official member (cifar-100 train) is 155 MB
_FIX = "replace it with the official archive from https://www.cs.toronto.edu/~kriz/cifar.html"


def keras_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where keras keeps datasets: ``cache_dir`` else ``$KERAS_HOME`` else
    ``~/.keras``, then ``datasets/``. Downloads land here too."""
    base = cache_dir if cache_dir is not None else os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    return Path(base).expanduser() / "datasets"


def _cache_candidates(dataset: str, cache: Path) -> list[Path]:
    """Archives first (their checksum says whether they are official), then
    folders: ours, keras >= 3.6's, the older keras layout."""
    if dataset == "cifar10":
        return [cache / "cifar-10-python.tar.gz", cache / "cifar-10-batches-py-target_archive",
                cache / "cifar-10-batches-py.tar.gz", cache / "cifar-10-binary.tar.gz",
                cache / "cifar-10-batches-py-target" / "cifar-10-batches-py", cache / "cifar-10-batches-py",
                cache / "cifar-10-batches-bin"]
    return [cache / "cifar-100-python.tar.gz", cache / "cifar-100-python-target_archive",
            cache / "cifar-100-python-target" / "cifar-100-python", cache / "cifar-100-python"]


# ------------------------------------------------------------ parsing
def _decode_keys(where: str, obj) -> dict:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a pickled dict, found {type(obj).__name__}; {_FIX}")
    out = {}
    for k, v in obj.items():
        if isinstance(k, bytes):
            k = k.decode("latin-1")
        if not isinstance(k, str):
            raise DataError(f"{where}: unexpected key {k!r}; {_FIX}")
        out[k] = v
    return out


def _unpickle(where: str, data: bytes) -> dict:
    from vggcifar import safepickle

    try:
        obj = safepickle.loads(data)
    except safepickle.UnsafePickleError as exc:
        raise DataError(f"{where}: {exc}; refusing to load it (not an official CIFAR file)") from None
    except Exception as exc:  # a damaged stream raises any of a dozen types; nothing ran
        raise DataError(f"{where}: not a readable CIFAR pickle ({type(exc).__name__}: {exc}); {_FIX}") from None
    return _decode_keys(where, obj)


def _labels(where: str, value, key: str, n: int) -> np.ndarray:
    if isinstance(value, np.ndarray | list | tuple):
        arr = np.asarray(value) if len(value) else np.zeros(0, np.int64)
        if arr.ndim == 1 and arr.dtype.kind in "iu" and len(arr) == n:
            return arr.astype(np.int64, copy=False)
        if arr.ndim == 1 and arr.dtype.kind in "iu":
            raise DataError(f"{where}: {n} images but {len(arr)} {key}; the file is damaged, {_FIX}")
    raise DataError(f"{where}: `{key}` must be a list of integers, one per image; {_FIX}")


def _python_batch(where: str, data: bytes, label_key: str):
    d = _unpickle(where, data)
    rows = d.get("data")
    if not isinstance(rows, np.ndarray):
        raise DataError(f"{where}: no `data` array; {_FIX}")
    if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != _ROW:
        raise DataError(f"{where}: `data` is {rows.dtype} {rows.shape}, expected uint8 (N, {_ROW}); {_FIX}")
    n = len(rows)
    if label_key not in d:
        raise DataError(f"{where}: no `{label_key}`; {_FIX}")
    labels = _labels(where, d[label_key], label_key, n)
    coarse = _labels(where, d["coarse_labels"], "coarse_labels", n) if "coarse_labels" in d else None
    if "filenames" in d and (not isinstance(d["filenames"], list) or len(d["filenames"]) != n):
        raise DataError(f"{where}: {n} images but a different number of `filenames`; {_FIX}")
    return rows, labels, coarse


def _names(where: str, value, key: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, bytes | str) for v in value):
        raise DataError(f"{where}: `{key}` must be a non-empty list of strings; {_FIX}")
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]


def _python_meta(where: str, data: bytes, layout: _Layout) -> tuple[list[str], list[str] | None]:
    d = _unpickle(where, data)
    if layout.dataset == "cifar100":
        coarse = _names(where, d["coarse_label_names"], "coarse_label_names") if "coarse_label_names" in d else None
        return _names(where, d.get("fine_label_names"), "fine_label_names"), coarse
    return _names(where, d.get("label_names"), "label_names"), None


def _binary_batch(where: str, data: bytes):
    if len(data) % (_ROW + 1):
        raise DataError(f"{where}: {len(data)} bytes is not a whole number of {_ROW + 1}-byte records "
                        f"(truncated?); {_FIX}")
    records = np.frombuffer(data, np.uint8).reshape(-1, _ROW + 1)
    return records[:, 1:], records[:, 0].astype(np.int64), None


def _binary_meta(where: str, data: bytes) -> tuple[list[str], None]:
    try:
        names = [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        names = []
    if not names:
        raise DataError(f"{where}: expected one class name a line; {_FIX}")
    return names, None


def _channels_last(rows: np.ndarray) -> np.ndarray:
    """CIFAR rows (R plane, G plane, B plane) as a (N, 32, 32, 3) view."""
    return rows.reshape(len(rows), 3, 32, 32).transpose(0, 2, 3, 1)


class _Split:
    """One split's batches. The official batches are all the same size, so
    each is copied straight to its place in the output as it arrives and its
    bytes freed: one copy of the pixels in memory, not two. Batches of
    uneven size (small hand-made sets) are kept and joined at the end."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self.x: np.ndarray | None = None  # the output, allocated at the first batch
        self.size: int | None = None  # images per batch, from the first batch
        self.parts: dict[str, tuple] = {}  # name -> (where, labels, coarse, rows not yet placed)

    def put(self, name: str, where: str, rows: np.ndarray, labels: np.ndarray, coarse) -> None:
        i, n = self.names.index(name), len(rows)
        if self.size is None and n:
            self.size = n
            self.x = np.empty((n * len(self.names), 32, 32, 3), np.uint8)
        if n and n == self.size:
            self.x[i * n:(i + 1) * n] = _channels_last(rows)
            rows = None
        self.parts[name] = (where, labels, coarse, rows)

    def finish(self, num_classes: int, coarse_classes: int | None):
        parts = [self.parts.pop(n) for n in self.names]
        for where, labels, coarse, _ in parts:
            for key, lab, k in (("label", labels, num_classes), ("coarse label", coarse, coarse_classes)):
                if lab is None or not len(lab) or k is None:
                    continue
                if lab.min() < 0 or lab.max() >= k:
                    bad = lab.min() if lab.min() < 0 else lab.max()
                    raise DataError(f"{where}: {key} {bad} outside the {k} classes 0..{k - 1}; "
                                    f"the file is damaged, {_FIX}")
        y = np.concatenate([p[1] for p in parts])
        c = np.concatenate([p[2] for p in parts]) if all(p[2] is not None for p in parts) else None
        if all(p[3] is None for p in parts):
            return self.x, y, c
        x = np.empty((len(y), 32, 32, 3), np.uint8)
        start = 0
        for i, (_, labels, _, rows) in enumerate(parts):
            n = len(labels)
            x[start:start + n] = _channels_last(rows) if rows is not None else self.x[i * n:(i + 1) * n]
            start += n
        return x, y, c


class _Collector:
    """The members of one layout as they arrive, in any order, each parsed
    at once so that only one member's bytes are held at a time."""

    def __init__(self, layout: _Layout, where: str, archive: bool):
        self.layout, self.where, self.archive = layout, where, archive
        self.train, self.test = _Split(layout.train), _Split((layout.test,))
        self.meta: tuple[list[str], list[str] | None] | None = None

    def add(self, name: str, data: bytes | bytearray) -> None:
        # Errors name the member inside the archive, or the file in the folder.
        where = f"{self.where}:{self.layout.folder}/{name}" if self.archive else f"{self.where}/{name}"
        binary = self.layout.format == "binary"
        if name == self.layout.meta:
            self.meta = _binary_meta(where, data) if binary else _python_meta(where, data, self.layout)
            return
        rows, labels, coarse = (_binary_batch(where, data) if binary
                                else _python_batch(where, data, self.layout.label_key))
        (self.test if name == self.layout.test else self.train).put(name, where, rows, labels, coarse)

    def missing(self) -> list[str]:
        have = set(self.train.parts) | set(self.test.parts) | ({self.layout.meta} if self.meta else set())
        return [m for m in self.layout.members if m not in have]

    def finish(self) -> dict:
        missing = self.missing()
        if missing:
            prefix = f"{self.layout.folder}/" if self.archive else ""
            raise DataError(f"{self.where}: missing {prefix}{missing[0]}"
                            f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}; "
                            f"the data is incomplete, {_FIX}")
        names, coarse_names = self.meta
        k, kc = len(names), (len(coarse_names) if coarse_names else None)
        x_train, y_train, c_train = self.train.finish(k, kc)
        x_test, y_test, c_test = self.test.finish(k, kc)
        if not len(x_train) or not len(x_test):
            raise DataError(f"{self.where}: no {'training' if not len(x_train) else 'test'} images; {_FIX}")
        extra = {"format": self.layout.format}
        if c_train is not None and c_test is not None:
            extra.update(coarse_class_names=coarse_names, y_train_coarse=c_train, y_test_coarse=c_test)
        return dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, class_names=names,
                    name=self.layout.dataset, extra=extra)


class _HashingReader:
    """A file read once, front to back, hashed as it goes."""

    def __init__(self, f):
        self.f = f
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        self.sha256.update(b)
        self.md5.update(b)
        return b


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytearray | None:
    """The member's bytes, read in 1 MiB steps into one buffer (tarfile's own
    read() of a whole member briefly holds three copies of it); None when
    the archive ends first."""
    f = tar.extractfile(info)
    buf = bytearray(info.size)
    view, pos = memoryview(buf), 0
    while pos < info.size:
        chunk = f.read(min(2**20, info.size - pos))
        if not chunk:
            return None
        view[pos:pos + len(chunk)] = chunk
        pos += len(chunk)
    del view
    return buf


def _member_name(archive: str, info: tarfile.TarInfo) -> str:
    name = info.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or ".." in parts or ":" in (parts[0] if parts else ""):
        raise DataError(f"{archive}: member {name!r} points outside the archive; refusing the archive "
                        f"(it is not an official CIFAR archive), {_FIX}")
    return "/".join(p for p in parts if p != ".")


def _read_archive(path: Path) -> tuple[dict, str, str]:
    """Stream the archive once: members parsed as they come, never written to
    disk; the file's sha256 and md5 computed on the same pass."""
    where = str(path)
    collector: _Collector | None = None
    seen: set[str] = set()
    with open(path, "rb") as raw:
        reader = _HashingReader(raw)
        head = raw.read(2)
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=reader, mode="rb") if head == b"\x1f\x8b" else reader
        try:
            with tarfile.open(fileobj=stream, mode="r|", bufsize=2**20) as tar:
                for info in tar:
                    name = _member_name(where, info)
                    if info.isdir():
                        continue
                    if not info.isreg():
                        kind = "symbolic link" if info.issym() else "hard link" if info.islnk() else "special file"
                        raise DataError(f"{where}: member {name!r} is a {kind}, not a regular file; refusing "
                                        f"the archive (links are never followed), {_FIX}")
                    folder, _, base = name.rpartition("/")
                    layout = _BY_FOLDER.get(folder)
                    if layout is None or base not in layout.members:
                        continue  # readme.html and anything else unknown: never read
                    if collector is None:
                        collector = _Collector(layout, where, archive=True)
                    elif layout is not collector.layout:
                        raise DataError(f"{where}: holds both {collector.layout.folder}/ and {folder}/; "
                                        f"pass one dataset's archive")
                    if name in seen:
                        raise DataError(f"{where}: member {name!r} appears twice; {_FIX}")
                    seen.add(name)
                    if info.size > _MAX_MEMBER:
                        raise DataError(f"{where}: member {name!r} is {info.size} bytes, far larger than any "
                                        f"CIFAR file; {_FIX}")
                    data = _read_member(tar, info)
                    if data is None:
                        raise DataError(f"{where}: member {name!r} is cut short (truncated archive); {_FIX}")
                    collector.add(base, data)
                    del data
            while stream.read(2**20):  # to the end: gzip's own length and CRC checks, the whole file hashed
                pass
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise DataError(f"{where}: truncated or damaged archive ({exc}); {_FIX}") from None
    if collector is None:
        raise DataError(f"{where}: no CIFAR members (expected cifar-10-batches-py/, cifar-10-batches-bin/ "
                        f"or cifar-100-python/ inside); pass an official CIFAR archive")
    return collector.finish(), reader.sha256.hexdigest(), reader.md5.hexdigest()


def _layout_in(folder: Path) -> _Layout | None:
    """The layout whose batch files are in ``folder``. A folder named like a
    batch is not one: CIFAR-100's ``train`` and ``test`` files share their
    names with the folders of a folder of class folders."""
    def present(name: str) -> bool:
        path = folder / name
        return path.exists() and not path.is_dir()

    for layout in _LAYOUTS:
        if present(layout.test) or present(layout.train[0]):
            return layout
    return None


def _read_folder(folder: Path, layout: _Layout) -> dict:
    collector = _Collector(layout, str(folder), archive=False)
    for name in layout.members:
        path = folder / name
        try:
            st = path.lstat()
        except FileNotFoundError:
            st = None
        if st is None:
            continue  # reported, with the rest that is missing, by finish()
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
            raise DataError(f"{path}: not a regular file (links are never followed); copy the real file there")
        collector.add(name, path.read_bytes())
    return collector.finish()


def _locate(path: Path, dataset: str | None) -> tuple[Path, _Layout | None]:
    """The archive file (layout None) or the folder of batches that ``path``
    names: the file, the batches folder, or a folder above it."""
    if path.is_file():
        return path, None
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder; pass a CIFAR archive (.tar.gz) or its extracted folder")
    layout = _layout_in(path)
    if layout is not None:
        return path, layout
    wanted = [dataset] if dataset else ["cifar10", "cifar100"]
    for name in wanted:
        for candidate in _cache_candidates(name, path) + _cache_candidates(name, path / "datasets"):
            if candidate.is_file():
                return candidate, None
            if candidate.is_dir() and _layout_in(candidate):
                return candidate, _layout_in(candidate)
    raise DataError(f"{path}: no CIFAR data in this folder (expected data_batch_1..5 and test_batch, "
                    f"the .bin files, or an archive such as cifar-10-python.tar.gz)")


def holds_cifar(path: str | os.PathLike, dataset: str | None = None) -> bool:
    """Whether ``path`` is a file, or a folder that holds CIFAR data as
    ``read_files`` finds it (nothing is read but the names in it)."""
    try:
        _locate(Path(path).expanduser(), dataset)
    except DataError:
        return False
    return True


def _official(sha256: str | None, md5: str | None) -> str | None:
    """The name of the official archive whose bytes these are, if any."""
    for archive in ARCHIVES.values():
        if (archive.sha256 and sha256 == archive.sha256) or (not archive.sha256 and md5 == archive.md5):
            return archive.filename
    return None

def read_files(path: str | os.PathLike, *, dataset: str | None = None, sha256: str | None = None) -> dict:
    """Read CIFAR data from a local ``path``: an official python or binary
    archive, the CIFAR-100 python archive, either one extracted (the batches
    folder or a folder above it, such as the keras cache). Never downloads.

    ``dataset`` ("cifar10" / "cifar100"), when given, must match what is
    there; ``sha256``, when given, must match the archive's bytes.
    Returns the fields of a ``vggcifar.data.CifarData``.
    """
    if dataset not in (None, "cifar10", "cifar100"):
        raise ValueError(f"Expected `dataset` to be 'cifar10' or 'cifar100'. Received: dataset={dataset!r}")
    target, layout = _locate(Path(path).expanduser(), dataset)
    if layout is None:
        fields, got_sha256, md5 = _read_archive(target)
        if sha256 and sha256.lower() != got_sha256:
            raise DataError(f"{target}: sha256 {got_sha256} does not match the expected {sha256.lower()}; "
                            f"pass the right archive or the right hash")
    else:
        if sha256:
            raise DataError(f"{target}: is a folder, so its sha256 cannot be checked; pass the archive instead")
        fields, got_sha256, md5 = _read_folder(target, layout), None, None
    if dataset and fields["name"] != dataset:
        raise DataError(f"{target}: holds {fields['name']}, not the requested {dataset}")
    official = _official(got_sha256, md5)
    fields["extra"].update(md5=md5, container="archive" if layout is None else "folder", official_name=official)
    return {**fields, "source": str(target), "sha256": got_sha256, "official": official is not None}



def find_cached(dataset: str = "cifar10", cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The first CIFAR archive or folder for ``dataset`` in the keras cache."""
    for candidate in _cache_candidates(dataset, keras_cache_dir(cache_dir)):
        if candidate.is_file() or (candidate.is_dir() and _layout_in(candidate)):
            return candidate
    return None
