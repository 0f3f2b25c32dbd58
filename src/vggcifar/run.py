"""A run folder: training with milestones, evaluation, and every file a run writes.

Layout of ``RUN_DIR``::

    config.json        the resolved TrainConfig
    run.json           how to resume (data source, milestones)
    environment.json   versions, backend, device, git commit, dataset
    history.csv        per epoch: loss, accuracy, val_loss, val_accuracy, lr, seconds
    checkpoints/       complete training states (newest two)
    epochs-010/ ...    one folder per milestone: model.keras, metrics.json,
                       confusion_matrix.csv, confusion_matrix.png
    model.keras, metrics.json, confusion_matrix.csv/.png   the last milestone
    curves.png, report.md

``vggcifar experiment --recipe a,b`` trains one such folder per recipe,
``RUN_DIR/a/``, ``RUN_DIR/b/``, and compares them in ``RUN_DIR/comparison.md``
and ``comparison.json`` (``compare_runs``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from vggcifar import fsutil
from vggcifar.config import TrainConfig, load_config, resolve_val_split
from vggcifar.data import CifarData
from vggcifar.metrics import summarize
from vggcifar.report import collapse_message, comparison_markdown, hms, render

#: train_inference_accuracy: inference mode on a fixed sample of training images;
#: inference_mismatch: 1 when the train/inference check flagged the epoch (vggcifar.metrics.mode_mismatch).
HISTORY_FIELDS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds",
                  "train_inference_accuracy", "inference_mismatch"]


# --------------------------------------------------------------------------- #
# how a run was made
# --------------------------------------------------------------------------- #
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def device_info() -> dict:
    import keras

    backend = keras.backend.backend()
    info = {"kind": "cpu", "name": _cpu_name()}
    try:
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                info = {"kind": "gpu", "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
        elif backend == "jax":
            import jax

            devs = jax.devices()
            if devs and devs[0].platform != "cpu":
                info = {"kind": devs[0].platform, "name": devs[0].device_kind, "count": len(devs)}
        elif backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                info = {"kind": "gpu", "name": gpus[0].name, "count": len(gpus)}
    except Exception:  # device discovery is informative only
        pass
    return info


def environment_info(data: CifarData) -> dict:
    import keras

    import vggcifar

    backend = keras.backend.backend()
    versions = {"python": platform.python_version(), "keras": keras.__version__,
                "numpy": np.__version__, "vggcifar": vggcifar.__version__}
    try:
        versions[backend] = __import__(backend).__version__
    except Exception:
        pass
    return {
        "backend": backend,
        "device": device_info(),
        "cpu": _cpu_name(),
        "platform": platform.platform(),
        "versions": versions,
        "git_commit": _git_commit(),
        "dataset": data.describe(),
    }


# --------------------------------------------------------------------------- #
# files
# --------------------------------------------------------------------------- #
def write_history(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if row.get(k) is None else row[k]) for k in HISTORY_FIELDS})
    fsutil.write_text(path, buf.getvalue())


def read_history(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (None if v == "" else int(v) if k == "epoch" else float(v)) for k, v in r.items()} for r in rows]


def write_confusion_csv(path: Path, cm, class_names) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["true\\predicted", *class_names])
    for name, row in zip(class_names, cm):
        w.writerow([name, *[int(v) for v in row]])
    fsutil.write_text(path, buf.getvalue())


def save_model(model, path: Path) -> None:
    with fsutil.atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def write_evaluation(folder: Path, metrics: dict, *, synthetic: bool) -> None:
    """metrics.json, confusion_matrix.csv and .png for one evaluation."""
    from vggcifar.plots import confusion_figure, save_figure

    folder.mkdir(parents=True, exist_ok=True)
    fsutil.write_json(folder / "metrics.json", metrics)
    write_confusion_csv(folder / "confusion_matrix.csv", metrics["confusion_matrix"], metrics["class_names"])
    epoch = f"epochs = {metrics['epoch']}, " if metrics.get("epoch") is not None else ""
    title = f"{'synthetic data, ' if synthetic else ''}{epoch}accuracy = {100 * metrics['test_accuracy']:.2f}%"
    save_figure(confusion_figure(metrics["confusion_matrix"], metrics["class_names"], title=title),
                folder / "confusion_matrix.png")


def milestone_dir(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / f"epochs-{epoch:03d}"


# --------------------------------------------------------------------------- #
# train
# --------------------------------------------------------------------------- #
def train_run(
    config: TrainConfig,
    data: CifarData,
    run_dir,
    *,
    milestones: list[int] | None = None,
    resume: bool = False,
    data_args: dict | None = None,
    log=print,
    verbose: int = 1,
    max_steps: int | None = None,
) -> dict:
    """Train in ``run_dir``, evaluating and saving at each milestone epoch.
    Returns the last milestone's metrics."""
    from vggcifar import train as T

    run_dir = Path(run_dir)
    milestones = sorted(set(milestones or [config.epochs]))
    if milestones[-1] != config.epochs or milestones[0] < 1:
        raise ValueError(f"Expected milestones within 1..{config.epochs} ending at the last epoch. "
                         f"Received: milestones={milestones}")
    # The split as this training set makes it, so config.json says what was
    # done and a resumed run splits alike.
    config = resolve_val_split(config, len(data.x_train))
    val_images = 0 if config.validate_on_test else config.val_split
    started = time.monotonic()
    with fsutil.RunLock(run_dir):
        fsutil.remove_stale_temps(run_dir)
        if not resume and holds_run(run_dir):
            raise ValueError(f"{run_dir} already holds a run; pass --resume to continue it "
                             "or choose another --run-dir")
        # What "auto" means here (layout, precision) is written down, so the
        # folder says what ran and a resume on this machine runs the same.
        config = dataclasses.replace(config, data_format=T.resolve_data_format(config.data_format),
                                     precision=T.resolve_precision(config.precision))
        fsutil.write_json(run_dir / "config.json", config.to_dict())
        fsutil.write_json(run_dir / "run.json", {"milestones": milestones, "data": data_args or {}})
        env = {**environment_info(data), "precision": config.precision, "data_format": config.data_format}
        fsutil.write_json(run_dir / "environment.json", env)
        wall_before = 0.0
        if resume and (run_dir / "metrics.json").exists():
            try:
                wall_before = fsutil.read_json(run_dir / "metrics.json").get("wall_seconds", 0.0)
            except (OSError, ValueError):
                pass
        last: dict = {}

        def on_epoch_end(end: T.EpochEnd):
            nonlocal last
            write_history(run_dir / "history.csv", end.state.history)
            if end.epoch not in milestones:
                return
            probs = end.val_probs if config.validate_on_test else T.predict_probs(end.model, data.x_test)
            row = end.state.history[-1]
            metrics = {
                "epoch": end.epoch,
                **summarize(probs, data.y_test, data.class_names),
                # The train/inference check of this epoch, and every epoch it flagged so far.
                "train_accuracy": row["accuracy"],
                "train_inference_accuracy": row["train_inference_accuracy"],
                "inference_mismatch": bool(row["inference_mismatch"]),
                "batch_norm": config.batch_norm,
                "mismatch_epochs": [h["epoch"] for h in end.state.history if h.get("inference_mismatch")],
                "train_seconds": end.state.train_seconds,
                "wall_seconds": wall_before + time.monotonic() - started,
                "status": "complete" if end.epoch == config.epochs else "milestone",
                "synthetic": data.synthetic,
                "subset": data.subset,
                "train_images": len(data.x_train) - val_images,
                "val_images": val_images,
            }
            folder = milestone_dir(run_dir, end.epoch)
            save_model(end.model, folder / "model.keras")
            write_evaluation(folder, metrics, synthetic=data.synthetic)
            log(f"epoch {end.epoch}: test accuracy {100 * metrics['test_accuracy']:.2f}%, "
                f"{hms(end.state.train_seconds)} of training")
            msg = collapse_message(metrics)
            if msg:
                log("WARNING: " + msg)
            last = metrics
            publish(run_dir, config, data, milestones=[m for m in milestones if m <= end.epoch])

        try:
            T.fit(config, data, run_dir, resume=resume, on_epoch_end=on_epoch_end, log=log,
                  verbose=verbose, max_steps=max_steps)
        except T.TrainingStopped as stop:
            if stop.status == 3:  # non-finite loss: say so where a reader looks
                record = {"status": "failed", "reason": stop.reason,
                          "wall_seconds": wall_before + time.monotonic() - started}
                if (run_dir / "metrics.json").exists():
                    try:
                        record = {**fsutil.read_json(run_dir / "metrics.json"), **record}
                    except (OSError, ValueError):
                        pass
                fsutil.write_json(run_dir / "metrics.json", record)
                done = [m for m in milestones if (milestone_dir(run_dir, m) / "metrics.json").exists()]
                if done and (run_dir / "report.md").exists():
                    write_report(run_dir, done, notes=[f"Training stopped: {stop.reason}."])
            raise
        if not last:  # resumed a finished run
            last = fsutil.read_json(run_dir / "metrics.json")
        return last


