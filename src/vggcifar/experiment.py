"""The spec's experiment: a training run evaluated and saved at each milestone epoch, resumed where it stopped, published with its curves and report; and recipes compared side by side.

``run_plan`` is what `vggcifar train` and `vggcifar experiment` run for one
run folder; ``compare`` runs several recipes into one ``CompareDir``. Outcomes
that end a run early are the training loop's ``TrainingStopped`` reasons,
raised on; only the CLI turns them into exit statuses.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from vggcifar import backend, budget, train
from vggcifar.config import TrainConfig, resolve_val_split, trained_images
from vggcifar.data import CifarData, load_source
from vggcifar.evaluate import write_results
from vggcifar.inference import predict_probs
from vggcifar.metrics import summarize
from vggcifar.progress import hms
from vggcifar.report import (collapse_message, comparison_markdown, learning_rate_text, milestones_note,
                             mismatch_message, render, short_run_message)
from vggcifar.rundir import CompareDir, RunDir, read_json_or_empty

#: The spec's Results section: test accuracy after 10, 20, 50 and 100 epochs.
SPEC_MILESTONES = (10, 20, 50, 100)


def default_milestones(epochs: int | None) -> list[int]:
    """The spec's milestones, cut at ``epochs`` (which is always reported)."""
    if epochs is None:
        return list(SPEC_MILESTONES)
    return [m for m in SPEC_MILESTONES if m < epochs] + [epochs]


def check_milestones(config: TrainConfig, milestones: list[int]) -> list[int]:
    """``milestones`` sorted; an error unless they lie in 1..epochs and the last is the last epoch."""
    milestones = sorted(set(milestones))
    if config.epochs < milestones[-1]:
        raise ValueError(f"--epochs {config.epochs} is less than the last milestone {milestones[-1]}")
    if milestones[-1] != config.epochs or milestones[0] < 1:
        raise ValueError(f"Expected milestones within 1..{config.epochs} ending at the last epoch. "
                         f"Received: milestones={milestones}")
    return milestones


# --------------------------------------------------------------------------- #
# one run folder
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Plan:
    """One run folder to train: what to train, where, which epochs to report, on what data."""

    config: TrainConfig
    run_dir: RunDir
    milestones: list[int]
    data: dict  # a data record (vggcifar.data.load_source), as run.json keeps it
    resume: bool = False
    separate_runs: bool = False  # a run of its own for each milestone (train_separately)


def new_plan(config: TrainConfig, run_dir, milestones: list[int] | None, data: dict, *,
             separate_runs: bool = False) -> Plan:
    """A fresh run into ``run_dir``; it must not hold a run already."""
    run = RunDir(run_dir)
    if run.holds_run():
        raise ValueError(f"{run.path} already holds a run; pass --resume to continue it or choose another --run-dir")
    return Plan(config, run, check_milestones(config, milestones or [config.epochs]), data,
                separate_runs=separate_runs)


def resume_plan(run_dir, *, devices: int | str | None = None, separate_runs: bool = False) -> Plan:
    """Continue the run in ``run_dir`` as its files describe it; ``devices``
    replaces the recorded value (the machine may differ; the recipe does not).
    ``separate_runs``: the caller asked for separate runs, which only a folder
    of separate runs can continue."""
    run = RunDir(run_dir)
    config, saved = run.resume_arguments()
    if separate_runs and not saved.get("separate_runs"):
        raise ValueError(f"{run.path} is one run with milestones, not separate runs; --resume continues a run "
                         "as it began: drop --separate-runs")
    if devices is not None:
        config = dataclasses.replace(config, devices=devices)
    return Plan(config, run, check_milestones(config, saved.get("milestones") or [config.epochs]),
                saved.get("data", {}), resume=True, separate_runs=bool(saved.get("separate_runs")))


def run_plan(plan: Plan, *, log=print, verbose: int = 1) -> dict:
    """Load the plan's data and train it (``train_run``); the last milestone's metrics."""
    backend.resolve_devices(plan.config.devices, plan.config.batch_size)  # a bad --devices fails before the data loads
    data = load_source(plan.data, limit_train=plan.config.limit_train, limit_test=plan.config.limit_test)
    log(f"run folder: {plan.run_dir.path}")
    log(backend.describe())
    run = train_separately if plan.separate_runs else train_run
    return run(plan.config, data, plan.run_dir, milestones=plan.milestones, resume=plan.resume,
                     data_args=plan.data, log=log, verbose=verbose)


