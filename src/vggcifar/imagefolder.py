"""A folder of class folders as a data set: its layout, its pictures read once and made 32x32, its test split, and its cache.

The convention of ``keras.utils.image_dataset_from_directory`` and
torchvision's ``ImageFolder``. ``ROOT`` holds either ``train/<class>/`` and
``test/<class>/``, or only ``<class>/`` folders, from which a seeded,
stratified share of each class becomes the test set (``test_share``,
``split_seed``; a run records both). Class names are the class folders'
names in sorted order; the same classes must be in ``train/`` and ``test/``.

Every file inside a class folder, in its subfolders too, is read as a
picture by ``vggcifar.images`` (the reader ``predict`` uses: PNG and JPEG by
their content, any size, the decompression-bomb limit) and made 32x32 by its
one resize. A file that is not a readable picture is skipped and named with
its reason: a truncated or damaged file, another format, a picture over the
size limit, a symbolic link (links are never followed, so nothing outside
``ROOT`` is read), anything but a regular file, a file over ``MAX_FILE_BYTES``.
Names that begin with a dot (``.DS_Store``, ``.ipynb_checkpoints``) are
passed over without a word, as ``ls`` does. A class with no readable
picture is an error.

Each file's bytes are read once, hashed and decoded from the same bytes;
the sha256 over every file's path and content keys a cache of the decoded
set (uint8 arrays, ``CACHE_FOLDER`` in the Keras cache), so a folder is
decoded once and read again whenever a file in it is added, removed,
renamed or changed. On a cache hit every file is still read and hashed,
never decoded (for 60,000 PNGs of 32x32, a sixth of a miss's time: docs/data.md).

The images come out in a seeded order (``split_seed``), not class by class,
so a validation split of the last N training images holds every class.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vggcifar.cifarfiles import DataError, keras_cache_dir

#: The two folders of a folder that comes split.
TRAIN_FOLDER, TEST_FOLDER = "train", "test"
#: Without them: the share of each class's pictures held out as its test set.
DEFAULT_TEST_SHARE = 0.2
#: The seed of that split and of the images' order.
DEFAULT_SPLIT_SEED = 0
#: Larger files are skipped unread: no PNG or JPEG within the pixel limit
#: (8192 x 8192) comes near it.
MAX_FILE_BYTES = 512 * 2**20
#: The cache of decoded folders, inside the Keras cache (``keras_cache_dir``).
CACHE_FOLDER = "vggcifar-class-folders"
#: Part of the cache key: raised whenever reading makes other arrays of the same files.
READER_VERSION = 1
#: Seconds between the progress lines of a long read.
PROGRESS_SECONDS = 5.0

_SPLIT, _ONE = "train/ and test/", "test split made here"


@dataclass
class _Listing:
    """The files of a folder of class folders, before any is read."""

    root: Path
    split: bool  # train/ and test/ (True), or class folders in ROOT (False)
    class_names: list[str]
    files: list[tuple[str, int, int]] = field(default_factory=list)  # (path in ROOT, label, part: 0 train, 1 test)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path in ROOT, reason)


def _visible(entries) -> list[os.DirEntry]:
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return _visible(it)
    except OSError as exc:
        raise DataError(f"{folder}: cannot be listed ({exc.strerror or exc}); check its permissions") from None


def _kind(entry: os.DirEntry) -> str:
    """"dir", "file", or why the entry is neither (links are never followed)."""
    if entry.is_symlink():
        return "is a symbolic link; links are never followed: copy the picture itself into the folder"
    if entry.is_dir(follow_symlinks=False):
        return "dir"
    if entry.is_file(follow_symlinks=False):
        return "file"
    return "is not a regular file"


def _class_folders(folder: Path, prefix: str, listing: _Listing) -> dict[str, tuple[str, str]]:
    """The class folders in ``folder`` (``prefix`` its path in ROOT), each as
    (its path, its path in ROOT); what else is there goes to the skipped."""
    classes = {}
    for entry in _entries(folder):
        kind = _kind(entry)
        if kind == "dir":
            classes[entry.name] = (entry.path, f"{prefix}{entry.name}/")
        elif entry.is_symlink() and entry.is_dir():  # meant as a class: refused, not left out unnoticed
            raise DataError(f"{entry.path}: is a symbolic link; links are never followed: put the class "
                            "folder itself there")
        else:
            listing.skipped.append((prefix + entry.name, "is not inside a class folder"))
    return classes


def _walk(folder: str, prefix: str, listing: _Listing, label: int, part: int) -> None:
    """The files under one class folder (``prefix`` its path in ROOT), sorted,
    its subfolders included. Paths in ROOT are joined as text: a folder of
    60,000 pictures is listed in a fraction of a second."""
    for entry in _entries(folder):
        kind = _kind(entry)
        rel = prefix + entry.name
        if kind == "dir":
            _walk(entry.path, rel + "/", listing, label, part)
        elif kind == "file":
            listing.files.append((rel, label, part))
        else:
            listing.skipped.append((rel, kind))


def _list(root: Path) -> _Listing:
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; pass a folder of class folders")
    names = {e.name for e in _entries(root) if _kind(e) == "dir"}
    split = TRAIN_FOLDER in names or TEST_FOLDER in names
    if split and not {TRAIN_FOLDER, TEST_FOLDER} <= names:
        have, lack = (TRAIN_FOLDER, TEST_FOLDER) if TRAIN_FOLDER in names else (TEST_FOLDER, TRAIN_FOLDER)
        raise DataError(f"{root}: has {have}/ but no {lack}/; add {lack}/<class>/ folders, or put the class "
                        "folders directly in it for a test split made here")
    listing = _Listing(root, split, [])
    if split:
        parts = {}
        for entry in _entries(root):
            if entry.name in (TRAIN_FOLDER, TEST_FOLDER):
                parts[entry.name] = _class_folders(Path(entry.path), f"{entry.name}/", listing)
            elif _kind(entry) == "dir":
                listing.skipped.append((entry.name, "is neither train/ nor test/: not read"))
            else:
                listing.skipped.append((entry.name, "is not inside a class folder"))
        train, test = parts[TRAIN_FOLDER], parts[TEST_FOLDER]
        if not train:
            raise DataError(f"{root / TRAIN_FOLDER}: no class folders in it; put each class's pictures in "
                            f"{TRAIN_FOLDER}/<class>/")
        if set(train) != set(test):
            only_train, only_test = sorted(set(train) - set(test)), sorted(set(test) - set(train))
            what = "; ".join(s for s in (f"only in {TRAIN_FOLDER}/: {', '.join(only_train)}" if only_train else "",
                                         f"only in {TEST_FOLDER}/: {', '.join(only_test)}" if only_test else "") if s)
            raise DataError(f"{root}: the test classes differ from the training classes ({what}); "
                            "give both folders the same class folders")
        listing.class_names = sorted(train)
        for part, folders in ((0, train), (1, test)):
            for label, name in enumerate(listing.class_names):
                _walk(*folders[name], listing, label, part)
    else:
        classes = _class_folders(root, "", listing)
        if not classes:
            raise DataError(f"{root}: no class folders in it; put each class's pictures in a folder named "
                            "after the class")
        listing.class_names = sorted(classes)
        for label, name in enumerate(listing.class_names):
            _walk(*classes[name], listing, label, 0)
    return listing


def _read_bytes(path: str) -> bytes:
    """A regular file's bytes; never through a link (O_NOFOLLOW) and never
    blocking on a pipe put there meanwhile. OSError, or ValueError with the reason."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("is not a regular file")
        too_large = f"more than the {MAX_FILE_BYTES:,} of any picture this reader accepts"
        if st.st_size > MAX_FILE_BYTES:  # refused unread
            raise ValueError(f"is {st.st_size:,} bytes, {too_large}")
        # Its size, and a byte more to see it grow: a read of the limit would allocate the limit.
        data = f.read(st.st_size + 1)
        if len(data) > st.st_size:  # written to meanwhile: as far as the limit
            data += f.read(MAX_FILE_BYTES + 1 - len(data))
            if len(data) > MAX_FILE_BYTES:
                raise ValueError(f"grew past {MAX_FILE_BYTES:,} bytes while being read, {too_large}")
        return data