def publish(run_dir: Path, config: TrainConfig, data: CifarData, *, milestones: list[int]) -> None:
    """The newest milestone's files at the top of the run folder, the curves
    and report.md over all milestones so far."""
    from vggcifar.plots import curves_figure, save_figure

    newest = milestone_dir(run_dir, milestones[-1])
    for name in ("model.keras", "metrics.json", "confusion_matrix.csv", "confusion_matrix.png"):
        with fsutil.atomic_path(run_dir / name) as tmp:
            shutil.copyfile(newest / name, tmp)
    history = read_history(run_dir / "history.csv")
    label = "synthetic data, " if data.synthetic else ""
    save_figure(curves_figure(history, title=f"{label}recipe {config.recipe}"), run_dir / "curves.png")
    write_report(run_dir, milestones)


def write_report(run_dir: Path, milestones: list[int], *, notes: list[str] = ()) -> None:
    run_dir = Path(run_dir)
    config = fsutil.read_json(run_dir / "config.json")
    env = fsutil.read_json(run_dir / "environment.json")
    ms = []
    for m in milestones:
        folder = milestone_dir(run_dir, m)
        ms.append((fsutil.read_json(folder / "metrics.json"), f"{folder.name}/confusion_matrix.png"))
    notes = list(notes)
    if len(milestones) > 1:
        notes.append(
            f"The learning rate of the `{config['recipe']}` recipe depends only on the step count, so one run of "
            f"{milestones[-1]} epochs, evaluated and saved at each milestone, equals separate runs of each "
            f"length with the same seed: {milestones[-1]} epochs of compute instead of {sum(milestones)}."
        )
    if config.get("validate_on_test"):
        notes.append("As in the spec's `fit` call, the validation curve is the test set.")
    elif config.get("val_split"):
        notes.append(f"The validation curve is {config['val_split']} images held out of the training set; "
                     "the test set is used only for the figures above.")
    text = render(title=f"VGG-16 on {env['dataset']['name']}: results", milestones=ms, environment=env,
                  config=config, notes=notes)
    fsutil.write_text(run_dir / "report.md", text)


