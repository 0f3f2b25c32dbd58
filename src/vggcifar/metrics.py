"""Metrics as arrays: computing only, no printing, no files."""

from __future__ import annotations

import numpy as np

#: A model is "collapsed" when this share of its predictions is one class.
COLLAPSE_SHARE = 0.9
#: Keras clips probabilities by this epsilon in its cross-entropy.
EPSILON = 1e-7
#: The train/inference check (vggcifar.loop.fit, after every epoch) compares the
#: epoch's running training accuracy (training mode: batch statistics, dropout,
#: augmentation) with the inference-mode accuracy on a fixed sample of at most
#: this many training images, unaugmented.
MODE_CHECK_IMAGES = 1000
#: It flags a mismatch when training accuracy is at least this far above chance...
MISMATCH_TRAIN_LEAD = 0.2
#: ...and inference mode keeps at most this share of that lead over chance
#: (CIFAR-10: training 0.60, inference <= 0.225).
MISMATCH_KEPT_SHARE = 0.25


def mode_mismatch(train_accuracy: float, inference_accuracy: float, num_classes: int) -> bool:
    """True when a model that is right in training mode is near chance in
    inference mode: with batch norm, its moving statistics do not describe
    the activations of its current weights."""
    chance = 1.0 / num_classes
    lead = train_accuracy - chance
    return lead >= MISMATCH_TRAIN_LEAD and inference_accuracy - chance <= MISMATCH_KEPT_SHARE * lead


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def per_class(cm: np.ndarray) -> dict[str, list[float]]:
    """Precision, recall and F1 per class (0 where undefined)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    actual = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "support": actual.astype(int).tolist()}


def cross_entropy(probs: np.ndarray, y_true) -> float:
    """Mean categorical cross-entropy of softmax outputs, as Keras computes it."""
    probs = np.asarray(probs, dtype=np.float64)
    p = np.clip(probs[np.arange(len(probs)), np.asarray(y_true, dtype=np.int64)], EPSILON, 1 - EPSILON)
    return float(-np.log(p).mean())


def collapse(y_pred, num_classes: int) -> dict | None:
    """The dominant class when nearly all predictions are one class, else None."""
    counts = np.bincount(np.asarray(y_pred, dtype=np.int64), minlength=num_classes)
    top = int(counts.argmax())
    share = counts[top] / max(1, counts.sum())
    return {"class": top, "share": float(share)} if share >= COLLAPSE_SHARE else None


#: The mistakes picture: the most-confused (true, predicted) class pairs...
MISTAKE_PAIRS = 3
#: ...each shown by this many of its most confident mistakes.
MISTAKES_PER_PAIR = 6


def confused_pairs(cm: np.ndarray, pairs: int = MISTAKE_PAIRS) -> list[tuple[int, int, int]]:
    """(true, predicted, images) of the off-diagonal cells of ``cm`` that
    hold the most images, most first (ties: the lower true class, then the
    lower predicted class); empty cells are left out."""
    cm = np.asarray(cm, dtype=np.int64)
    cells = [(-int(cm[t, p]), t, p) for t in range(len(cm)) for p in range(len(cm)) if t != p and cm[t, p] > 0]
    return [(t, p, -n) for n, t, p in sorted(cells)[:pairs]]


def confident_mistakes(probs: np.ndarray, y_true, pairs: int = MISTAKE_PAIRS,
                       per_pair: int = MISTAKES_PER_PAIR, *, cm: np.ndarray | None = None) -> list[dict]:
    """What the model gets most confidently wrong: for each of its ``pairs``
    most-confused class pairs, the images of that pair to which it gives its
    wrong answer the highest probability, most confident first (ties: the
    lower index), as {"true", "predicted", "count", "images": indices into
    ``probs``, "probabilities": of the predicted class}. A model without
    mistakes gives []; a collapsed one, pairs that all predict its one class.
    ``cm``: these predictions' confusion matrix, when the caller has it."""
    probs = np.asarray(probs)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = probs.argmax(axis=1)
    out = []
    if cm is None:
        cm = confusion_matrix(y_true, y_pred, probs.shape[1])
    for t, p, count in confused_pairs(cm, pairs):
        rows = np.flatnonzero((y_true == t) & (y_pred == p))
        order = np.lexsort((rows, -probs[rows, p]))[:per_pair]  # by probability, then index
        picked = rows[order]
        out.append({"true": t, "predicted": p, "count": count, "images": picked.tolist(),
                    "probabilities": probs[picked, p].astype(float).tolist()})
    return out


