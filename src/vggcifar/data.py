"""The datasets a run trains on: their in-memory form, class names, the synthetic set, and where each comes from (a local CIFAR path, a folder of class folders, the keras cache, a download).

Images stay uint8, shape (N, 32, 32, 3), channels-last; labels are 1-D int
arrays. Scaling to [0, 1] happens inside the model, so no float copy of a
whole set is ever made.

Entry points: ``load_dataset`` (what ``--data`` / ``--dataset`` ask for),
``load_source`` (the same from a run's record), ``read_path`` (a local CIFAR
archive or folder, or a folder of class folders), ``load_cifar`` (local path,
keras cache, or download), ``read_cifar`` (local CIFAR only), ``load_synthetic``.
The official files themselves, and their safe parsing, are
``vggcifar.cifarfiles``; folders of class folders, ``vggcifar.imagefolder``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import numpy as np

from vggcifar.cifarfiles import (ARCHIVES, SHA256_ENV, URL_ENV, DataError, find_cached, holds_cifar, keras_cache_dir,
                                 read_files)
from vggcifar import imagefolder

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]
#: CIFAR-100's 100 fine labels in label order: the ``fine_label_names`` of
#: the official archive's ``meta`` file (alphabetical there too).
CIFAR100_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
]
DATASETS = ("cifar10", "cifar100", "synthetic")


def class_names_for(num_classes: int) -> list[str]:
    """Names for a model's outputs when only their count is known: CIFAR-10's
    for 10, CIFAR-100's (fine labels) for 100, otherwise "class N"."""
    if num_classes == len(CIFAR10_CLASSES):
        return list(CIFAR10_CLASSES)
    if num_classes == len(CIFAR100_CLASSES):
        return list(CIFAR100_CLASSES)
    return [f"class {i}" for i in range(num_classes)]


@dataclass(frozen=True)
class CifarData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    name: str = "cifar10"
    source: str | None = None  # path or URL the data came from
    sha256: str | None = None  # of the archive, where there was one
    official: bool = False  # bytes equal to the official archive
    synthetic: bool = False
    subset: dict | None = None  # {"train": n, "test": n} when limited
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_folders(self) -> bool:
        """Read from a folder of class folders (vggcifar.imagefolder)."""
        return self.extra.get("format") == "class folders"

    @property
    def skipped(self) -> list[dict]:
        """The files of a folder of class folders that are not readable
        pictures, each as {"file", "reason"}; [] for every other source."""
        return list(self.extra.get("skipped", []))

    def limit(self, train: int | None = None, test: int | None = None) -> "CifarData":
        """The first ``train`` / ``test`` images (views, no copies)."""
        if train is None and test is None:
            return self
        for label, n in (("limit_train", train), ("limit_test", test)):
            if n is not None and n < 1:
                raise ValueError(f"Expected `{label}` to be a positive integer. Received: {label}={n!r}")
        ntr = len(self.x_train) if train is None else min(train, len(self.x_train))
        nte = len(self.x_test) if test is None else min(test, len(self.x_test))
        return dataclasses.replace(
            self,
            x_train=self.x_train[:ntr], y_train=self.y_train[:ntr],
            x_test=self.x_test[:nte], y_test=self.y_test[:nte],
            subset={"train": ntr, "test": nte},
        )

    def describe(self) -> dict:
        """Where the data came from, for environment.json and reports."""
        folders = {}
        if self.class_folders:
            folders = {k: self.extra.get(k) for k in ("format", "layout", "test_share", "split_seed")}
            folders["skipped_files"] = len(self.skipped)
        return {**folders,
            "name": self.name,
            "source": self.source,
            "sha256": self.sha256,
            "official": self.official,
            "synthetic": self.synthetic,
            "subset": self.subset,
            "train_images": int(len(self.x_train)),
            "test_images": int(len(self.x_test)),
            "num_classes": self.num_classes,
        }


SYNTHETIC_CLASSES = [
    "disc", "square", "ring", "cross", "h-bar",
    "v-bar", "diagonal", "triangle", "checker", "dots",
]


def _masks() -> np.ndarray:
    """Ten 32x32 boolean shapes, one per synthetic class."""
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32) - 15.5
    r = np.hypot(yy, xx)
    m = np.zeros((10, 32, 32), bool)
    m[0] = r < 9
    m[1] = (abs(yy) < 8) & (abs(xx) < 8)
    m[2] = (r > 7) & (r < 11)
    m[3] = (abs(yy) < 3) | (abs(xx) < 3)
    m[4] = abs(yy) < 4
    m[5] = abs(xx) < 4
    m[6] = abs(yy - xx) < 4
    m[7] = (yy > -8) & (yy < 8) & (abs(xx) < (yy + 8) / 2 + 1)
    m[8] = ((np.floor((yy + 16) / 8) + np.floor((xx + 16) / 8)) % 2) == 0
    m[9] = ((np.round(yy) % 8) < 3) & ((np.round(xx) % 8) < 3)
    return m


