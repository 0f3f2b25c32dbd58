"""A run folder: every file name and path in it, and the reads and writes of its records.

Layout of ``RUN_DIR``::

    config.json        the resolved TrainConfig
    run.json           how to resume (data source, milestones)
    environment.json   versions, backend, device, git commit, dataset
    history.csv        per epoch: loss, accuracy, val_loss, val_accuracy, lr, seconds, the train/inference check
    checkpoints/       complete training states (ckpt-<global step>/, the newest two)
    lock               flock()ed by the process using the folder, and its pid (left by a killed one: free)
    epochs-010/ ...    one ResultDir per milestone: model.keras, metrics.json,
                       confusion_matrix.csv, confusion_matrix.png, mistakes.png
                       (the test images most confidently misclassified), recall.png;
                       with ``experiment --separate-runs``, the whole run folder
                       of a separate run of that length (its top files are these)
    model.keras, metrics.json, confusion_matrix.csv/.png, mistakes.png, recall.png
                       the last milestone (published)
    curves.png         loss and accuracy, redrawn after every epoch
    report.md
    tensorboard/       with --tensorboard: train/ and validation/ event files, a scalar per epoch
    evaluation/        what `vggcifar evaluate RUN_DIR` writes (evaluation-flip/ with --tta flip)

A comparison of recipes (``CompareDir``) holds one run folder per recipe and
``comparison.md`` / ``comparison.json`` / ``validation_curves.png``; so does
the folder `vggcifar compare --output` writes, without the run folders. One recipe over several seeds
(``SeedsDir``) holds one run folder per seed, ``seed-<S>/``, and ``seeds.json``
/ ``report.md`` over them; a comparison over seeds holds a ``SeedsDir`` per
recipe. Every write is atomic (vggcifar.fsutil).
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

from vggcifar import fsutil
from vggcifar.config import TrainConfig, config_from_dict

#: The columns of history.csv. train_inference_accuracy: inference mode on a
#: fixed sample of training images; inference_mismatch: 1 when the
#: train/inference check flagged the epoch (vggcifar.metrics.mode_mismatch).
HISTORY_FIELDS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds",
                  "train_inference_accuracy", "inference_mismatch"]


def read_json_or_empty(path: Path) -> dict:
    """A JSON object from ``path``, or {} when it is missing or unreadable."""
    try:
        value = fsutil.read_json(path)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def model_file(target) -> Path:
    """The model a command is given: a run folder's model.keras, or the file itself."""
    target = Path(target)
    if not target.is_dir():
        return target
    model = ResultDir(target).model
    if not model.exists():
        raise ValueError(f"{target} holds no {model.name}: it is not a finished run folder")
    return model


class ResultDir:
    """One evaluation's files: a milestone folder, the top of a run folder,
    or what `vggcifar evaluate` writes."""

    #: The files a milestone publishes to the top of its run folder.
    NAMES = ("model.keras", "metrics.json", "confusion_matrix.csv", "confusion_matrix.png", "mistakes.png",
             "recall.png")

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def model(self) -> Path:
        return self.path / "model.keras"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def confusion_csv(self) -> Path:
        return self.path / "confusion_matrix.csv"

    @property
    def confusion_png(self) -> Path:
        return self.path / "confusion_matrix.png"

    @property
    def mistakes_png(self) -> Path:
        """The test images the model gets most confidently wrong, by confused class pair."""
        return self.path / "mistakes.png"

    @property
    def recall_png(self) -> Path:
        """Per-class recall as bars."""
        return self.path / "recall.png"

    def pictures(self, relative_to: Path) -> dict[str, str]:
        """The pictures of this evaluation that exist, as paths relative to
        ``relative_to`` (for links in a report): confusion, mistakes, recall."""
        found = {"confusion": self.confusion_png, "mistakes": self.mistakes_png, "recall": self.recall_png}
        return {k: p.relative_to(relative_to).as_posix() for k, p in found.items() if p.exists()}

    def write_metrics(self, metrics: dict) -> None:
        fsutil.write_json(self.metrics, metrics)

    def read_metrics(self) -> dict:
        """metrics.json; OSError or ValueError when it is missing or damaged."""
        return fsutil.read_json(self.metrics)

    def has_metrics(self) -> bool:
        return self.metrics.exists()

    def write_confusion_csv(self, cm, class_names) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["true\\predicted", *class_names])
        for name, row in zip(class_names, cm):
            w.writerow([name, *[int(v) for v in row]])
        fsutil.write_text(self.confusion_csv, buf.getvalue())

    def save_model(self, model) -> None:
        """model.keras, every layer in float32 whatever precision the model
        trained in: it loads and computes alike on any machine, with no
        vggcifar (``inference.load_model`` picks the precision it runs in)."""
        from vggcifar.model import with_dtype_policy

        with fsutil.atomic_path(self.model, suffix=".keras") as tmp:
            with_dtype_policy(model, "float32").save(tmp)


