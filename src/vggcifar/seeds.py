"""Results over seeds: one recipe trained once per seed into a ``SeedsDir``, summed up as mean ± std at each milestone; and recipes compared so.

Each seed's folder is a normal run folder (``vggcifar.runs.run_plan``);
``seeds.json`` and ``report.md`` are computed from those folders' own files,
so a resumed or partly failed series is summed up from what it holds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from vggcifar.comparison import compare_and_write, summarize_seeds
from vggcifar.report import seeds_markdown
from vggcifar.request import Request
from vggcifar.runs import Outcome, Plan, new_plan, resume_plan, run_each
from vggcifar.rundir import CompareDir, SeedsDir


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


def comparison_seed_plans(request: Request) -> dict[str, dict[int, Plan]]:
    """``seed_plans`` for each recipe of ``request`` into ``root/<recipe>/``,
    all checked before the first one trains."""
    compare_dir = CompareDir(request.run_dir)
    return {recipe: seed_plans(request, compare_dir.recipe_seeds(recipe).path, recipe) for recipe in request.recipes}


def compare_seeds(root, plans: dict[str, dict[int, Plan]], *, log=print, warn=print, verbose: int = 1,
                  callbacks=()) -> SeedsResult:
    """``run_seeds`` for each recipe, then comparison.md and .json and the
    validation curves in ``root`` with each recipe's mean ± std over its seeds
    (vggcifar.comparison)."""
    compare_dir = CompareDir(root)
    diverged = []
    for i, (recipe, seed_plans_) in enumerate(plans.items(), 1):
        log(f"recipe {i}/{len(plans)}: {recipe}")
        result = run_seeds(compare_dir.recipe_seeds(recipe).path, seed_plans_, log=log, warn=warn, verbose=verbose,
                           callbacks=callbacks)
        if result.diverged:
            diverged.append(recipe)
    table, compare_dir = compare_and_write(root, list(plans))
    return SeedsResult(table, compare_dir.markdown, diverged)