def resume_arguments(run_dir) -> tuple[TrainConfig, dict]:
    """What a run folder says about itself: its config and run.json."""
    run_dir = Path(run_dir)
    for name in ("config.json", "run.json"):
        if not (run_dir / name).exists():
            raise ValueError(f"{run_dir / name} is missing: {run_dir} is not a vggcifar run folder "
                             "(or its first epoch never started); start it again without --resume")
    return load_config(run_dir / "config.json"), fsutil.read_json(run_dir / "run.json")


# --------------------------------------------------------------------------- #
# recipes side by side
# --------------------------------------------------------------------------- #
def holds_run(run_dir) -> bool:
    """True when ``run_dir`` has checkpoints of a run: only --resume may continue it."""
    from vggcifar.train import list_checkpoints

    return bool(list_checkpoints(run_dir))


def _read(path: Path) -> dict:
    try:
        return fsutil.read_json(path)
    except (OSError, ValueError):
        return {}


def compare_runs(run_dir, recipes: list[str]) -> dict:
    """The comparison of the run folders ``run_dir/<recipe>/``, from their
    files: test accuracy at each milestone, the final one, collapse, time of
    learning and training images per second."""
    run_dir = Path(run_dir)
    rows, milestones, dataset, synthetic = [], set(), None, False
    for recipe in recipes:
        folder = run_dir / recipe
        final = _read(folder / "metrics.json")
        ms = _read(folder / "run.json").get("milestones", [])
        milestones.update(ms)
        accuracy = {}
        for m in ms:
            accuracy[str(m)] = _read(milestone_dir(folder, m) / "metrics.json").get("test_accuracy")
        env = _read(folder / "environment.json").get("dataset", {})
        dataset = dataset or env.get("name")
        seconds, epoch, images = final.get("train_seconds"), final.get("epoch"), final.get("train_images")
        status = final.get("status", "missing")
        row = {
            "recipe": recipe,
            "status": status,
            "test_accuracy": accuracy,
            "final_accuracy": final.get("test_accuracy") if status == "complete" else None,
            "collapsed": bool(final.get("collapse")),
            "train_seconds": seconds,
            "images_per_second": images * epoch / seconds if seconds and epoch and images else None,
            "synthetic": bool(final.get("synthetic", env.get("synthetic", False))),
        }
        synthetic = synthetic or row["synthetic"]
        rows.append(row)
    return {"dataset": dataset, "milestones": sorted(milestones), "synthetic": synthetic, "rows": rows}


def write_comparison(run_dir, comparison: dict) -> None:
    """comparison.json and comparison.md in ``run_dir``."""
    fsutil.write_json(Path(run_dir) / "comparison.json", comparison)
    fsutil.write_text(Path(run_dir) / "comparison.md", comparison_markdown(comparison))