def _synthetic_split(n: int, rng: np.random.Generator, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 10, size=n)
    # Class colour, jittered per image, on a noisy background of another hue.
    palette = np.array(
        [[230, 60, 50], [60, 200, 70], [70, 90, 230], [220, 200, 60], [200, 70, 200],
         [60, 200, 210], [240, 140, 40], [140, 240, 140], [150, 110, 70], [240, 240, 240]],
        np.float32,
    )
    x = np.empty((n, 32, 32, 3), np.uint8)
    chunk = 4096  # bounded float scratch memory whatever n is
    for start in range(0, n, chunk):
        lab = labels[start:start + chunk]
        k = len(lab)
        shifts = rng.integers(-3, 4, size=(k, 2))
        mask = np.stack([np.roll(masks[c], tuple(s), axis=(0, 1)) for c, s in zip(lab, shifts)])
        fg = palette[lab] + rng.normal(0, 25, (k, 3))
        bg = rng.uniform(0, 255, (k, 3)) * 0.5 + 40
        img = np.where(mask[..., None], fg[:, None, None, :], bg[:, None, None, :])
        img += rng.normal(0, 30, img.shape)
        x[start:start + k] = np.clip(img, 0, 255).astype(np.uint8)
    return x, labels.astype(np.int64)


def load_synthetic(train: int = 50000, test: int = 10000, seed: int = 0) -> CifarData:
    """A deterministic, learnable CIFAR-shaped set: ten classes of shapes with
    class colours, random shifts and pixel noise. Same seed, same bytes."""
    if train < 1 or test < 1:
        raise ValueError(f"Expected positive image counts. Received: train={train}, test={test}")
    masks = _masks()
    x_train, y_train = _synthetic_split(train, np.random.default_rng([seed, 0]), masks)
    x_test, y_test = _synthetic_split(test, np.random.default_rng([seed, 1]), masks)
    return CifarData(
        x_train, y_train, x_test, y_test, list(SYNTHETIC_CLASSES),
        name="synthetic", source=f"synthetic(seed={seed})", synthetic=True,
    )


def read_cifar(path: str | os.PathLike, *, dataset: str | None = None, sha256: str | None = None) -> CifarData:
    """Read CIFAR data from a local ``path``: an official python or binary
    archive, the CIFAR-100 python archive, either one extracted (the batches
    folder or a folder above it, such as the keras cache). Never downloads.

    ``dataset`` ("cifar10" / "cifar100"), when given, must match what is
    there; ``sha256``, when given, must match the archive's bytes.
    """
    return CifarData(**read_files(path, dataset=dataset, sha256=sha256))


def read_path(path: str | os.PathLike, *, sha256: str | None = None, test_share: float | None = None,
              split_seed: int | None = None, cache_dir: str | os.PathLike | None = None,
              progress=True) -> CifarData:
    """The data at a local ``path``: a CIFAR archive or its extracted folder
    (``read_cifar``), else a folder of class folders (``vggcifar.imagefolder``:
    ``test_share`` and ``split_seed`` make its test split when it has no
    ``test/``; decoded once into a cache in ``cache_dir``'s Keras cache).
    ``sha256``, when given, must match the archive's bytes or the folder's
    content hash. Never downloads."""
    if not holds_cifar(path) and imagefolder.is_class_folders(path):
        return CifarData(**imagefolder.read_class_folders(path, sha256=sha256, test_share=test_share,
                                                          split_seed=split_seed, cache_dir=cache_dir,
                                                          progress=progress))
    if test_share is not None:
        raise DataError(f"{path}: --data-test-share splits a folder of class folders; this is CIFAR data, "
                        "which has its own test set: drop the option")
    return read_cifar(path, sha256=sha256)


