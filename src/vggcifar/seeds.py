"""Results over seeds: one recipe trained once per seed into a ``SeedsDir``, summed up as mean ± std at each milestone; and recipes compared so.

Each seed's folder is a normal run folder (``vggcifar.experiment.run_plan``);
``seeds.json`` and ``report.md`` are computed from those folders' own files,
so a resumed or partly failed series is summed up from what it holds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from vggcifar.comparison import compare_and_write, summarize_seeds
from vggcifar.experiment import Comparison, Plan, check_distinct, new_plan, resume_plan, run_each
from vggcifar.report import seeds_markdown
from vggcifar.rundir import CompareDir, SeedsDir


def seed_plans(root, seeds: list[int], make_config, milestones: list[int], data: dict, *,
               resume: bool) -> dict[int, Plan]:
    """A plan per seed into ``root/seed-S/``, all checked before the first one
    trains: ``make_config()`` with the seed for a new run; with ``resume``, a
    seed whose folder has begun continues it, and one not begun yet copies a
    begun seed's config, milestones and data (only its seed differs)."""
    check_distinct(seeds, "--seeds", "a seed")
    seeds_dir = SeedsDir(root)
    begun = {s: resume_plan(seeds_dir.seed(s).path) for s in seeds if resume and seeds_dir.seed(s).run_path.exists()}
    template = next(iter(begun.values()), None)
    plans = {}
    for seed in seeds:
        run = seeds_dir.seed(seed)
        if seed in begun:
            plans[seed] = begun[seed]
        elif run.holds_run():
            raise ValueError(f"{run.path} already holds a run; pass --resume to continue the seeds "
                             "or choose another --run-dir")
        elif template is not None:
            plans[seed] = new_plan(dataclasses.replace(template.config, seed=seed), run.path, template.milestones,
                                   template.data)
        else:
            plans[seed] = new_plan(dataclasses.replace(make_config(), seed=seed), run.path, milestones, data)
    return plans


@dataclass(frozen=True)
class SeedsResult:
    """What ``run_seeds`` did: the summary it wrote (seeds.json), its report, the seeds whose loss diverged."""

    summary: dict
    report: Path
    diverged: list[int]


def run_seeds(root, plans: dict[int, Plan], *, log=print, warn=print, verbose: int = 1) -> SeedsResult:
    """Train each seed's plan in turn, then write seeds.json and report.md in
    ``root`` (also after each seed, so a long series shows what it has). A seed
    whose loss diverges is told through ``warn`` and the others still run; an
    interruption stops at once (--resume continues)."""
    summary = {}

    def write(_seed) -> None:
        summary.update(write_seeds(root, list(plans)))

    diverged = run_each(plans, lambda seed, i, n: f"seed {seed} ({i}/{n})", log=log, warn=warn, verbose=verbose,
                        after=write)
    return SeedsResult(summary, SeedsDir(root).report, diverged)


def write_seeds(root, seeds: list[int]) -> dict:
    """seeds.json and report.md of ``root`` from its seeds' folders; the summary."""
    summary = summarize_seeds(root, seeds)
    SeedsDir(root).write(summary, seeds_markdown(summary))
    return summary


def comparison_seed_plans(root, recipes: list[str], seeds: list[int], make_config, milestones: list[int],
                          data: dict, *, resume: bool) -> dict[str, dict[int, Plan]]:
    """``seed_plans`` for each recipe into ``root/<recipe>/``, all checked
    before the first one trains."""
    check_distinct(recipes, "--recipe", "a recipe")
    compare_dir = CompareDir(root)
    return {recipe: seed_plans(compare_dir.recipe_seeds(recipe).path, seeds, lambda r=recipe: make_config(r),
                               milestones, data, resume=resume)
            for recipe in recipes}


def compare_seeds(root, plans: dict[str, dict[int, Plan]], *, log=print, warn=print,
                  verbose: int = 1) -> Comparison:
    """``run_seeds`` for each recipe, then comparison.md and .json in ``root``
    with each recipe's mean ± std over its seeds."""
    compare_dir = CompareDir(root)
    diverged = []
    for i, (recipe, seed_plans_) in enumerate(plans.items(), 1):
        log(f"recipe {i}/{len(plans)}: {recipe}")
        result = run_seeds(compare_dir.recipe_seeds(recipe).path, seed_plans_, log=log, warn=warn, verbose=verbose)
        if result.diverged:
            diverged.append(recipe)
    table, compare_dir = compare_and_write(root, list(plans))
    return Comparison(table, compare_dir.markdown, diverged)
