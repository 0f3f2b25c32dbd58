"""Classify picture files with a saved model: the core of ``vggcifar predict``.

The model is a ``.keras`` file loaded in Keras' safe mode (see
``inference.load_model``); it holds its own pixel scaling, so it takes the raw
uint8 pictures that ``vggcifar.images`` makes. A picture that cannot be read
is answered with an error entry; the others are still classified. A folder
stands for the files in it, sorted (``picture_paths``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def top_k(probs: np.ndarray, class_names: Sequence[str], k: int) -> list[dict]:
    """The ``k`` most probable classes of one probability vector, most probable
    first (ties: the lower class index first, ``vggcifar.metrics.ranking``)."""
    from vggcifar.metrics import ranking

    order = ranking(probs)[:k]
    return [{"class": int(i), "label": class_names[i], "probability": float(probs[i])} for i in order]


def picture_paths(paths: Sequence, *, recursive: bool = False) -> list:
    """``paths`` with each folder replaced by the files in it, sorted by name
    (names that begin with a dot passed over, as ``ls`` does); ``recursive``:
    its subfolders' files too, each subfolder in its place in that order
    (links to folders are not followed). A folder that gives no file stays,
    to be answered as one (``folder_error``). Other paths stay as they are."""
    from pathlib import Path

    def files(folder: Path, top: bool) -> list[Path]:
        found = []
        try:
            entries = sorted((e for e in folder.iterdir() if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError:
            return [folder] if top else []  # answered with the reason it cannot be read
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                found += files(entry, False) if recursive else []
            elif not entry.is_dir():
                found.append(entry)
        return found

    out = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            out += files(path, True) or [path]
        else:
            out.append(given)  # as given: its answer names it so
    return out


def folder_error(folder, *, recursive: bool) -> str:
    """Why a folder given to predict yields no picture, in one line."""
    from pathlib import Path

    try:
        subfolders = any(e.is_dir() and not e.name.startswith(".") for e in Path(folder).iterdir())
    except OSError as exc:
        return f"{folder}: the folder cannot be read ({exc.strerror or exc})"
    if subfolders and not recursive:
        return f"{folder}: a folder with no files in it, only folders; add --recursive to read them"
    return f"{folder}: a folder with no picture files in it"


def run_class_names(model_path, num_classes: int) -> list[str] | None:
    """The class names a run folder recorded beside its ``model.keras`` (its
    ``metrics.json``): a model trained on another dataset than CIFAR-10 or
    CIFAR-100 (the synthetic set, say) is answered in its own names."""
    from pathlib import Path

    from vggcifar.rundir import ResultDir, read_json_or_empty

    names = read_json_or_empty(ResultDir(Path(model_path).parent).metrics).get("class_names")
    if isinstance(names, list) and len(names) == num_classes and all(isinstance(n, str) for n in names):
        return names
    return None


def predict_files(model_path, paths: Sequence, *, top: int = 3, recursive: bool = False,
                  precision: str = "auto") -> list[dict]:
    """One result per picture, in order, a folder standing for its files
    (``picture_paths``, ``recursive`` as there): ``{"path", "top_k": [{"class",
    "label", "probability"}, ...]}`` or ``{"path", "error"}`` for a file that is
    not a usable picture, or a folder with none; the model computes in
    ``precision`` (vggcifar.inference.PRECISIONS). A model that cannot be used
    raises ``ValueError``."""
    from pathlib import Path

    from vggcifar.data import class_names_for
    from vggcifar.inference import load_model, model_input_size, model_probs
    from vggcifar.images import ImageError, read_image, to_model_input

    model = load_model(model_path, precision)
    size = model_input_size(model, model_path)
    num_classes = int(model.output_shape[-1])
    if not isinstance(top, int) or top < 1 or top > num_classes:
        raise ValueError(f"--top-k must be between 1 and the model's {num_classes} classes. Received: {top!r}")
    names = run_class_names(model_path, num_classes) or class_names_for(num_classes)

    results: list[dict] = []
    pictures: list[np.ndarray] = []
    answered: list[int] = []
    for path in picture_paths(paths, recursive=recursive):
        if Path(path).is_dir():
            results.append({"path": str(path), "error": folder_error(path, recursive=recursive)})
            continue
        try:
            # Shrunk at once: a batch holds 32x32 copies, not the full pictures.
            pictures.append(to_model_input([read_image(path)], size))
        except ImageError as exc:
            results.append({"path": str(path), "error": str(exc)})
            continue
        answered.append(len(results))
        results.append({"path": str(path)})
    if pictures:
        probs = model_probs(model, np.concatenate(pictures), size)
        for i, p in zip(answered, probs):
            results[i]["top_k"] = top_k(p, names, top)
    return results