#: Top-k accuracy is reported for this k, for sets of more than k classes
#: (with k classes or fewer every image's class is in its top k)...
TOP_K = 5
#: ...as this key of metrics.json.
TOP_K_KEY = f"top_{TOP_K}_accuracy"


def ranking(probs: np.ndarray) -> np.ndarray:
    """Class indices from the most probable down, along the last axis (ties:
    the lower class index first): the order of ``vggcifar predict``'s answers
    and of top-k accuracy."""
    return np.argsort(-np.asarray(probs), axis=-1, kind="stable")


def top_k_accuracy(probs: np.ndarray, y_true, k: int = TOP_K) -> float | None:
    """The share of images whose true class is among their ``k`` first in
    ``ranking``; None for ``k`` classes or fewer, where it is always 1."""
    probs = np.asarray(probs)
    if probs.shape[1] <= k:
        return None
    y_true = np.asarray(y_true, dtype=np.int64)
    return float((ranking(probs)[:, :k] == y_true[:, None]).any(axis=1).mean())


def summarize(probs: np.ndarray, y_true, class_names: list[str]) -> dict:
    """Everything metrics.json says about one set of predictions."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = probs.argmax(axis=1)
    k = len(class_names)
    cm = confusion_matrix(y_true, y_pred, k)
    out = {
        "test_accuracy": float((y_pred == y_true).mean()),
        "test_loss": cross_entropy(probs, y_true),
        TOP_K_KEY: top_k_accuracy(probs, y_true),
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
        "per_class": per_class(cm),
        "images": int(len(y_true)),
        "mistakes": confident_mistakes(probs, y_true, cm=cm),
    }
    c = collapse(y_pred, k)
    out["collapse"] = None if c is None else {**c, "class_name": class_names[c["class"]]}
    return out


#: The validation accuracies whose first reaching ``time_to`` reports: what a
#: short run buys, comparable between recipes and machines.
TIME_TO_ACCURACY = (0.5, 0.8, 0.9)


def time_to(history: list[dict], thresholds=TIME_TO_ACCURACY) -> dict | None:
    """When validation accuracy first reached each of ``thresholds``: {"50%":
    {"epoch", "train_seconds"} or None (not reached), ...}, from a run's
    history rows (``val_accuracy``, and ``seconds``: that epoch's time of
    learning); ``train_seconds`` is the time of learning up to the end of that
    epoch. None when the run has no validation."""
    if not any(h.get("val_accuracy") is not None for h in history):
        return None
    keys = {f"{100 * t:g}%": t for t in thresholds}
    out: dict = dict.fromkeys(keys)
    seconds = 0.0
    for h in history:
        seconds += h.get("seconds") or 0.0
        accuracy = h.get("val_accuracy")
        for key, t in keys.items():
            if out[key] is None and accuracy is not None and accuracy >= t:
                out[key] = {"epoch": int(h["epoch"]), "train_seconds": seconds}
    return out


def mean_std(values) -> dict:
    """{"mean", "std", "n"} of ``values``: the sample standard deviation
    (ddof=1), None for fewer than two values; the mean None for none."""
    v = np.asarray(list(values), dtype=np.float64)
    return {"mean": float(v.mean()) if len(v) else None, "std": float(v.std(ddof=1)) if len(v) > 1 else None,
            "n": int(len(v))}