class _Progress:
    """A line every PROGRESS_SECONDS while a long read goes on: none for a short one."""

    def __init__(self, stream, what: str, total: int):
        self.stream, self.what, self.total = stream, what, total
        self.start = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if self.stream is None or now - self.last < PROGRESS_SECONDS:
            return
        self.last = now
        self.stream.write(f"{self.what}: {done:,} of {self.total:,} files ({100 * done // self.total}%), "
                          f"{now - self.start:.0f} s\n")
        self.stream.flush()


def _stream(progress):
    if progress is True:
        return sys.stderr
    return progress if hasattr(progress, "write") else None


def _hash_files(listing: _Listing, progress) -> tuple[str, dict[str, str], dict[str, str]]:
    """The folder's content key, each file's sha256, and the files that cannot be read (with why)."""
    # Fields joined by NUL, which no file name holds: no two listings give the same text.
    folder = hashlib.sha256(json.dumps([READER_VERSION, listing.split, listing.class_names]).encode())
    root = str(listing.root)
    hashes, unreadable = {}, {}
    bar = _Progress(_stream(progress), f"hashing {listing.root}", len(listing.files))
    for i, (rel, label, part) in enumerate(listing.files):
        try:
            digest = hashlib.sha256(_read_bytes(os.path.join(root, rel))).hexdigest()
        except OSError as exc:
            unreadable[rel] = f"cannot be read ({exc.strerror or exc})"
            digest = "unreadable"
        except ValueError as exc:
            unreadable[rel] = str(exc)
            digest = "unreadable"
        hashes[rel] = digest
        folder.update(f"\0file\0{rel}\0{label}\0{part}\0{digest}".encode("utf-8", "surrogateescape"))
        bar.update(i + 1)
    for rel, reason in listing.skipped:
        folder.update(f"\0skipped\0{rel}\0{reason}".encode("utf-8", "surrogateescape"))
    return folder.hexdigest(), hashes, unreadable