class RunDir(ResultDir):
    """A training run's folder (see the module's docstring for its layout)."""

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def run_path(self) -> Path:
        return self.path / "run.json"

    @property
    def environment_path(self) -> Path:
        return self.path / "environment.json"

    @property
    def history_path(self) -> Path:
        return self.path / "history.csv"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    @property
    def report(self) -> Path:
        return self.path / "report.md"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        """The live view's event files (vggcifar.liveview), one folder per split."""
        return self.path / "tensorboard"

    def tensorboard_folders(self, splits) -> dict[str, Path]:
        return {split: self.tensorboard / split for split in splits}

    def milestone(self, epoch: int) -> ResultDir:
        return ResultDir(self.path / f"epochs-{epoch:03d}")

    def evaluation(self, tta: str = "none") -> ResultDir:
        """Where `vggcifar evaluate RUN_DIR` writes by default."""
        return ResultDir(self.path / ("evaluation" if tta == "none" else f"evaluation-{tta}"))

    def lock(self) -> fsutil.RunLock:
        return fsutil.RunLock(self.path)

    def remove_stale_temps(self) -> None:
        fsutil.remove_stale_temps(self.path)

    # ---- records ------------------------------------------------------------
    def write_config(self, config: TrainConfig) -> None:
        fsutil.write_json(self.config_path, config.to_dict())

    def read_config(self) -> TrainConfig:
        try:
            values = fsutil.read_json(self.config_path)
        except ValueError as exc:
            raise ValueError(f"{self.config_path} is not valid JSON ({exc}); delete the run folder or "
                             "pass another") from None
        return config_from_dict(values, self.config_path)

    def read_config_values(self) -> dict:
        """config.json as it stands, without checking it ({} when unreadable)."""
        return read_json_or_empty(self.config_path)

    def write_run(self, milestones: list[int], data: dict, *, separate_runs: bool = False) -> None:
        record = {"milestones": list(milestones), "data": data}
        if separate_runs:
            record["separate_runs"] = True
        fsutil.write_json(self.run_path, record)

    def read_run(self) -> dict:
        """run.json: {"milestones": [...], "data": {...}}, and "separate_runs": true
        for a folder of separate runs ({} when there is none)."""
        return read_json_or_empty(self.run_path)

    def separate_run(self, epochs: int) -> RunDir:
        """In a folder of separate runs (``experiment --separate-runs``): the run
        folder of the run of ``epochs`` epochs. It is that milestone's folder, so
        its top files are the milestone's results, as in a single run."""
        return RunDir(self.milestone(epochs).path)

    def write_environment(self, env: dict) -> None:
        fsutil.write_json(self.environment_path, env)

    def read_environment(self) -> dict:
        return read_json_or_empty(self.environment_path)

    def write_history(self, history: list[dict]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
        w.writeheader()
        for row in history:
            w.writerow({k: ("" if row.get(k) is None else row[k]) for k in HISTORY_FIELDS})
        fsutil.write_text(self.history_path, buf.getvalue())

    def read_history(self) -> list[dict]:
        with open(self.history_path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        return [{k: (None if v == "" else int(v) if k == "epoch" else float(v)) for k, v in r.items()}
                for r in rows]

    def write_report(self, text: str) -> None:
        fsutil.write_text(self.report, text)

    # ---- state of the run -----------------------------------------------------
    def checkpoint(self, global_step: int) -> Path:
        """The folder of the checkpoint taken after ``global_step`` steps."""
        return self.checkpoints / f"ckpt-{global_step:09d}"

    def list_checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(p for p in self.checkpoints.iterdir() if p.is_dir() and p.name.startswith("ckpt-"))

    def holds_run(self) -> bool:
        """True when the folder has checkpoints of a run, or is a folder of
        separate runs: only --resume may continue it."""
        return bool(self.list_checkpoints()) or bool(self.read_run().get("separate_runs"))

    def resume_arguments(self) -> tuple[TrainConfig, dict]:
        """What the folder says about its run: its config and run.json."""
        for path in (self.config_path, self.run_path):
            if not path.exists():
                raise ValueError(f"{path} is missing: {self.path} is not a vggcifar run folder "
                                 "(or its first epoch never started); start it again without --resume")
        return self.read_config(), fsutil.read_json(self.run_path)

    def done_milestones(self, milestones: list[int]) -> list[int]:
        """Those of ``milestones`` whose results are written."""
        return [m for m in milestones if self.milestone(m).has_metrics()]

    def publish(self, epoch: int) -> None:
        """Copy milestone ``epoch``'s files to the top of the run folder."""
        source = self.milestone(epoch)
        for name in ResultDir.NAMES:
            with fsutil.atomic_path(self.path / name) as tmp:
                shutil.copyfile(source.path / name, tmp)


class CompareDir:
    """Runs side by side: comparison.md, comparison.json and the validation
    curves; for ``experiment --recipe a,b``, beside ``<root>/<recipe>/`` run folders."""

    def __init__(self, path):
        self.path = Path(path)

    def recipe(self, name: str) -> RunDir:
        return RunDir(self.path / name)

    def recipe_seeds(self, name: str) -> "SeedsDir":
        """The recipe's folder when it ran over several seeds."""
        return SeedsDir(self.path / name)

    @property
    def markdown(self) -> Path:
        return self.path / "comparison.md"

    @property
    def curves(self) -> Path:
        """The compared runs' validation curves, one picture."""
        return self.path / "validation_curves.png"

    @property
    def json(self) -> Path:
        return self.path / "comparison.json"

    def write(self, comparison: dict, markdown: str) -> None:
        fsutil.write_json(self.json, comparison)
        fsutil.write_text(self.markdown, markdown)


class SeedsDir:
    """One recipe over several seeds: ``<root>/seed-<S>/`` run folders, and
    seeds.json and report.md over them."""

    #: A seed's folder is this and the seed.
    PREFIX = "seed-"

    def __init__(self, path):
        self.path = Path(path)

    def seed(self, seed: int) -> RunDir:
        return RunDir(self.path / f"{self.PREFIX}{seed}")

    def found_seeds(self) -> list[int]:
        """The seeds whose run folders are here (those with a run.json), in order."""
        if not self.path.is_dir():
            return []
        found = []
        for p in self.path.iterdir():
            head, sep, tail = p.name.partition(self.PREFIX)
            if sep and not head and tail.lstrip("-").isdigit() and self.seed(int(tail)).run_path.exists():
                found.append(int(tail))
        return sorted(found)

    @property
    def json(self) -> Path:
        return self.path / "seeds.json"

    @property
    def report(self) -> Path:
        return self.path / "report.md"

    def write(self, summary: dict, markdown: str) -> None:
        fsutil.write_json(self.json, summary)
        fsutil.write_text(self.report, markdown)

    def read(self) -> dict:
        """seeds.json ({} when there is none)."""
        return read_json_or_empty(self.json)
