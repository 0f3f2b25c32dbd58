"""What a run keeps of its epochs: history.csv and curves.png after each (and TensorBoard's event files), and at each milestone the model, metrics, pictures and report.md.

``milestone_metrics`` computes a milestone's metrics.json from what the loop
hands over (a pure function); ``RunRecord`` writes the files, through the run
folder (vggcifar.rundir), and keeps the milestones' results for the report.
"""

from __future__ import annotations

import time

from vggcifar.config import TrainConfig
from vggcifar.data import CifarData
from vggcifar.evaluation import write_results
from vggcifar.inference import predict_probs
from vggcifar.metrics import summarize
from vggcifar.progress import hms
from vggcifar.report import collapse_message, milestones_note, mismatch_message, render, short_run_message
from vggcifar.rundir import RunDir, read_json_or_empty
from vggcifar.settings import RunSettings
from vggcifar.loop import EpochEnd


def milestone_metrics(settings: RunSettings, data: CifarData, end: EpochEnd, probs, *, wall_seconds: float,
                      short_run: dict | None) -> dict:
    """metrics.json of the milestone ``end``: the test set's figures from
    ``probs`` (its softmax outputs), the epoch's train/inference check, the
    time of learning, what was trained on."""
    config, row = settings.config, end.state.history[-1]
    return {
        "epoch": end.epoch,
        **summarize(probs, data.y_test, data.class_names),
        # The train/inference check of this epoch, and every epoch it flagged so far.
        "train_accuracy": row["accuracy"],
        "train_inference_accuracy": row["train_inference_accuracy"],
        "inference_mismatch": bool(row["inference_mismatch"]),
        "batch_norm": config.batch_norm,
        "mismatch_epochs": [h["epoch"] for h in end.state.history if h.get("inference_mismatch")],
        "train_seconds": end.state.train_seconds,
        "wall_seconds": wall_seconds,
        "status": "complete" if end.epoch == config.epochs else "milestone",
        "synthetic": data.synthetic,
        "subset": data.subset,
        "train_images": settings.train_images,
        "val_images": settings.val_images,
        "short_run": short_run,
        # A folder of class folders: each file that is not a readable picture, and why.
        "skipped_files": data.skipped,
    }


def separate_report(run: RunDir, config: TrainConfig, env: dict, results: dict[int, dict]) -> None:
    """report.md at the top of a folder of separate runs, over the runs done (``results`` by length)."""
    done = sorted(results)
    notes = [milestones_note(config.recipe, config.schedule, config.epoch_independent_schedule, done,
                             separate=True)] if len(done) > 1 else []
    last = run.separate_run(done[-1])
    milestones = [(results[m], run.separate_run(m).pictures(run.path)) for m in done]
    run.write_report(render(title=f"VGG-16 on {env['dataset']['name']}: results", milestones=milestones,
                            environment=env, config=config.to_dict(), notes=notes,
                            curves=f"{last.path.name}/{last.curves.name}"))


