"""Results over seeds: one recipe trained once per seed into a ``SeedsDir``, summed up as mean ± std at each milestone; and recipes compared so.

Each seed's folder is a normal run folder (``vggcifar.runs.run_plan``);
``seeds.json`` and ``report.md`` are computed from those folders' own files,
so a resumed or partly failed series is summed up from what it holds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vggcifar.runs import Outcome, Plan, images_per_second, new_plan, resume_plan, run_each
from vggcifar.metrics import mean_std
from vggcifar.report import comparison_markdown, seeds_markdown
from vggcifar.request import Request
from vggcifar.rundir import CompareDir, SeedsDir, read_json_or_empty


def run_request(request: Request, *, log=print, warn=print, verbose: int = 1, callbacks=()) -> Outcome:
    """A request over seeds: one recipe's seeds (seeds.json, report.md), or
    several recipes' compared as mean ± std (comparison.md)."""
    if len(request.recipes) == 1:
        result = run_seeds(request.run_dir, seed_plans(request), log=log, warn=warn, verbose=verbose,
                           callbacks=callbacks)
    else:
        result = compare_seeds(request.run_dir, comparison_seed_plans(request), log=log, warn=warn, verbose=verbose,
                               callbacks=callbacks)
    return Outcome(request, result.report, summary=result.summary, diverged=tuple(result.diverged))


def seed_plans(request: Request, root=None, recipe: str | None = None) -> dict[int, Plan]:
    """A plan per seed of ``request`` into ``root/seed-S/`` (default: its run
    folder), all checked before the first one trains: ``recipe``'s config with
    the seed for a new run; with ``resume``, a seed whose folder has begun
    continues it, and one not begun yet copies a begun seed's config,
    milestones and data (only its seed differs)."""
    seeds_dir = SeedsDir(root or request.run_dir)
    begun = {s: resume_plan(request, seeds_dir.seed(s).path) for s in request.seeds
             if request.resume and seeds_dir.seed(s).run_path.exists()}
    template = next(iter(begun.values()), None)
    plans = {}
    for seed in request.seeds:
        run = seeds_dir.seed(seed)
        if seed in begun:
            plans[seed] = begun[seed]
        elif run.holds_run():
            raise ValueError(f"{run.path} already holds a run; pass --resume to continue the seeds "
                             "or choose another --run-dir")
        elif template is not None:
            plans[seed] = dataclasses.replace(template, config=dataclasses.replace(template.config, seed=seed),
                                              run_dir=run, resume=False)
        else:
            plans[seed] = new_plan(request, recipe or request.recipes[0], run.path, seed=seed)
    return plans


@dataclass(frozen=True)
class SeedsResult:
    """What ``run_seeds`` or ``compare_seeds`` did: the summary it wrote
    (seeds.json, comparison.json), its page, the seeds or recipes whose loss diverged."""

    summary: dict
    report: Path
    diverged: list[int]


def run_seeds(root, plans: dict[int, Plan], *, log=print, warn=print, verbose: int = 1,
              callbacks=()) -> SeedsResult:
    """Train each seed's plan in turn, then write seeds.json and report.md in
    ``root`` (also after each seed, so a long series shows what it has). A seed
    whose loss diverges is told through ``warn`` and the others still run; an
    interruption stops at once (--resume continues)."""
    summary = {}

    def write(_seed) -> None:
        summary.update(write_seeds(root, list(plans)))

    diverged = run_each(plans, lambda seed, i, n: f"seed {seed} ({i}/{n})", log=log, warn=warn, verbose=verbose,
                        after=write, callbacks=callbacks)
    return SeedsResult(summary, SeedsDir(root).report, diverged)


def write_seeds(root, seeds: list[int]) -> dict:
    """seeds.json and report.md of ``root`` from its seeds' folders; the summary."""
    summary = summarize_seeds(root, seeds)
    SeedsDir(root).write(summary, seeds_markdown(summary))
    return summary