def _decode_all(listing: _Listing, hashes: dict[str, str], unreadable: dict[str, str], progress) -> dict:
    """Every file decoded and made 32x32; the arrays a cache entry holds."""
    from vggcifar.images import INPUT_SIZE, ImageError, decode_image, to_model_input

    x = np.empty((len(listing.files), *INPUT_SIZE, 3), np.uint8)
    keep = np.zeros(len(listing.files), bool)
    skipped = dict(unreadable)
    bar = _Progress(_stream(progress), f"reading {listing.root}", len(listing.files))
    for i, (rel, _, _) in enumerate(listing.files):
        bar.update(i)
        if rel in unreadable:
            continue
        try:
            data = _read_bytes(os.path.join(listing.root, rel))
        except (OSError, ValueError) as exc:
            skipped[rel] = f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
            continue
        if hashlib.sha256(data).hexdigest() != hashes[rel]:
            raise DataError(f"{listing.root / rel}: changed while the folder was being read; run the command "
                            "again once the folder is still")
        try:
            x[i] = to_model_input([decode_image(data, rel)], INPUT_SIZE)[0]
            keep[i] = True
        except ImageError as exc:
            skipped[rel] = str(exc).removeprefix(f"{rel}: ")
    files = [f for f, k in zip(listing.files, keep) if k]
    every_skip = [*listing.skipped, *((rel, skipped[rel]) for rel, _, _ in listing.files if rel in skipped)]
    return {
        "x": x[keep],
        "y": np.array([label for _, label, _ in files], np.int64),
        "part": np.array([part for _, _, part in files], np.int8),
        "class_names": np.array(listing.class_names, dtype=str),
        "skipped_files": np.array([rel for rel, _ in every_skip], dtype=str),
        "skipped_reasons": np.array([why for _, why in every_skip], dtype=str),
        "counts": np.array([[sum(1 for _, lab, p in listing.files if lab == c and p == part)
                             for c in range(len(listing.class_names))] for part in (0, 1)], np.int64),
    }


def cache_path(key: str, cache_dir=None) -> Path:
    """The cache entry of the folder whose content key is ``key``."""
    return keras_cache_dir(cache_dir) / CACHE_FOLDER / f"{key}.npz"


def _load_cached(path: Path) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # missing, or damaged: read the folder again
        return None


def _store(path: Path, arrays: dict) -> None:
    from vggcifar import fsutil

    try:
        with fsutil.atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    except OSError:  # a cache that cannot be written costs the next run a read, nothing more
        pass


def _check_classes(root: Path, split: bool, names: list[str], counts: np.ndarray, y: np.ndarray,
                   part: np.ndarray, skipped: dict[str, str]) -> None:
    """A class with no readable picture, in a part that must hold it, is an error."""
    for p, folder in ((0, TRAIN_FOLDER), (1, TEST_FOLDER)) if split else ((0, None),):
        for c, name in enumerate(names):
            if np.any((y == c) & (part == p)):
                continue
            where = root / folder / name if folder else root / name
            prefix = f"{folder}/{name}/" if folder else f"{name}/"
            bad = [(f, why) for f, why in skipped.items() if f.startswith(prefix)]
            detail = (f"none of its {counts[p][c]} files is a readable picture (first: {root / bad[0][0]}: {bad[0][1]})"
                      if bad else "it holds no pictures")
            raise DataError(f"{where}: {detail}; put PNG or JPEG pictures of '{name}' in it, or remove the folder")


