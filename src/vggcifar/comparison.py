"""Run folders side by side: each read from its own files into one table, a folder of seeds as mean ± std, their validation curves; and that comparison written.

A row per folder: a run folder (``train``, ``experiment``, one recipe of a
comparison, one of ``--separate-runs``) with its recipe, data, epochs, test
accuracy at each milestone, top-5, time of learning, images per second,
precision and backend; a folder of seeds (``experiment --seeds``) the same
with each accuracy the mean over its seeds, its standard deviation and
number in ``spread``. ``experiment --recipe a,b``, ``experiment --seeds``
and ``vggcifar compare`` all compare through ``compare_folders`` and write
through ``write_comparison``; the words are ``vggcifar.report``'s, the
picture ``vggcifar.plots``'.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vggcifar.metrics import TOP_K_KEY, mean_std
from vggcifar.rundir import CompareDir, RunDir, SeedsDir, read_json_or_empty

#: What a folder given to ``compare_folders`` is (``folder_kind``).
RUN, SEEDS, COMPARISON = "run", "seeds", "comparison"


def images_per_second(metrics: dict) -> float | None:
    """A run's training images per second of learning, from its final
    metrics.json (None when it does not say)."""
    seconds, epoch, images = metrics.get("train_seconds"), metrics.get("epoch"), metrics.get("train_images")
    return images * epoch / seconds if seconds and epoch and images else None


def folder_kind(path) -> str | None:
    """RUN, SEEDS or COMPARISON by the records in ``path``; None for none of them."""
    path = Path(path)
    seeds = SeedsDir(path)
    if seeds.json.exists() or seeds.found_seeds():
        return SEEDS
    if CompareDir(path).json.exists():
        return COMPARISON
    run = RunDir(path)
    if run.run_path.exists() or run.metrics.exists():
        return RUN
    return None


def check_folders(paths) -> list[Path]:
    """``paths`` as folders to compare, each checked: a ValueError that names
    the first that is not a run, seeds or comparison folder, or is given twice."""
    folders = [Path(p) for p in paths]
    for path in folders:
        if not path.is_dir():
            raise ValueError(f"{path}: no such folder; pass run folders that vggcifar train or experiment wrote")
        if folder_kind(path) is None:
            raise ValueError(f"{path}: not a run folder (no {RunDir(path).run_path.name}, "
                             f"{SeedsDir(path).json.name} or {CompareDir(path).json.name} in it); pass folders "
                             "that vggcifar train or experiment wrote")
    seen = set()
    for path in folders:
        if path.resolve() in seen:
            raise ValueError(f"{path}: given twice; pass each run folder once")
        seen.add(path.resolve())
    return folders


def _recipes_of(compare_dir: CompareDir) -> list[str]:
    """The recipes a comparison folder compared, in its order (rows written
    before the table had names give their recipe)."""
    rows = read_json_or_empty(compare_dir.json).get("rows", [])
    return [r.get("name") or r.get("recipe") for r in rows if r.get("name") or r.get("recipe")]


def _expand(folders: list[Path], names: list[str]) -> list[tuple[Path, str]]:
    """A comparison folder stands for the folders it compared, named NAME/recipe."""
    out = []
    for path, name in zip(folders, names):
        if folder_kind(path) == COMPARISON:
            compare_dir = CompareDir(path)
            out += [(compare_dir.recipe(r).path, f"{name}/{r}") for r in _recipes_of(compare_dir)]
        else:
            out.append((path, name))
    return out


def _link(report: Path, relative_to: Path | None) -> str | None:
    """A report's path relative to the comparison's folder, for a link (None: no links)."""
    if relative_to is None:
        return None
    return Path(os.path.relpath(report, relative_to)).as_posix()


def _one_or_several(values) -> str | None:
    """The one value the folders agree on, else all of them joined."""
    distinct = list(dict.fromkeys(v for v in values if v is not None))
    return ", ".join(map(str, distinct)) if distinct else None


def _history(run: RunDir) -> list[dict]:
    """history.csv of a run; of its longest run for a folder of separate runs."""
    saved = run.read_run()
    if saved.get("separate_runs") and saved.get("milestones"):
        run = run.separate_run(max(saved["milestones"]))
    try:
        return run.read_history()
    except (OSError, ValueError):
        return []


def _validation(config: dict) -> str | None:
    """What a run's validation curve was measured on, from its config.json."""
    if config.get("validate_on_test"):
        return "the test set"
    if config.get("val_split"):
        return f"{config['val_split']:,} held-out training images"
    return None