def load_cifar(source: str | os.PathLike | None = None, *, dataset: str | None = None, url: str | None = None,
               sha256: str | None = None, cache_dir: str | os.PathLike | None = None, progress=True,
               download: bool = True, retries: int = 3, timeout: float = 60.0) -> CifarData:
    """CIFAR-10 or CIFAR-100 as uint8 (N, 32, 32, 3) images and 1-D int labels.

    ``source`` is a local archive or folder (see ``read_cifar``). Without one,
    the keras cache (``cache_dir`` else ``$KERAS_HOME`` else ``~/.keras``,
    ``/datasets/``) is searched in every layout keras has used; when nothing
    is there and ``download`` is true, the official archive is downloaded
    into that cache (see ``vggcifar.download.fetch``), verified, and read.

    A mirror: ``url`` (else ``$VGGCIFAR_CIFAR10_URL`` / ``$VGGCIFAR_CIFAR100_URL``)
    and its ``sha256`` (else ``$VGGCIFAR_CIFAR10_SHA256`` / ``$VGGCIFAR_CIFAR100_SHA256``,
    else the official checksums). ``progress``: True draws a bar on stderr
    when it is a terminal, a file object draws it there, False never.
    """
    if source is not None:
        return read_cifar(source, dataset=dataset, sha256=sha256)
    dataset = dataset or "cifar10"
    if dataset not in ("cifar10", "cifar100"):
        raise ValueError(f"Expected `dataset` to be 'cifar10' or 'cifar100'. Received: dataset={dataset!r}")
    found = find_cached(dataset, cache_dir)
    archive = ARCHIVES[dataset]
    target = keras_cache_dir(cache_dir) / archive.filename
    if found is None and not download:
        raise DataError(f"no {dataset} in the keras cache {target.parent}; put {archive.filename} there "
                        f"or pass it with --data PATH")
    if found is None:
        from vggcifar.download import DownloadError, fetch

        env_sha = os.environ.get(SHA256_ENV[dataset])
        expected = sha256 or env_sha
        try:
            found = fetch(
                url or os.environ.get(URL_ENV[dataset]) or archive.url, target,
                sha256=expected or archive.sha256, md5=None if expected else archive.md5,
                retries=retries, timeout=timeout, progress=progress,
                hint=f"put {archive.filename} at {target} or pass it with --data PATH",
                hash_hint=f"for a mirror of another file give its sha256 with --data-sha256 or {SHA256_ENV[dataset]}",
            )
        except DownloadError as exc:
            raise DataError(str(exc)) from None
        sha256 = expected or archive.sha256
    return read_cifar(found, dataset=dataset, sha256=sha256 if found.is_file() else None)


def load_dataset(data: str | os.PathLike | None = None, dataset: str | None = "cifar10", *,
                 synthetic_train: int | None = None, synthetic_test: int | None = None, seed: int = 0,
                 limit_train: int | None = None, limit_test: int | None = None, test_share: float | None = None,
                 split_seed: int | None = None, **kwargs) -> CifarData:
    """What ``--data PATH`` / ``--dataset NAME`` ask for: a local CIFAR path
    or folder of class folders (``read_path``), the synthetic set (of any
    size), or CIFAR from the cache or a download; then its first
    ``limit_train`` / ``limit_test`` images. The synthetic set is made at the
    limited size (default 50,000 + 10,000). ``kwargs`` go to ``load_cifar``."""
    dataset = dataset or "cifar10"
    if data is not None:
        local = {k: kwargs[k] for k in ("sha256", "cache_dir", "progress") if k in kwargs}
        loaded = read_path(data, test_share=test_share, split_seed=split_seed, **local)
    elif test_share is not None:
        raise ValueError(f"--data-test-share splits a folder of class folders given with --data; the {dataset} "
                         "set has its own test set: drop the option")
    elif dataset == "synthetic":
        loaded = load_synthetic(synthetic_train or limit_train or 50000, synthetic_test or limit_test or 10000, seed)
    elif dataset not in DATASETS:
        raise ValueError(f"Expected `dataset` in {DATASETS}. Received: dataset={dataset!r}")
    else:
        loaded = load_cifar(None, dataset=dataset, **kwargs)
    if limit_train is None and limit_test is None:
        return loaded
    return loaded.limit(limit_train, limit_test)


def data_source(data=None, dataset: str | None = None, url: str | None = None, sha256: str | None = None,
                test_share: float | None = None) -> dict:
    """Where a run's data comes from, as run.json keeps it and ``load_source``
    reads it: ``data`` (a local path), ``dataset`` (a name), a mirror's ``url``
    and the archive's (or a folder of class folders') expected ``sha256``; a
    folder of class folders' ``test_share`` when given; None: not given."""
    source = {"data": None if data is None else os.fspath(data), "dataset": dataset, "url": url, "sha256": sha256}
    if test_share is not None:
        source["test_share"] = test_share
    return source


def load_source(source: dict, **kwargs) -> CifarData:
    """``load_dataset`` for a data source (``data_source``: the command line's
    data options, or what a run wrote to its run.json, with a folder of class
    folders' ``test_share`` and ``split_seed``; missing keys: the defaults).
    ``kwargs`` go to ``load_dataset``."""
    return load_dataset(source.get("data"), source.get("dataset"), url=source.get("url"),
                        sha256=source.get("sha256"), test_share=source.get("test_share"),
                        split_seed=source.get("split_seed"), **kwargs)


def settled_source(source: dict, data: CifarData) -> dict:
    """The data source ``source`` with what its loading settled written in:
    a folder of class folders' test share and split seed, so that a resumed
    run and `evaluate RUN_DIR` split the folder as this run did."""
    if not data.class_folders:
        return dict(source)
    settled = {**source, "split_seed": data.extra["split_seed"]}
    if "test_share" in data.extra:
        settled["test_share"] = data.extra["test_share"]
    return settled
