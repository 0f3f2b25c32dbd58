"""Every fact about the datasets: their in-memory form and the synthetic set.

Images stay uint8, shape (N, 32, 32, 3), channels-last; labels are 1-D int
arrays. Scaling to [0, 1] happens inside the model, so no float copy of a
whole set is ever made.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]
DATASETS = ("cifar10", "cifar100", "synthetic")


class DataError(ValueError):
    """A dataset that cannot be used; the message names the file and the fix."""


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
        return {
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