def run_row(run: RunDir, name: str, *, relative_to: Path | None = None) -> dict:
    """One run folder's row, from its files: its final metrics.json, each
    milestone's, config.json, environment.json and run.json."""
    final = read_json_or_empty(run.metrics)
    config = run.read_config_values()
    env = run.read_environment()
    data = env.get("dataset", {})
    ms = run.read_run().get("milestones", [])
    status = final.get("status", "missing")
    return {
        "name": name,
        "kind": RUN,
        "report": _link(run.report, relative_to),
        "recipe": config.get("recipe"),
        "dataset": data.get("name"),
        "status": status,
        "epochs": final.get("epoch"),
        "milestones": list(ms),
        "test_accuracy": {str(m): read_json_or_empty(run.milestone(m).metrics).get("test_accuracy") for m in ms},
        "final_accuracy": final.get("test_accuracy") if status == "complete" else None,
        "top_5_accuracy": final.get(TOP_K_KEY) if status == "complete" else None,
        "collapsed": bool(final.get("collapse")),
        "train_seconds": final.get("train_seconds"),
        "images_per_second": images_per_second(final),
        "precision": env.get("precision", config.get("precision")),
        "backend": env.get("backend"),
        "synthetic": bool(final.get("synthetic", data.get("synthetic", False))),
        "validation": _validation(config),
    }


def summarize_seeds(root, seeds: list[int]) -> dict:
    """The seeds' run folders ``root/seed-S/`` summed up from their files: at
    each milestone the test accuracies of the seeds that reached it, their
    mean, standard deviation (ddof=1) and number, the same of their top-5
    accuracy (where measured), the mean time of learning and the confusion
    matrix summed over them; and a row per seed."""
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
            TOP_K_KEY: mean_std([r[TOP_K_KEY] for _, r in got if r.get(TOP_K_KEY) is not None]),
            "train_seconds": mean_std(seconds)["mean"],
            # None unless every seed has its matrix (a damaged or hand-made metrics.json may not).
            "confusion_matrix": (np.sum([r["confusion_matrix"] for _, r in got], axis=0).tolist()
                                 if got and all("confusion_matrix" in r for _, r in got) else None),
        }
    return {"recipe": recipe, "dataset": dataset, "synthetic": synthetic, "seeds": list(seeds),
            "class_names": class_names, "milestones": milestones, "runs": runs}


def seeds_of(seeds_dir: SeedsDir) -> list[int]:
    """The seeds of a folder of seeds: as its seeds.json lists them, else the seed folders in it."""
    return list(seeds_dir.read().get("seeds") or seeds_dir.found_seeds())


def seeds_row(seeds_dir: SeedsDir, name: str, *, relative_to: Path | None = None) -> dict:
    """A folder of seeds as one row (``run_row``'s fields): each accuracy the
    mean over the seeds that reached it, with its standard deviation and
    number of seeds in ``spread``; time of learning and images/s the means."""
    seeds = seeds_of(seeds_dir)
    summary = summarize_seeds(seeds_dir.path, seeds)
    ms = summary["milestones"]
    runs = [run_row(seeds_dir.seed(s), f"{name}/seed-{s}") for s in seeds]
    complete = sum(r["status"] == "complete" for r in runs)
    done = bool(runs) and complete == len(runs)
    last = ms[str(max(map(int, ms)))] if ms else None
    top = last[TOP_K_KEY] if done and last and last[TOP_K_KEY]["n"] else None
    return {
        "name": name,
        "kind": SEEDS,
        "report": _link(seeds_dir.report, relative_to),
        "recipe": summary["recipe"],
        "dataset": summary["dataset"],
        "status": "complete" if done else f"{complete} of {len(runs)} seeds complete",
        "epochs": max((r["epochs"] for r in runs if r["epochs"] is not None), default=None),
        "milestones": sorted(int(m) for m in ms),
        "seeds": seeds,
        "test_accuracy": {m: v["mean"] for m, v in ms.items()},
        "final_accuracy": last["mean"] if done and last else None,
        "top_5_accuracy": top["mean"] if top else None,
        # The standard deviation and number of seeds behind each mean above.
        "spread": {**{m: {"std": v["std"], "n": v["n"]} for m, v in ms.items()},
                   "final": {"std": last["std"], "n": last["n"]} if done and last else None,
                   "top_5": {"std": top["std"], "n": top["n"]} if top else None},
        "collapsed": any(r["collapsed"] for r in runs),
        "train_seconds": mean_std([r["train_seconds"] for r in runs if r["train_seconds"] is not None])["mean"],
        "images_per_second": mean_std([r["images_per_second"] for r in runs
                                       if r["images_per_second"] is not None])["mean"],
        "precision": _one_or_several(r["precision"] for r in runs),
        "backend": _one_or_several(r["backend"] for r in runs),
        "synthetic": summary["synthetic"],
        "validation": _one_or_several(r["validation"] for r in runs),
    }


