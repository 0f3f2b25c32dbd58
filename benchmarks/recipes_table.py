"""The calibration tables of docs/recipes.md from `vggcifar experiment --recipe a,b --seeds 0,1,2` run folders: per recipe and seed, the test accuracy, the stall, time to accuracy.

    PYTHONPATH=src python benchmarks/recipes_table.py runs/hard-s0 runs/hard-s1 runs/hard-s2 [--tta]

For each RUN_DIR/<recipe>/seed-<S>/ of the folders given (one table over all of them) it reads history.csv and metrics.json and
gives: the final test accuracy (and, with ``--tta``, that of
``vggcifar evaluate --tta flip`` from evaluation-flip/metrics.json), the
**stall** (the leading epochs whose validation accuracy stayed under
STALL_ACCURACY: at chance), the epochs at which validation accuracy first
reached 50%, 80% and 90% (``vggcifar.metrics.time_to`` on the history, so runs
made before metrics.json held it count too), and per recipe the mean ± std
(ddof=1) over the seeds. Prints Markdown.
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: Validation accuracy under this counts as at chance (twice chance for ten classes).
STALL_ACCURACY = 0.2


def stall_epochs(history: list[dict], below: float = STALL_ACCURACY) -> int:
    """How many epochs from the start validation accuracy stayed under ``below``."""
    n = 0
    for h in history:
        if h.get("val_accuracy") is None or h["val_accuracy"] >= below:
            break
        n += 1
    return n


def runs(root: Path):
    """(recipe, seed, RunDir) of every seed folder under ``root``, in order."""
    from vggcifar.rundir import RunDir

    for recipe_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for seed_dir in sorted(recipe_dir.glob("seed-*"), key=lambda p: int(p.name.split("-")[1])):
            yield recipe_dir.name, int(seed_dir.name.split("-")[1]), RunDir(seed_dir)


def rows(root: Path, tta: bool) -> list[dict]:
    from vggcifar.metrics import time_to
    from vggcifar.rundir import read_json_or_empty

    out = []
    for recipe, seed, run in runs(root):
        if not run.history_path.exists():
            continue
        history = run.read_history()
        metrics = read_json_or_empty(run.metrics)
        flip = read_json_or_empty(run.path / "evaluation-flip" / "metrics.json") if tta else {}
        reached = time_to(history) or {}
        out.append({
            "recipe": recipe, "seed": seed, "epochs": len(history),
            "status": metrics.get("status", "running"),
            "test_accuracy": metrics.get("test_accuracy") if metrics.get("status") == "complete" else None,
            "flip_accuracy": flip.get("test_accuracy"),
            "stall": stall_epochs(history),
            "val_accuracy": [h["val_accuracy"] for h in history],
            "time_to": {k: (v or {}).get("epoch") for k, v in reached.items()},
            "train_seconds": metrics.get("train_seconds"),
        })
    return out


def pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def markdown(roots: list[Path], found: list[dict], tta: bool) -> str:
    from vggcifar.metrics import mean_std

    head = ["recipe", "seed", "test accuracy %", *(["flip TTA %"] if tta else []), "stall (epochs)",
            "epoch to 50% / 80% / 90%", "val accuracy by epoch %"]
    out = [", ".join(f"`{r}`" for r in roots), "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in found:
        reach = " / ".join("—" if e is None else str(e) for e in r["time_to"].values())
        curve = " ".join(f"{100 * a:.0f}" for a in r["val_accuracy"])
        out.append("| " + " | ".join([r["recipe"], str(r["seed"]), pct(r["test_accuracy"]),
                                      *([pct(r["flip_accuracy"])] if tta else []), str(r["stall"]), reach,
                                      curve]) + " |")
    out += ["", "| recipe | test accuracy, mean ± std (n) | " + ("flip TTA | " if tta else "")
            + "stall, mean (max) |", "|---|---|" + ("---|" if tta else "") + "---|"]
    for recipe in dict.fromkeys(r["recipe"] for r in found):
        mine = [r for r in found if r["recipe"] == recipe]
        cells = [recipe]
        for key in ["test_accuracy", *(["flip_accuracy"] if tta else [])]:
            s = mean_std(r[key] for r in mine if r[key] is not None)
            std = "—" if s["std"] is None else f"{100 * s['std']:.2f}"
            cells.append("—" if s["mean"] is None else f"{100 * s['mean']:.2f}% ± {std} ({s['n']})")
        stalls = [r["stall"] for r in mine]
        cells.append(f"{sum(stalls) / len(stalls):.1f} ({max(stalls)})")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="+", type=Path, help="experiment run folders (RUN_DIR/<recipe>/seed-S/)")
    p.add_argument("--tta", action="store_true", help="also the flip-TTA accuracy of `vggcifar evaluate --tta flip`")
    args = p.parse_args()
    found = sorted((r for root in args.roots for r in rows(root, args.tta)), key=lambda r: (r["recipe"], r["seed"]))
    print(markdown(args.roots, found, args.tta))


if __name__ == "__main__":
    main()
