"""Carrying out a request (vggcifar.request) for one run folder, trained and evaluated at each milestone epoch, or one per milestone or per recipe; resumed where it stopped.

``run_one`` and ``compare`` carry out a request and return its ``Outcome``;
``train_run`` is one run folder: its settings resolved once
(vggcifar.settings.resolve) and recorded, the loop run (vggcifar.loop.fit),
the files kept (vggcifar.record). Outcomes that end a run early are the loop's
``TrainingStopped`` reasons, raised on with the command that continues them;
only the command line turns them into exit statuses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from vggcifar import backend, budget, loop
from vggcifar.config import TrainConfig
from vggcifar.comparison import compare_and_write
from vggcifar.data import CifarData, load_source, settled_source
from vggcifar.record import RunRecord, separate_report
from vggcifar.report import finished_line, learning_rate_text, short_run_message, skipped_lines
from vggcifar.request import Request
from vggcifar.rundir import CompareDir, RunDir
from vggcifar.settings import RunSettings, resolve


@dataclass(frozen=True)
class Outcome:
    """What a request left: its folder, the page to read, and its results."""

    request: Request  # as carried out: its run folder named
    report: Path  # report.md of a run or of seeds, comparison.md of recipes
    metrics: dict | None = None  # a single run's final metrics.json
    summary: dict | None = None  # the comparison or the seeds' summary
    diverged: tuple = ()  # the recipes or seeds whose loss diverged (the others ran)

    @property
    def path(self) -> Path:
        return Path(self.request.run_dir)


# --------------------------------------------------------------------------- #
# one run folder
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Plan:
    """One run folder to train: what to train, where, which epochs to report, on what data."""

    config: TrainConfig
    run_dir: RunDir
    milestones: list[int]
    source: dict  # where the data comes from (vggcifar.data.data_source), as run.json keeps it
    resume: bool = False
    separate_runs: bool = False  # a run of its own for each milestone (train_separately)


def run_one(request: Request, *, log=print, verbose: int = 1, callbacks=()) -> Outcome:
    """A request for one run folder (a run with milestones, or separate runs)."""
    plan = resume_plan(request) if request.resume else new_plan(request, request.recipes[0], request.run_dir)
    return Outcome(request, plan.run_dir.report,
                   metrics=run_plan(plan, log=log, verbose=verbose, callbacks=callbacks))


def new_plan(request: Request, recipe: str, run_dir, **changes) -> Plan:
    """A fresh run of ``recipe`` (with config ``changes``) into ``run_dir``; it must not hold a run already."""
    run = RunDir(run_dir)
    if run.holds_run():
        raise ValueError(f"{run.path} already holds a run; pass --resume to continue it or choose another --run-dir")
    config = request.config(recipe, **changes)
    return Plan(config, run, list(request.milestones or [config.epochs]), request.source,
                separate_runs=request.separate_runs)


def resume_plan(request: Request, run_dir=None) -> Plan:
    """Continue the run in ``run_dir`` (default: the request's) as its files
    describe it; the request's ``devices`` replaces the recorded value (the
    machine may differ; the recipe does not). Asking for separate runs, only a
    folder of separate runs can be continued."""
    run = RunDir(run_dir or request.run_dir)
    config, saved = run.resume_arguments()
    if request.separate_runs and not saved.get("separate_runs"):
        raise ValueError(f"{run.path} is one run with milestones, not separate runs; --resume continues a run "
                         "as it began: drop --separate-runs")
    if request.settings.get("devices") is not None:
        config = dataclasses.replace(config, devices=request.settings["devices"])
    return Plan(config, run, saved.get("milestones") or [config.epochs], saved.get("data", {}), resume=True,
                separate_runs=bool(saved.get("separate_runs")))


def run_plan(plan: Plan, *, log=print, verbose: int = 1, callbacks=()) -> dict:
    """Load the plan's data and train it; the last milestone's metrics."""
    data = load_source(plan.source, limit_train=plan.config.limit_train, limit_test=plan.config.limit_test)
    for line in skipped_lines(data.skipped, plan.run_dir.metrics):
        log(line)
    log(f"run folder: {plan.run_dir.path}")
    log(backend.describe())
    train_it = train_separately if plan.separate_runs else train_run
    return train_it(plan.config, data, plan.run_dir, milestones=plan.milestones, resume=plan.resume,
                    source=plan.source, log=log, verbose=verbose, callbacks=callbacks)


def _begin(run: RunDir, settings: RunSettings, data: CifarData, source: dict | None, *, resume: bool,
           separate_runs: bool = False) -> dict:
    """Under the run's lock, before training: clear stale temps, refuse a
    folder that holds a run unless resuming (for separate runs, any of their
    folders), and write the resolved settings (config.json), run.json and
    environment.json, so the folder says what ran and a resume here runs the
    same; the environment record."""
    run.remove_stale_temps()
    held = run.holds_run() or (separate_runs and any(run.separate_run(m).holds_run() for m in settings.milestones))
    if held and not resume:
        raise ValueError(f"{run.path} already holds a run; pass --resume to continue it or choose another --run-dir")
    env = {**backend.environment(), "dataset": data.describe(), "precision": settings.config.precision,
           "data_format": settings.config.data_format}
    run.write_config(settings.config)
    run.write_run(list(settings.milestones), settled_source(source or {}, data), separate_runs=separate_runs)
    run.write_environment(env)
    return env


def train_run(config: TrainConfig, data: CifarData, run_dir, *, milestones=None, resume: bool = False,
              source: dict | None = None, log=print, verbose: int = 1, max_steps: int | None = None,
              callbacks=()) -> dict:
    """Train in ``run_dir``, evaluating and saving at each milestone epoch
    (``callbacks``: Keras callbacks, see vggcifar.hooks). Returns the last
    milestone's metrics (a run a callback stopped: the epoch it stopped at)."""
    run = RunDir(run_dir)
    settings = resolve(config, len(data.x_train), milestones)  # what cannot be had fails before the folder is touched
    with run.lock():
        env = _begin(run, settings, data, source, resume=resume)
        record = RunRecord(run, settings, data, env, resume=resume, log=log,
                           short_run=announce(settings, log))
        try:
            result = loop.fit(settings, data, run, resume=resume, on_epoch_end=record.epoch_end, log=log,
                               verbose=verbose, max_steps=max_steps, callbacks=callbacks)
            if result.stopped:
                record.stopped(result.stopped, at_epoch_end=result.state.step_in_epoch == 0)
                return run.read_metrics()
        except loop.Diverged as stop:
            record.failed(stop.reason)
            raise
        finally:
            record.close()
        # A run resumed after its end trained nothing: its results were read back.
        return record.results.get(settings.milestones[-1]) or run.read_metrics()