def _resolved(config: TrainConfig, data: CifarData) -> tuple[TrainConfig, dict]:
    """``config`` with what "auto" means here written down (the split, layout,
    precision, steps per call), so the folder says what ran and a resume on this
    machine runs the same; and the environment record."""
    config = resolve_val_split(config, len(data.x_train))
    config = dataclasses.replace(config, data_format=backend.resolve_data_format(config.data_format),
                                 precision=backend.resolve_precision(config.precision),
                                 steps_per_execution=backend.resolve_steps_per_execution(config.steps_per_execution))
    env = {**backend.environment(), "dataset": data.describe(), "precision": config.precision,
           "data_format": config.data_format}
    return config, env


def _begin(run: RunDir, config: TrainConfig, data: CifarData, milestones: list[int], data_args: dict | None, *,
           resume: bool, separate_runs: bool = False) -> tuple[TrainConfig, dict]:
    """Under the run's lock, before training: clear stale temps, refuse a
    folder that holds a run unless resuming (for separate runs, any of their
    folders), and write the resolved config, run.json and environment.json."""
    run.remove_stale_temps()
    held = run.holds_run() or (separate_runs and any(run.separate_run(m).holds_run() for m in milestones))
    if held and not resume:
        raise ValueError(f"{run.path} already holds a run; pass --resume to continue it or choose another --run-dir")
    config, env = _resolved(config, data)
    run.write_config(config)
    run.write_run(milestones, data_args or {}, separate_runs=separate_runs)
    run.write_environment(env)
    return config, env


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
    run = RunDir(run_dir)
    milestones = check_milestones(config, milestones or [config.epochs])
    with run.lock():
        config, env = _begin(run, config, data, milestones, data_args, resume=resume)
        short = announce(config, trained_images(config, len(data.x_train)), log)
        milestone_run = _MilestoneRun(run, config, data, milestones, env, resume=resume, log=log, short_run=short)
        try:
            train.fit(config, data, run, resume=resume, on_epoch_end=milestone_run.epoch_end, log=log,
                      verbose=verbose, max_steps=max_steps)
        except train.Diverged as stop:
            milestone_run.failed(stop.reason)
            raise
        finally:
            milestone_run.close()
        return milestone_run.last or run.read_metrics()  # a run resumed after its end: its final metrics


def train_separately(
    config: TrainConfig,
    data: CifarData,
    run_dir,
    *,
    milestones: list[int] | None = None,
    resume: bool = False,
    data_args: dict | None = None,
    log=print,
    verbose: int = 1,
) -> dict:
    """A run of its own for each milestone, from the same seed, each with its
    schedule set for its own length: ``run_dir/epochs-010/`` is the whole
    run folder of the 10-epoch run (``RunDir.separate_run``), and the top of
    ``run_dir`` gets the config, the report over all of them and the last
    one's files. For schedules that depend on the run's length (cosine), where
    one long run's milestones are points on its schedule, not shorter runs.
    ``resume`` continues each run where it stopped. Returns the last run's metrics."""
    run = RunDir(run_dir)
    milestones = check_milestones(config, milestones or [config.epochs])
    with run.lock():
        config, env = _begin(run, config, data, milestones, data_args, resume=resume, separate_runs=True)
        if config.epoch_independent_schedule:
            log(f"note: the `{config.schedule}` schedule depends only on the step count: one run with "
                "milestones gives these results for less compute")
        results: dict[int, dict] = {}
        for i, m in enumerate(milestones, 1):
            child = run.separate_run(m)
            log(f"separate run {i}/{len(milestones)}: {m} epochs in {child.path}")
            results[m] = train_run(dataclasses.replace(config, epochs=m), data, child, milestones=[m],
                                   resume=resume, data_args=data_args, log=log, verbose=verbose)
            run.publish(m)
            _write_separate_report(run, config, env, results)
        return results[milestones[-1]]


def _write_separate_report(run: RunDir, config: TrainConfig, env: dict, results: dict[int, dict]) -> None:
    done = sorted(results)
    notes = [milestones_note(config.recipe, config.schedule, config.epoch_independent_schedule, done,
                             separate=True)] if len(done) > 1 else []
    last = run.separate_run(done[-1])
    milestones = [(results[m], run.separate_run(m).pictures(run.path)) for m in done]
    text = render(title=f"VGG-16 on {env['dataset']['name']}: results", milestones=milestones,
                  environment=env, config=config.to_dict(), notes=notes,
                  curves=f"{last.path.name}/{last.curves.name}")
    run.write_report(text)


def announce(config: TrainConfig, train_images: int, log) -> dict | None:
    """Before training, once: how the learning rate was set, and the word
    when the run is too short to learn (``budget.short_run``, returned)."""
    log(learning_rate_text(config.to_dict()))
    short = budget.short_run(config, train_images)
    if short:
        log("WARNING: too short to learn: " + short_run_message(short))
    return short


