"""Real images for calibrating the recipes offline: scikit-learn's handwritten digits as a small CIFAR archive or PNG class folders, plain or made hard.

``sklearn.datasets.load_digits`` ships with scikit-learn (no download): 1,797
scanned handwritten digits, 8x8 greyscale with 17 grey levels (0-16), ten
classes. Each is upscaled to 32x32 (bilinear), spread to 0-255, copied into
the three colour planes, split stratified with a fixed seed into 1,397
training and 400 test images, and written in CIFAR-10's python layout by
``vggcifar.fixtures``, so every command reads it with ``--data``::

    PYTHONPATH=src python benchmarks/digits.py /tmp/digits.tar.gz
    vggcifar train --data /tmp/digits.tar.gz --recipe vgg16-bn --batch-size 64 --epochs 15 --val-split 200

``--variant`` makes the harder calibration sets (the plain digits are learnt
to 95-99% by any recipe that learns at all): the same digits and split, each
stroke in a random colour, on black (``colour``) or on a random background
colour at least MIN_CONTRAST from it (``colour-on-colour``), with Gaussian
noise on top (``hard_digits``)::

    PYTHONPATH=src python benchmarks/digits.py /tmp/digits-colour.tar.gz --variant colour

``--class-folders`` writes the same pictures as PNG files instead, one folder
of class folders (``train/<k>-<name>/`` and ``test/<k>-<name>/``, the digit
first so that the folders sort in label order), read with the same ``--data``.

The same scikit-learn, NumPy and Pillow give the same images; the script
prints the sha256 of the images and labels (the archive's own bytes hold a
gzip time stamp). Do not commit the archive: it is made, not kept.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

TRAIN, TEST = 1397, 400
SEED = 0
CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# --- the harder variants, every draw from one generator seeded with HARD_SEED ---
VARIANTS = ("plain", "colour", "colour-on-colour")
HARD_SEED = 20261204
MIN_CONTRAST = 110.0  # RGB distance (0-255 scale) of the stroke colour from the background's (black: 0, 0, 0)
NOISE_STD = 8.0  # grey levels (0-255), Gaussian noise added to every pixel and channel


def split(images: np.ndarray, labels: np.ndarray, seed: int = SEED):
    """(x_train, y_train, x_test, y_test): the stratified 1,397 / 400 split, labels 1-D int64."""
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, train_size=TRAIN, test_size=TEST, stratify=labels, random_state=seed)
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    """A uint8 image (H, W[, 3]) resized to size x size, bilinear (Pillow)."""
    from PIL import Image

    return np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR))


def plain_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images, labels): every digit upscaled to 32x32 grey, in three planes."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = (digits.images * (255 / 16)).round().astype(np.uint8)  # 0-16 -> 0-255
    big = np.stack([_resize(g, 32) for g in grey])
    return np.repeat(big[..., None], 3, axis=-1), digits.target


def hard_digits(variant: str, seed: int = HARD_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels): every digit, upscaled to 32x32, as a stroke of one
    random colour, on black (``colour``) or on a background of another random
    colour (``colour-on-colour``), plus noise.

    For each digit, in order: a background colour (``colour-on-colour``
    only), uniform in RGB; a stroke colour, drawn until it lies at least
    MIN_CONTRAST from the background's; the digit's grey level (0-1) as the
    stroke's opacity; Gaussian noise of NOISE_STD grey levels on every pixel
    and channel."""
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    digits = load_digits()
    grey = (digits.images * (255 / 16)).round().astype(np.uint8)
    out = np.empty((len(grey), 32, 32, 3), np.uint8)
    for i, g in enumerate(grey):
        background = rng.uniform(0, 255, 3) if variant == "colour-on-colour" else np.zeros(3)
        stroke = rng.uniform(0, 255, 3)
        while np.linalg.norm(stroke - background) < MIN_CONTRAST:
            stroke = rng.uniform(0, 255, 3)
        alpha = (_resize(g, 32) / 255.0)[..., None]
        image = background * (1 - alpha) + stroke * alpha + rng.normal(0, NOISE_STD, (32, 32, 3))
        out[i] = np.clip(image.round(), 0, 255).astype(np.uint8)
    return out, digits.target


def digit_images(seed: int = SEED, *, variant: str = "plain"):
    """(x_train, y_train, x_test, y_test): uint8 (N, 32, 32, 3) images, 1-D
    labels, of ``variant`` (VARIANTS), with the same split."""
    if variant not in VARIANTS:
        raise ValueError(f"Expected `variant` in {VARIANTS}. Received: variant={variant!r}")
    images, labels = plain_digits() if variant == "plain" else hard_digits(variant)
    return split(images, labels, seed)


def content_sha256(*arrays: np.ndarray) -> str:
    """sha256 of the arrays' bytes in order: the images and labels, not the archive."""
    content = hashlib.sha256()
    for a in arrays:
        content.update(np.ascontiguousarray(a).tobytes())
    return content.hexdigest()


def write_class_folders(root: Path, x_train, y_train, x_test, y_test) -> Path:
    """Each picture as ``root/<split>/<k>-<name>/<split>-<index>.png``; the folder."""
    from PIL import Image

    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        for i, (image, label) in enumerate(zip(x, y)):
            folder = root / split / f"{label}-{CLASS_NAMES[label]}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{split}-{i:04d}.png")
    return root


def main() -> None:
    from vggcifar import fixtures

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="where to write: an archive (.tar.gz), or a folder with --extracted")
    p.add_argument("--extracted", action="store_true", help="write the extracted folder, not an archive")
    p.add_argument("--class-folders", action="store_true",
                   help="write PNG files in train/ and test/ class folders, not an archive")
    p.add_argument("--seed", type=int, default=SEED, help=f"seed of the train/test split (default: {SEED})")
    p.add_argument("--variant", choices=VARIANTS, default="plain", help="plain: grey on black (default); colour: "
                   "each stroke in a random colour on black; colour-on-colour: on a random colour; both with noise")
    args = p.parse_args()
    x_train, y_train, x_test, y_test = digit_images(args.seed, variant=args.variant)
    if args.class_folders:
        out = write_class_folders(Path(args.out), x_train, y_train, x_test, y_test)
    else:
        out = fixtures.write_archive(Path(args.out), x_train, y_train, x_test, y_test, class_names=CLASS_NAMES,
                                     extracted=args.extracted)
    print(f"{out}: {len(x_train)} train + {len(x_test)} test images of {len(CLASS_NAMES)} digits, {args.variant}")
    print(f"images and labels sha256 {content_sha256(x_train, y_train, x_test, y_test)}")


if __name__ == "__main__":
    main()