def train_separately(config: TrainConfig, data: CifarData, run_dir, *, milestones=None, resume: bool = False,
                     source: dict | None = None, log=print, verbose: int = 1, callbacks=()) -> dict:
    """A run of its own for each milestone, from the same seed, each with its
    schedule set for its own length: ``run_dir/epochs-010/`` is the whole
    run folder of the 10-epoch run (``RunDir.separate_run``), and the top of
    ``run_dir`` gets the config, the report over all of them and the last
    one's files. For schedules that depend on the run's length (cosine), where
    one long run's milestones are points on its schedule, not shorter runs.
    ``resume`` continues each run where it stopped. Returns the last run's metrics."""
    run = RunDir(run_dir)
    settings = resolve(config, len(data.x_train), milestones)
    with run.lock():
        env = _begin(run, settings, data, source, resume=resume, separate_runs=True)
        config = settings.config
        if config.epoch_independent_schedule:
            log(f"note: the `{config.schedule}` schedule depends only on the step count: one run with "
                "milestones gives these results for less compute")
        results: dict[int, dict] = {}
        for i, m in enumerate(settings.milestones, 1):
            child = run.separate_run(m)
            log(f"separate run {i}/{len(settings.milestones)}: {m} epochs in {child.path}")
            results[m] = train_run(dataclasses.replace(config, epochs=m), data, child, milestones=[m],
                                   resume=resume, source=source, log=log, verbose=verbose, callbacks=callbacks)
            run.publish(m)
            separate_report(run, config, env, results)
        return results[settings.milestones[-1]]


def announce(settings: RunSettings, log) -> dict | None:
    """Before training, once: how the learning rate was set, and the word
    when the run is too short to learn (``budget.short_run``, returned)."""
    log(learning_rate_text(settings.config.to_dict()))
    short = budget.short_run(settings.config, settings.train_images)
    if short:
        log("WARNING: too short to learn: " + short_run_message(short))
    return short


# --------------------------------------------------------------------------- #
# recipes side by side
# --------------------------------------------------------------------------- #
def run_each(plans: dict, label, *, log=print, warn=print, verbose: int = 1, after=None, callbacks=()) -> list:
    """Train each of ``plans`` ({key: Plan}) in turn, ``label(key, i, n)``
    logged before it and ``after(key)`` called after it. A plan whose loss
    diverges is told through ``warn`` and the others still run; an
    interruption stops at once (--resume continues). Returns the keys that diverged."""
    diverged = []
    for i, (key, plan) in enumerate(plans.items(), 1):
        log(label(key, i, len(plans)))
        try:
            log(finished_line(run_plan(plan, log=log, verbose=verbose, callbacks=callbacks), plan.run_dir.report))
        except loop.Diverged as stop:
            warn(stop.reason)
            diverged.append(key)
        if after is not None:
            after(key)
    return diverged


def comparison_plans(request: Request, root=None) -> dict[str, Plan]:
    """A plan per recipe of ``request`` under ``root`` (default: its run
    folder), all checked before the first one trains; with ``resume``, a
    recipe whose folder has begun continues it."""
    compare_dir = CompareDir(root or request.run_dir)
    plans = {}
    for recipe in request.recipes:
        run = compare_dir.recipe(recipe)
        if request.resume and run.run_path.exists():
            plans[recipe] = resume_plan(request, run.path)
        elif run.holds_run():
            raise ValueError(f"{run.path} already holds a run; pass --resume to continue the comparison "
                             "or choose another --run-dir")
        else:
            plans[recipe] = new_plan(request, recipe, run.path)
    return plans


def compare(request: Request, *, log=print, warn=print, verbose: int = 1, callbacks=()) -> Outcome:
    """Train each recipe of ``request`` in turn, then write comparison.md and
    .json and the validation curves in its folder (vggcifar.comparison). A recipe whose loss diverges is told through ``warn``
    and recorded, and the others still run. An interruption stops at once
    (--resume continues)."""
    plans = comparison_plans(request)
    diverged = run_each(plans, lambda recipe, i, n: f"recipe {i}/{n}: {recipe}", log=log, warn=warn,
                        verbose=verbose, callbacks=callbacks)
    table, compare_dir = compare_and_write(request.run_dir, list(plans))
    return Outcome(request, compare_dir.markdown, summary=table, diverged=tuple(diverged))
