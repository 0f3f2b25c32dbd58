"""Real images for calibrating the recipes offline: scikit-learn's handwritten digits as a small CIFAR archive, or as PNG class folders.

``sklearn.datasets.load_digits`` ships with scikit-learn (no download): 1,797
scanned handwritten digits, 8x8 greyscale with 17 grey levels (0-16), ten
classes. Each is upscaled to 32x32 (bilinear), spread to 0-255, copied into
the three colour planes, split stratified with a fixed seed into 1,397
training and 400 test images, and written in CIFAR-10's python layout by
``vggcifar.fixtures``, so every command reads it with ``--data``::

    PYTHONPATH=src python benchmarks/digits.py /tmp/digits
    vggcifar train --data /tmp/digits --recipe vgg16-bn --batch-size 64 --epochs 15 --val-split 200

``--class-folders`` writes the same pictures as PNG files instead, one folder
of class folders (``train/<k>-<name>/`` and ``test/<k>-<name>/``, the digit
first so that the folders sort in label order), read with the same ``--data``.

The same scikit-learn and Pillow give the same images; the script prints the
sha256 of the images and labels (the archive's own bytes hold a gzip time
stamp). Do not commit the archive: it is made, not kept.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

TRAIN, TEST = 1397, 400
SEED = 0
CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digit_images(seed: int = SEED):
    """(x_train, y_train, x_test, y_test): uint8 (N, 32, 32, 3) images, 1-D labels."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    grey = (digits.images * (255 / 16)).round().astype(np.uint8)  # 0-16 -> 0-255
    big = np.stack([np.asarray(Image.fromarray(g).resize((32, 32), Image.BILINEAR)) for g in grey])
    rgb = np.repeat(big[..., None], 3, axis=-1)
    x_train, x_test, y_train, y_test = train_test_split(
        rgb, digits.target, train_size=TRAIN, test_size=TEST, stratify=digits.target, random_state=seed)
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


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
    args = p.parse_args()
    x_train, y_train, x_test, y_test = digit_images(args.seed)
    if args.class_folders:
        out = write_class_folders(Path(args.out), x_train, y_train, x_test, y_test)
    else:
        out = fixtures.write_archive(Path(args.out), x_train, y_train, x_test, y_test, class_names=CLASS_NAMES,
                                     extracted=args.extracted)
    print(f"{out}: {len(x_train)} train + {len(x_test)} test images of {len(CLASS_NAMES)} digits")
    content = hashlib.sha256()
    for a in (x_train, y_train, x_test, y_test):
        content.update(np.ascontiguousarray(a).tobytes())
    print(f"images and labels sha256 {content.hexdigest()}")


if __name__ == "__main__":
    main()