class RunRecord:
    """The files of one run as it trains; ``results``: each milestone's metrics so far."""

    def __init__(self, run: RunDir, settings: RunSettings, data: CifarData, env: dict, *, resume: bool, log,
                 short_run: dict | None = None):
        self.run, self.settings, self.data, self.env, self.log = run, settings, data, env, log
        self.short_run = short_run
        self.started = time.monotonic()
        self.wall_before = 0.0
        # Earlier milestones of a resumed run, read once for the report.
        self.results: dict[int, dict] = {}
        if resume:
            self.wall_before = read_json_or_empty(run.metrics).get("wall_seconds", 0.0)
            for m in run.done_milestones(settings.milestones):
                self.results[m] = read_json_or_empty(run.milestone(m).metrics)
        self.last_end: EpochEnd | None = None  # the newest epoch's end seen
        self.live = None
        if settings.config.tensorboard:
            from vggcifar.liveview import SPLITS, EpochScalars

            self.live = EpochScalars(run.tensorboard_folders(SPLITS), images_per_epoch=settings.train_images)

    def close(self) -> None:
        if self.live is not None:
            self.live.close()

    def wall_seconds(self) -> float:
        return self.wall_before + time.monotonic() - self.started

    def epoch_end(self, end: EpochEnd) -> None:
        config, data = self.settings.config, self.data
        self.run.write_history(end.state.history)
        row = end.state.history[-1]
        self.draw_curves(end.state.history)
        if self.live is not None:
            self.live.write(row)
        # Warn, do not stop: the moving statistics can still catch up (early in a
        # run the flag is often transient), the weights themselves are learning,
        # and the checkpoint lets a reader inspect or continue the run.
        if row["inference_mismatch"]:
            self.log("WARNING: " + mismatch_message(row["epoch"], row["accuracy"], row["train_inference_accuracy"],
                                                    data.num_classes, batch_norm=config.batch_norm))
        self.last_end = end
        if end.epoch in self.settings.milestones:
            self.milestone(end)

    def milestone(self, end: EpochEnd, **changes) -> None:
        """Milestone ``end``'s model, metrics (with ``changes``), pictures, and the report over all so far."""
        config, data = self.settings.config, self.data
        probs = end.val_probs if config.validate_on_test else predict_probs(end.model, data.x_test)
        metrics = milestone_metrics(self.settings, data, end, probs, wall_seconds=self.wall_seconds(),
                                    short_run=self.short_run) | changes
        folder = self.run.milestone(end.epoch)
        folder.save_model(end.model)
        write_results(folder, metrics, synthetic=data.synthetic, images=data.x_test)
        self.log(f"epoch {end.epoch}: test accuracy {100 * metrics['test_accuracy']:.2f}%, "
                 f"{hms(end.state.train_seconds)} of training")
        msg = collapse_message(metrics, config.to_dict())
        if msg:
            self.log("WARNING: " + msg)
        self.results[end.epoch] = metrics
        self.run.publish(max(self.results))
        self.write_report()

    def draw_curves(self, history: list[dict]) -> None:
        """curves.png, after every epoch: the loss and accuracy so far."""
        from vggcifar.plots import curves_figure, save_figure

        label = "synthetic data, " if self.data.synthetic else ""
        save_figure(curves_figure(history, title=f"{label}recipe {self.settings.config.recipe}"), self.run.curves)

    def stopped(self, reason: str, *, at_epoch_end: bool) -> None:
        """Training ended early without an error (a callback asked): stopped
        at an epoch's end, that epoch is the run's last milestone; metrics.json
        and the report say so."""
        end = self.last_end
        if at_epoch_end and end is not None and end.epoch not in self.results:
            self.milestone(end, status="stopped", reason=reason)
        record = {**read_json_or_empty(self.run.metrics), "status": "stopped", "reason": reason}
        self.run.write_metrics(record)
        if self.results:
            self.write_report(notes=[f"Training stopped early: {reason}."])

    def failed(self, reason: str) -> None:
        """A diverged run: metrics.json says so where a reader looks, and so does an existing report."""
        record = {**read_json_or_empty(self.run.metrics), "status": "failed", "reason": reason,
                  "wall_seconds": self.wall_seconds()}
        self.run.write_metrics(record)
        if self.results and self.run.report.exists():
            self.write_report(notes=[f"Training stopped: {reason}."])

    def write_report(self, notes: list[str] = ()) -> None:
        config = self.settings.config
        done = sorted(self.results)
        notes = list(notes)
        if self.short_run:
            message = short_run_message(self.short_run)
            notes.append(f"**Too short to learn.** {message[0].upper()}{message[1:]}.")
        if len(done) > 1:
            notes.append(milestones_note(config.recipe, config.schedule, config.epoch_independent_schedule, done))
        if config.validate_on_test:
            notes.append("As in the spec's `fit` call, the validation curve is the test set.")
        elif config.val_split:
            notes.append(f"The validation curve is {config.val_split} images held out of the training set; "
                         "the test set is used only for the figures above.")
        milestones = [(self.results[m], self.run.milestone(m).pictures(self.run.path)) for m in done]
        text = render(title=f"VGG-16 on {self.env['dataset']['name']}: results", milestones=milestones,
                      environment=self.env, config=config.to_dict(), notes=notes, curves=self.run.curves.name)
        self.run.write_report(text)