def summarize_seeds(root, seeds: list[int]) -> dict:
    """The seeds' run folders ``root/seed-S/`` summed up from their files: at
    each milestone the test accuracies of the seeds that reached it, their
    mean, standard deviation (ddof=1) and number, the mean time of learning
    and the confusion matrix summed over them; and a row per seed."""
    seeds_dir = SeedsDir(root)
    runs, reached, recipe, dataset, class_names, synthetic = [], {}, None, None, None, False
    for seed in seeds:
        run = seeds_dir.seed(seed)
        final = read_json_or_empty(run.metrics)
        milestones = run.read_run().get("milestones", [])
        results = {m: read_json_or_empty(run.milestone(m).metrics) for m in milestones}
        env = run.read_environment().get("dataset", {})
        recipe = recipe or run.read_config_values().get("recipe")
        dataset = dataset or env.get("name")
        synthetic = synthetic or bool(final.get("synthetic", env.get("synthetic", False)))
        for m, metrics in results.items():
            reached.setdefault(m, [])
            if "test_accuracy" in metrics:
                reached[m].append((seed, metrics))
                class_names = class_names or metrics.get("class_names")
        runs.append({
            "seed": seed,
            "status": final.get("status", "missing"),
            "test_accuracy": {str(m): r.get("test_accuracy") for m, r in results.items()},
            "collapsed": bool(final.get("collapse")),
            "train_seconds": final.get("train_seconds"),
        })
    milestones = {}
    for m in sorted(reached):
        got = reached[m]
        seconds = [r["train_seconds"] for _, r in got if r.get("train_seconds") is not None]
        milestones[str(m)] = {
            **mean_std([r["test_accuracy"] for _, r in got]),
            "test_accuracy": [r["test_accuracy"] for _, r in got],
            "seeds": [s for s, _ in got],
            "train_seconds": mean_std(seconds)["mean"],
            "confusion_matrix": (np.sum([r["confusion_matrix"] for _, r in got], axis=0).tolist() if got else None),
        }
    return {"recipe": recipe, "dataset": dataset, "synthetic": synthetic, "seeds": list(seeds),
            "class_names": class_names, "milestones": milestones, "runs": runs}


def comparison_seed_plans(request: Request) -> dict[str, dict[int, Plan]]:
    """``seed_plans`` for each recipe of ``request`` into ``root/<recipe>/``,
    all checked before the first one trains."""
    compare_dir = CompareDir(request.run_dir)
    return {recipe: seed_plans(request, compare_dir.recipe_seeds(recipe).path, recipe) for recipe in request.recipes}


def compare_seeds(root, plans: dict[str, dict[int, Plan]], *, log=print, warn=print, verbose: int = 1,
                  callbacks=()) -> SeedsResult:
    """``run_seeds`` for each recipe, then comparison.md and .json in ``root``
    with each recipe's mean ± std over its seeds."""
    compare_dir = CompareDir(root)
    diverged = []
    for i, (recipe, seed_plans_) in enumerate(plans.items(), 1):
        log(f"recipe {i}/{len(plans)}: {recipe}")
        result = run_seeds(compare_dir.recipe_seeds(recipe).path, seed_plans_, log=log, warn=warn, verbose=verbose,
                           callbacks=callbacks)
        if result.diverged:
            diverged.append(recipe)
    table = compare_seed_runs(root, list(plans))
    compare_dir.write(table, comparison_markdown(table))
    return SeedsResult(table, compare_dir.markdown, diverged)


def compare_seed_runs(root, recipes: list[str]) -> dict:
    """The comparison of the recipes' seeds folders ``root/<recipe>/`` from
    their seeds.json: compare_runs' table, each accuracy the mean over the
    seeds, with its standard deviation and number of seeds in ``spread``."""
    compare_dir = CompareDir(root)
    rows, milestones, dataset, synthetic = [], set(), None, False
    for recipe in recipes:
        summary = compare_dir.recipe_seeds(recipe).read()
        ms = summary.get("milestones", {})
        milestones.update(int(m) for m in ms)
        runs = summary.get("runs", [])
        complete = sum(r["status"] == "complete" for r in runs)
        last = ms.get(str(max(map(int, ms)))) if ms else None
        per_second = [images_per_second(read_json_or_empty(compare_dir.recipe_seeds(recipe).seed(r["seed"]).metrics))
                      for r in runs]
        done = bool(runs) and complete == len(runs)
        rows.append({
            "recipe": recipe,
            "status": "complete" if done else f"{complete} of {len(runs)} seeds complete",
            "seeds": summary.get("seeds", []),
            "test_accuracy": {m: v["mean"] for m, v in ms.items()},
            "final_accuracy": last["mean"] if done and last else None,
            # The standard deviation and number of seeds behind each mean above.
            "spread": {**{m: {"std": v["std"], "n": v["n"]} for m, v in ms.items()},
                       "final": {"std": last["std"], "n": last["n"]} if done and last else None},
            "collapsed": any(r["collapsed"] for r in runs),
            "train_seconds": last["train_seconds"] if last else None,
            "images_per_second": mean_std([v for v in per_second if v is not None])["mean"],
            "synthetic": bool(summary.get("synthetic")),
        })
        dataset = dataset or summary.get("dataset")
        synthetic = synthetic or rows[-1]["synthetic"]
    return {"dataset": dataset, "milestones": sorted(milestones), "synthetic": synthetic, "rows": rows}