class _MilestoneRun:
    """What a run keeps of its epochs: history.csv and curves.png after each
    (and TensorBoard's event files with ``config.tensorboard``), and at each
    milestone the model, metrics, pictures and report."""

    def __init__(self, run: RunDir, config: TrainConfig, data: CifarData, milestones: list[int], env: dict, *,
                 resume: bool, log, short_run: dict | None = None):
        self.run, self.config, self.data, self.milestones, self.env, self.log = run, config, data, milestones, env, log
        self.short_run = short_run
        self.started = time.monotonic()
        self.wall_before = 0.0
        # Earlier milestones of a resumed run, read once for the report.
        self.results: dict[int, dict] = {}
        if resume:
            self.wall_before = read_json_or_empty(run.metrics).get("wall_seconds", 0.0)
            for m in run.done_milestones(milestones):
                self.results[m] = read_json_or_empty(run.milestone(m).metrics)
        self.last: dict = {}
        self.live = None
        if config.tensorboard:
            from vggcifar.liveview import SPLITS, EpochScalars

            self.live = EpochScalars(run.tensorboard_folders(SPLITS),
                                     images_per_epoch=trained_images(config, len(data.x_train)))

    def close(self) -> None:
        if self.live is not None:
            self.live.close()

    def wall_seconds(self) -> float:
        return self.wall_before + time.monotonic() - self.started

    def epoch_end(self, end: train.EpochEnd) -> None:
        config, data = self.config, self.data
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
        if end.epoch not in self.milestones:
            return
        probs = end.val_probs if config.validate_on_test else predict_probs(end.model, data.x_test)
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
            "wall_seconds": self.wall_seconds(),
            "status": "complete" if end.epoch == config.epochs else "milestone",
            "synthetic": data.synthetic,
            "subset": data.subset,
            "train_images": trained_images(config, len(data.x_train)),
            "val_images": config.val_split,
            "short_run": self.short_run,
        }
        folder = self.run.milestone(end.epoch)
        folder.save_model(end.model)
        write_results(folder, metrics, synthetic=data.synthetic, images=data.x_test)
        self.log(f"epoch {end.epoch}: test accuracy {100 * metrics['test_accuracy']:.2f}%, "
                 f"{hms(end.state.train_seconds)} of training")
        msg = collapse_message(metrics, config.to_dict())
        if msg:
            self.log("WARNING: " + msg)
        self.last = self.results[end.epoch] = metrics
        self.publish()

    def publish(self) -> None:
        """The newest milestone's files at the top of the run folder, and
        report.md over all milestones so far."""
        self.run.publish(max(self.results))
        self.write_report()

    def draw_curves(self, history: list[dict]) -> None:
        """curves.png, after every epoch: the loss and accuracy so far."""
        from vggcifar.plots import curves_figure, save_figure

        label = "synthetic data, " if self.data.synthetic else ""
        save_figure(curves_figure(history, title=f"{label}recipe {self.config.recipe}"), self.run.curves)

    def failed(self, reason: str) -> None:
        """A diverged run: metrics.json says so where a reader looks, and so does an existing report."""
        record = {**read_json_or_empty(self.run.metrics), "status": "failed", "reason": reason,
                  "wall_seconds": self.wall_seconds()}
        self.run.write_metrics(record)
        if self.results and self.run.report.exists():
            self.write_report(notes=[f"Training stopped: {reason}."])

    def write_report(self, notes: list[str] = ()) -> None:
        config = self.config.to_dict()
        done = sorted(self.results)
        notes = list(notes)
        if self.short_run:
            message = short_run_message(self.short_run)
            notes.append(f"**Too short to learn.** {message[0].upper()}{message[1:]}.")
        if len(done) > 1:
            notes.append(milestones_note(self.config.recipe, self.config.schedule,
                                         self.config.epoch_independent_schedule, done))
        if config.get("validate_on_test"):
            notes.append("As in the spec's `fit` call, the validation curve is the test set.")
        elif config.get("val_split"):
            notes.append(f"The validation curve is {config['val_split']} images held out of the training set; "
                         "the test set is used only for the figures above.")
        milestones = [(self.results[m], self.run.milestone(m).pictures(self.run.path)) for m in done]
        text = render(title=f"VGG-16 on {self.env['dataset']['name']}: results", milestones=milestones,
                      environment=self.env, config=config, notes=notes, curves=self.run.curves.name)
        self.run.write_report(text)


# --------------------------------------------------------------------------- #
# recipes side by side
# --------------------------------------------------------------------------- #
def check_distinct(values: list, option: str, what: str) -> None:
    """Refuse an option that names the same run twice (its folders would collide)."""
    if len(set(values)) < len(values):
        raise ValueError(f"{option} names {what} twice: {','.join(map(str, values))}")