def compare_folders(folders, names: list[str] | None = None, *, relative_to=None) -> dict:
    """The comparison of ``folders`` (run folders, folders of seeds, or
    comparison folders, which stand for the folders they compared), a row
    each, named by ``names`` (default: the paths as given). ``relative_to``:
    the folder the comparison is written to, for links to each report (None:
    no links). Folders with no records yet are rows with status "missing"."""
    folders = [Path(p) for p in folders]
    names = list(names) if names is not None else [str(p) for p in folders]
    relative_to = None if relative_to is None else Path(relative_to)
    rows = []
    for path, name in _expand(folders, names):
        if folder_kind(path) == SEEDS:
            rows.append(seeds_row(SeedsDir(path), name, relative_to=relative_to))
        else:
            rows.append(run_row(RunDir(path), name, relative_to=relative_to))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows if r["dataset"]))
    return {
        "dataset": datasets[0] if len(datasets) == 1 else None,  # the title's, when they agree
        "datasets": datasets,
        "milestones": sorted({int(m) for r in rows for m in r["milestones"]}),
        "synthetic": any(r["synthetic"] for r in rows),
        "rows": rows,
    }


def compare_runs(root, recipes: list[str]) -> dict:
    """The comparison of ``experiment --recipe a,b``: the folders
    ``root/<recipe>/`` (run folders, or folders of seeds with ``--seeds``)."""
    compare_dir = CompareDir(root)
    return compare_folders([compare_dir.recipe(r).path for r in recipes], recipes, relative_to=compare_dir.path)


def _mean_curve(histories: list[list[dict]], key: str) -> tuple[list[int], list, list | None]:
    """Epochs, the mean of ``key`` over ``histories`` at each epoch that some
    of them reached, and its standard deviation (None for a single history)."""
    by_epoch: dict[int, list[float]] = {}
    for history in histories:
        for row in history:
            if row.get(key) is not None:
                by_epoch.setdefault(int(row["epoch"]), []).append(row[key])
    epochs = sorted(by_epoch)
    stats = [mean_std(by_epoch[e]) for e in epochs]
    std = [s["std"] for s in stats] if len(histories) > 1 else None
    return epochs, [s["mean"] for s in stats], std


def validation_curves(folders, names: list[str] | None = None) -> list[dict]:
    """Each folder's validation loss and accuracy by epoch (a folder of seeds:
    the mean over its seeds, with the standard deviation), from history.csv;
    folders without a validation curve are left out."""
    folders = [Path(p) for p in folders]
    names = list(names) if names is not None else [str(p) for p in folders]
    curves = []
    for path, name in _expand(folders, names):
        if folder_kind(path) == SEEDS:
            seeds_dir = SeedsDir(path)
            runs = [seeds_dir.seed(s) for s in seeds_of(seeds_dir)]
        else:
            runs = [RunDir(path)]
        histories = [h for h in (_history(r) for r in runs) if h]
        if not histories:
            continue
        curve = {"name": name, "validation": _one_or_several(_validation(r.read_config_values()) for r in runs)}
        for key in ("val_loss", "val_accuracy"):
            epochs, mean, std = _mean_curve(histories, key)
            curve[key] = {"epoch": epochs, "mean": mean, "std": std}
        if curve["val_accuracy"]["epoch"]:
            curves.append(curve)
    return curves


def write_comparison(folder, table: dict, curves: list[dict]) -> CompareDir:
    """comparison.md, comparison.json (the table and the curves) and the
    validation curves' picture in ``folder``."""
    from vggcifar.plots import save_figure, validation_curves_figure
    from vggcifar.report import comparison_markdown

    compare_dir = CompareDir(folder)
    compare_dir.path.mkdir(parents=True, exist_ok=True)
    if curves:
        title = f"{'synthetic data, ' if table.get('synthetic') else ''}validation curves"
        save_figure(validation_curves_figure(curves, title=title), compare_dir.curves)
    else:  # none to draw: no picture of an earlier comparison left beside this one
        compare_dir.curves.unlink(missing_ok=True)
    picture = compare_dir.curves.name if curves else None
    compare_dir.write({**table, "curves": curves}, comparison_markdown(table, curves=picture))
    return compare_dir


def compare_and_write(root, recipes: list[str]) -> tuple[dict, CompareDir]:
    """``compare_runs`` and ``write_comparison`` for ``experiment --recipe a,b`` in ``root``."""
    compare_dir = CompareDir(root)
    folders = [compare_dir.recipe(r).path for r in recipes]
    table = compare_runs(root, recipes)
    write_comparison(root, table, validation_curves(folders, recipes))
    return table, compare_dir
