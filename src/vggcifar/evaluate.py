"""Evaluate a saved model: the same metrics and pictures a run writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vggcifar import fsutil

#: Test-time augmentation: "none", or "flip": the mean softmax of each image
#: and its horizontal mirror.
TTA_MODES = ("none", "flip")


def load_model(path):
    """A ``.keras`` file, loaded with Keras' safe mode on (no code from the file runs)."""
    import keras

    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: only .keras model files are accepted (safe to load); "
                         "save the model with model.save('model.keras')")
    if not path.is_file():
        raise ValueError(f"{path}: no such model file")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # Keras' text goes on to suggest turning safe mode off: this command never does.
        first = first.split(" If you trust", 1)[0].strip()
        raise ValueError(f"{path}: cannot be loaded safely ({first})") from None


def model_probs(model, images, size=None):
    """Softmax outputs for uint8 RGB ``images``, each first brought to the
    model's input size by ``images.to_model_input`` (the one resize that
    ``predict`` uses too; CIFAR's 32x32 arrays pass through unchanged)."""
    from vggcifar.images import INPUT_SIZE, to_model_input
    from vggcifar.train import predict_probs

    return predict_probs(model, to_model_input(images, size or INPUT_SIZE))


def predict_tta(model, x: np.ndarray, tta: str = "none") -> np.ndarray:
    """Softmax outputs of ``model`` on uint8 images ``x`` (N, H, W, C);
    ``tta="flip"`` averages them with those of the horizontal mirrors."""
    if tta not in TTA_MODES:
        raise ValueError(f"Expected `tta` in {TTA_MODES}. Received: tta={tta!r}")
    probs = model_probs(model, x)
    if tta == "flip":
        probs = (probs + model_probs(model, np.ascontiguousarray(x[:, :, ::-1]))) / 2
    return probs


def evaluate_path(target, *, data=None, dataset=None, url=None, sha256=None, limit_test=None, out_dir=None,
                  tta="none"):
    """Evaluate ``target`` (a run folder or a .keras file) on the test set
    named by ``data`` / ``dataset`` (a run folder: its own, unless given;
    ``url`` and ``sha256`` as for ``load_cifar``), with test-time augmentation
    ``tta`` (see TTA_MODES); returns (metrics, output folder). The default
    folder is ``evaluation``, ``evaluation-flip`` with flip TTA."""
    from vggcifar.data import load_source
    from vggcifar.metrics import summarize
    from vggcifar.run import write_evaluation

    source = {"data": data, "dataset": dataset, "url": url, "sha256": sha256}
    suffix = "" if tta == "none" else f"-{tta}"
    target = Path(target)
    epoch = None
    if target.is_dir():
        model_path = target / "model.keras"
        if not model_path.exists():
            raise ValueError(f"{target} holds no model.keras: it is not a finished run folder")
        saved = fsutil.read_json(target / "run.json").get("data", {}) if (target / "run.json").exists() else {}
        if data is None and dataset is None:
            source = {**saved, **{k: v for k, v in source.items() if v is not None}}
        if limit_test is None and (target / "config.json").exists():
            limit_test = fsutil.read_json(target / "config.json").get("limit_test")
        if (target / "metrics.json").exists():
            epoch = fsutil.read_json(target / "metrics.json").get("epoch")
        out = Path(out_dir) if out_dir else target / f"evaluation{suffix}"
    else:
        model_path = target
        out = Path(out_dir) if out_dir else target.with_name(f"{target.stem}-evaluation{suffix}")
    model = load_model(model_path)
    cifar = load_source(source, limit_train=1, limit_test=limit_test)
    if model.output_shape[-1] != cifar.num_classes:
        raise ValueError(f"{model_path} has {model.output_shape[-1]} outputs but the dataset has "
                         f"{cifar.num_classes} classes; pass the matching --data or --dataset")
    probs = predict_tta(model, cifar.x_test, tta)
    metrics = {"epoch": epoch, **summarize(probs, cifar.y_test, cifar.class_names), "tta": tta,
               "model": str(model_path), "synthetic": cifar.synthetic, "subset": cifar.subset}
    write_evaluation(out, metrics, synthetic=cifar.synthetic)
    return metrics, out