def run_each(plans: dict, label, *, log=print, warn=print, verbose: int = 1, after=None) -> list:
    """Train each of ``plans`` ({key: Plan}) in turn, ``label(key, i, n)``
    logged before it and ``after(key)`` called after it. A plan whose loss
    diverges is told through ``warn`` and the others still run; an
    interruption stops at once (--resume continues). Returns the keys that diverged."""
    diverged = []
    for i, (key, plan) in enumerate(plans.items(), 1):
        log(label(key, i, len(plans)))
        try:
            log(finished_line(run_plan(plan, log=log, verbose=verbose), plan.run_dir))
        except train.Diverged as stop:
            warn(stop.reason)
            diverged.append(key)
        if after is not None:
            after(key)
    return diverged


def comparison_plans(root, recipes: list[str], make_config, milestones: list[int], data: dict, *,
                     resume: bool, separate_runs: bool = False) -> dict[str, Plan]:
    """A plan per recipe under ``root``, all checked before the first one
    trains: ``make_config(recipe)`` for a new run; with ``resume``, a recipe
    whose folder has begun continues it."""
    check_distinct(recipes, "--recipe", "a recipe")
    compare_dir = CompareDir(root)
    plans = {}
    for recipe in recipes:
        run = compare_dir.recipe(recipe)
        if resume and run.run_path.exists():
            plans[recipe] = resume_plan(run.path)
        elif run.holds_run():
            raise ValueError(f"{run.path} already holds a run; pass --resume to continue the comparison "
                             "or choose another --run-dir")
        else:
            plans[recipe] = new_plan(make_config(recipe), run.path, milestones, data, separate_runs=separate_runs)
    return plans


@dataclass(frozen=True)
class Comparison:
    """What ``compare`` did: the comparison it wrote, and the recipes whose loss diverged."""

    table: dict
    markdown: Path
    diverged: list[str]


def compare(root, plans: dict[str, Plan], *, log=print, warn=print, verbose: int = 1) -> Comparison:
    """Train each plan in turn, then write comparison.md and .json in ``root``.
    A recipe whose loss diverges is told through ``warn`` and recorded, and
    the others still run. An interruption stops at once (--resume continues)."""
    compare_dir = CompareDir(root)
    diverged = run_each(plans, lambda recipe, i, n: f"recipe {i}/{n}: {recipe}", log=log, warn=warn,
                        verbose=verbose)
    table = compare_runs(root, list(plans))
    compare_dir.write(table, comparison_markdown(table))
    return Comparison(table, compare_dir.markdown, diverged)


def finished_line(metrics: dict, run: RunDir) -> str:
    """The line that ends a run: its final accuracy and where its report is."""
    return (f"test accuracy after {metrics['epoch']} epochs: {100 * metrics['test_accuracy']:.2f}%; "
            f"report: {run.report}")


def compare_runs(root, recipes: list[str]) -> dict:
    """The comparison of the run folders ``root/<recipe>/``, from their
    files: test accuracy at each milestone, the final one, collapse, time of
    learning and training images per second."""
    compare_dir = CompareDir(root)
    rows, milestones, dataset, synthetic = [], set(), None, False
    for recipe in recipes:
        run = compare_dir.recipe(recipe)
        final = read_json_or_empty(run.metrics)
        ms = run.read_run().get("milestones", [])
        milestones.update(ms)
        accuracy = {str(m): read_json_or_empty(run.milestone(m).metrics).get("test_accuracy") for m in ms}
        env = run.read_environment().get("dataset", {})
        dataset = dataset or env.get("name")
        status = final.get("status", "missing")
        row = {
            "recipe": recipe,
            "status": status,
            "test_accuracy": accuracy,
            "final_accuracy": final.get("test_accuracy") if status == "complete" else None,
            "collapsed": bool(final.get("collapse")),
            "train_seconds": final.get("train_seconds"),
            "images_per_second": images_per_second(final),
            "synthetic": bool(final.get("synthetic", env.get("synthetic", False))),
        }
        synthetic = synthetic or row["synthetic"]
        rows.append(row)
    return {"dataset": dataset, "milestones": sorted(milestones), "synthetic": synthetic, "rows": rows}


def images_per_second(metrics: dict) -> float | None:
    """A run's training images per second of learning, from its final
    metrics.json (None when it does not say)."""
    seconds, epoch, images = metrics.get("train_seconds"), metrics.get("epoch"), metrics.get("train_images")
    return images * epoch / seconds if seconds and epoch and images else None


def default_run_dir(name: str) -> Path:
    """runs/NAME-YYYYmmdd-HHMMSS."""
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