def _split(y: np.ndarray, num_classes: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """True for the images held out for testing: of each class of ``n`` images,
    round(share * n), at least one and at most n - 1 (none of a class of one)."""
    test = np.zeros(len(y), bool)
    for c in range(num_classes):
        members = np.flatnonzero(y == c)
        n = len(members)
        k = min(n - 1, max(1, round(share * n))) if n > 1 else 0
        test[rng.permutation(members)[:k]] = True
    return test


def check_share(test_share: float) -> float:
    if not isinstance(test_share, int | float) or isinstance(test_share, bool) or not 0 < test_share < 1:
        raise ValueError(f"Expected `test_share` to be a number between 0 and 1 (the share of each class "
                         f"held out for testing). Received: test_share={test_share!r}")
    return float(test_share)


def read_class_folders(root, *, test_share: float | None = None, split_seed: int | None = None,
                       sha256: str | None = None, cache_dir=None, progress=True) -> dict:
    """Read the folder of class folders ``root`` (see the module's notes).
    ``test_share`` and ``split_seed`` make the test split of a folder without
    ``train/`` and ``test/`` (defaults ``DEFAULT_TEST_SHARE``, ``DEFAULT_SPLIT_SEED``);
    ``sha256``, when given, must match the folder's content key; ``cache_dir``
    as for ``keras_cache_dir``; ``progress`` as for ``vggcifar.data.load_cifar``
    (lines, not a bar). Returns the fields of a ``vggcifar.data.CifarData``."""
    root = Path(root).expanduser()
    share = check_share(DEFAULT_TEST_SHARE if test_share is None else test_share)
    seed = DEFAULT_SPLIT_SEED if split_seed is None else split_seed
    listing = _list(root)
    if not listing.files:
        raise DataError(f"{root}: its class folders hold no files; put PNG or JPEG pictures in them")
    key, hashes, unreadable = _hash_files(listing, progress)
    if sha256 and sha256.lower() != key:
        raise DataError(f"{root}: content sha256 {key} does not match the expected {sha256.lower()}; "
                        "pass the right folder or the right hash")
    path = cache_path(key, cache_dir)
    arrays = _load_cached(path)
    cached = arrays is not None
    if not cached:
        arrays = _decode_all(listing, hashes, unreadable, progress)
        _store(path, arrays)
    names = [str(n) for n in arrays["class_names"]]
    skipped = dict(zip(map(str, arrays["skipped_files"]), map(str, arrays["skipped_reasons"])))
    x, y, part = arrays["x"], arrays["y"], arrays["part"]
    _check_classes(root, listing.split, names, arrays["counts"], y, part, skipped)
    rng = np.random.default_rng(seed)
    test = part == 1 if listing.split else _split(y, len(names), share, rng)
    # A seeded order, not class by class: a held-out tail of the training set holds every class.
    train_idx, test_idx = rng.permutation(np.flatnonzero(~test)), rng.permutation(np.flatnonzero(test))
    if not len(test_idx):
        raise DataError(f"{root}: no class has two readable pictures, so none can be held out for testing; "
                        "add pictures, or give a test/ folder beside train/")
    extra = {
        "format": "class folders",
        "container": "folder",
        "layout": _SPLIT if listing.split else _ONE,
        "skipped": [{"file": str(root / f), "reason": why} for f, why in skipped.items()],
        "cache": str(path),
        "cached": cached,
    }
    if not listing.split:
        extra["test_share"] = share
    extra["split_seed"] = seed
    return dict(x_train=x[train_idx], y_train=y[train_idx], x_test=x[test_idx], y_test=y[test_idx],
                class_names=names, name=root.resolve().name or str(root), source=str(root), sha256=key,
                extra=extra)


def is_class_folders(path) -> bool:
    """Whether ``path`` is a folder with a folder in it (not a dot-folder):
    what a folder of class folders looks like. ``vggcifar.data`` asks the
    CIFAR reader first."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return False
    with contextlib.suppress(OSError, DataError):
        return any(_kind(e) == "dir" for e in _entries(path))
    return False
