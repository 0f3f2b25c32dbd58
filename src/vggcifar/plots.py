"""Pictures: functions take arrays and return matplotlib figures.

matplotlib is imported here only, and with the Agg backend: no screen needed.
"""

from __future__ import annotations

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(cm, class_names, *, title: str):
    """Counts in each cell, colour by the row-normalised share."""
    plt = _pyplot()
    cm = np.asarray(cm)
    k = len(class_names)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    size = max(6.0, 0.45 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85), dpi=100)
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8 if k <= 20 else 4)
    ax.set_yticks(range(k), class_names, fontsize=8 if k <= 20 else 4)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.tight_layout()
    return fig


def mistakes_figure(images: np.ndarray, mistakes: list[dict], class_names, *, title: str):
    """A row per confused class pair (``vggcifar.metrics.confident_mistakes``):
    its images, pixels as stored (uint8 RGB, no smoothing), each with its true
    and predicted class and the probability given to the wrong one beneath."""
    plt = _pyplot()
    columns = max([len(m["images"]) for m in mistakes] + [1])
    rows = max(1, len(mistakes))
    fig, axes = plt.subplots(rows, columns, figsize=(1.45 * columns + 1.3, 1.75 * rows + 0.7), dpi=100,
                             squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    if not mistakes:
        axes[0, 0].text(0.5, 0.5, "no test image is misclassified", ha="center", va="center",
                        transform=fig.transFigure, fontsize=11)
    for r, pair in enumerate(mistakes):
        true, predicted = class_names[pair["true"]], class_names[pair["predicted"]]
        for c, (i, p) in enumerate(zip(pair["images"], pair["probabilities"])):
            ax = axes[r, c]
            ax.set_axis_on()
            ax.imshow(images[i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"{true} → {predicted}\np = {p:.2f}", fontsize=7)
        axes[r, 0].set_ylabel(f"{true} as {predicted}\n{pair['count']} images", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def recall_figure(recall, class_names, *, title: str):
    """Per-class recall as horizontal bars, chance (1 / classes) marked."""
    plt = _pyplot()
    recall = np.asarray(recall, dtype=float)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.28 * k + 1)), dpi=100)
    ax.barh(range(k), recall, color="tab:blue")
    ax.axvline(1 / k, color="grey", linestyle="--", linewidth=1, label=f"chance ({1 / k:.2f})")
    ax.set_yticks(range(k), class_names, fontsize=8 if k <= 20 else 4)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("recall (share of the class's test images predicted as it)")
    if k <= 20:
        for i, v in enumerate(recall):
            inside = v > 0.85  # no room right of the bar: write on it
            ax.text(v - 0.01 if inside else v + 0.01, i, f"{v:.2f}", va="center", ha="right" if inside else "left",
                    fontsize=7, color="white" if inside else "black")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def curves_figure(history: list[dict], *, title: str = ""):
    """Loss and accuracy against epoch, training and validation."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for ax, key, label in ((ax1, "loss", "loss"), (ax2, "accuracy", "accuracy")):
        ax.plot(epochs, [h[key] for h in history], marker="o", ms=3, label="training")
        val = [h.get("val_" + key) for h in history]
        if any(v is not None for v in val):
            ax.plot(epochs, [np.nan if v is None else v for v in val], marker="o", ms=3, label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    ax2.set_ylim(0, 1)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def validation_curves_figure(curves: list[dict], *, title: str = ""):
    """Runs side by side (``vggcifar.comparison.validation_curves``):
    validation loss and accuracy against epoch, a line per run, a band of one
    standard deviation where it is a mean over seeds."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    # The legend below both panels, where it hides no curve: a row per two runs.
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5 + 0.25 * ((len(curves) + 1) // 2)), dpi=100,
                                   layout="constrained")
    for i, curve in enumerate(curves):
        colour = f"C{i % 10}"
        label = curve["name"] + (f" ({curve['validation']})" if curve.get("validation") else "")
        for ax, key in ((ax1, "val_loss"), (ax2, "val_accuracy")):
            c = curve[key]
            if not c["epoch"]:
                continue
            epochs, mean = np.asarray(c["epoch"]), np.asarray(c["mean"], dtype=float)
            ax.plot(epochs, mean, marker="o", ms=3, color=colour, label=label)
            if c.get("std") is not None:
                std = np.asarray([np.nan if v is None else v for v in c["std"]], dtype=float)
                ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
    for ax, label in ((ax1, "validation loss"), (ax2, "validation accuracy")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax2.set_ylim(0, 1)
    fig.legend(*ax2.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig, path) -> None:
    """Write a figure atomically, then free it."""
    from vggcifar import fsutil

    plt = _pyplot()
    try:
        with fsutil.atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
