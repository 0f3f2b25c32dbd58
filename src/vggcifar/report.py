"""The words and tables a reader gets: report.md (the spec's Results section), the recipes compared, `vggcifar recipes`, and the warnings a run prints.

Rendering only: functions take dicts and return text; nothing here reads or
writes a file.
"""

from __future__ import annotations

from vggcifar.metrics import COLLAPSE_SHARE
from vggcifar.progress import hms
from vggcifar.rundir import RunDir

COLLAPSE_CAUSES = (
    "Likely causes: the initialisation (glorot weights in a 16-layer network without batch norm), "
    "the learning rate (too high for plain SGD without momentum, or decayed too little), "
    "and no batch normalisation; the `spec-he` and `vgg16-bn` recipes address these"
)

#: Above every report and comparison of runs on the synthetic set.
SYNTHETIC_NOTE = ("> **Synthetic data.** These figures come from the synthetic CIFAR-shaped set, not CIFAR-10: "
                  "they show that the pipeline works, nothing about VGG-16 on CIFAR-10.")


def finished_line(metrics: dict, report) -> str:
    """The line that ends a run: its final accuracy and where its report is."""
    return (f"test accuracy after {metrics['epoch']} epochs: {100 * metrics['test_accuracy']:.2f}%; "
            f"report: {report}")


def collapse_message(metrics: dict) -> str | None:
    c = metrics.get("collapse")
    if not c:
        return None
    return (f"The model predicts one class, '{c['class_name']}', for {100 * c['share']:.1f}% of the "
            f"test images (at least {100 * COLLAPSE_SHARE:.0f}% counts as collapsed): it has not learned. "
            + COLLAPSE_CAUSES + ".")


def mismatch_message(epoch: int, train_accuracy: float, inference_accuracy: float, num_classes: int, *,
                     batch_norm: bool) -> str:
    """What an epoch flagged by the train/inference check means (vggcifar.metrics.mode_mismatch)."""
    cause = ("batch norm's moving statistics do not follow the weights (a lower bn_momentum makes them "
             "follow faster)" if batch_norm else "the network computes differently in inference mode")
    return (f"epoch {epoch}: training accuracy {train_accuracy:.3f} but inference-mode accuracy "
            f"{inference_accuracy:.3f} on the same training images (chance {1 / num_classes:.3f}): "
            f"{cause}; a model saved now predicts near chance")


def milestones_note(recipe: str, schedule: str, epoch_independent: bool, milestones: list[int], *,
                    separate: bool = False) -> str:
    """What the milestones of a report are: points of one run, or separate runs
    (``epoch_independent``: vggcifar.config.TrainConfig.epoch_independent_schedule)."""
    last = milestones[-1]
    if separate:
        return (f"Each milestone is a separate run of that many epochs, from the same seed, with its "
                f"`{schedule}` schedule set for its own length: {sum(milestones)} epochs of compute in all.")
    if epoch_independent:
        return (f"The learning rate of the `{recipe}` recipe depends only on the step count, so one run "
                f"of {last} epochs, evaluated and saved at each milestone, equals separate runs of each "
                f"length with the same seed: {last} epochs of compute instead of {sum(milestones)}.")
    return (f"The `{recipe}` recipe's `{schedule}` learning rate is set for the run's whole length: each "
            f"milestone is a point on one {last}-epoch schedule, not the result of a shorter run (a "
            f"{milestones[0]}-epoch run would lower its rate to the end within {milestones[0]} epochs). "
            "`vggcifar experiment --separate-runs` trains each length as a run of its own.")


def learning_rate_text(config: dict) -> str:
    """How a run's learning rate was set, from its config.json: the log says
    it once, report.md in "How this was made"."""
    from vggcifar.config import RECIPES, scaled_lr

    lr, batch = config.get("lr"), config.get("batch_size")
    if lr is None or batch is None:  # a config.json that predates these fields
        return f"learning rate {lr if lr is not None else '?'} at batch {batch if batch is not None else '?'}"
    ref, rule = config.get("lr_batch_size", batch), config.get("lr_scaling", "none")
    if rule == "linear" and batch != ref:
        return (f"learning rate {lr:g} at batch {batch}: the recipe's {scaled_lr(lr, ref, batch, rule):g} at "
                f"batch {ref}, scaled linearly (--lr sets it)")
    if rule == "linear":
        return (f"learning rate {lr:g} at batch {batch}, the batch it is given for "
                "(another --batch-size scales it linearly)")
    if RECIPES.get(config.get("recipe"), {}).get("lr_scaling") == "linear":
        return f"learning rate {lr:g} at batch {batch}, as given (not scaled with the batch size)"
    return f"learning rate {lr:g} at batch {batch}, the recipe's at any batch size (not scaled)"


def short_run_message(info: dict) -> str:
    """``vggcifar.budget.short_run``'s finding in one line, after "too short
    to learn: ": what is short, and the fix."""
    found = []
    if "steps" in info["reasons"]:
        epochs = f"{info['epochs']} epoch{'s' * (info['epochs'] != 1)}"
        warmup = f", {info['warmup_steps']} of them warm-up" if info["warmup_steps"] else ""
        found.append(f"{info['steps']} optimizer steps in all ({epochs} of {info['steps_per_epoch']} steps of "
                     f"{info['batch_size']} images{warmup}), fewer than the {info['min_steps']} a recipe needs")
    if "bn_steps_per_epoch" in info["reasons"]:
        found.append(f"{info['steps_per_epoch']} steps an epoch with batch norm, fewer than "
                     f"{info['min_bn_steps_per_epoch']}: its moving statistics lag the weights by more than an epoch")
    options = [" ".join(f"--{key.replace('_', '-')} {value}" for key, value in fix.items()) for fix in info["fixes"]]
    fix = f"pass {' or '.join(options)}" if options else "train on more images"
    return f"{'; '.join(found)}; {fix} (docs/recipes.md)"


def markdown_confusion(cm, class_names) -> str:
    head = "| true \\ predicted | " + " | ".join(class_names) + " |"
    rule = "|---|" + "---:|" * len(class_names)
    rows = [f"| **{name}** | " + " | ".join(str(int(v)) for v in row) + " |"
            for name, row in zip(class_names, cm)]
    return "\n".join([head, rule, *rows])


def mistakes_text(metrics: dict) -> str | None:
    """The most-confused class pairs in words (metrics' ``mistakes``)."""
    mistakes = metrics.get("mistakes")
    if mistakes is None:
        return None
    if not mistakes:
        return "No test image is misclassified."
    names = metrics["class_names"]
    pairs = ", ".join(f"{names[m['true']]} as {names[m['predicted']]} ({m['count']} images)" for m in mistakes)
    return (f"Most confused: {pairs}. The picture shows the images of each pair the model was surest of, "
            "with the probability it gave its wrong answer.")


def milestone_section(metrics: dict, pictures: dict[str, str]) -> str:
    """``pictures``: relative paths of this milestone's pictures by kind
    ("confusion", and "mistakes", "recall" where they were drawn)."""
    epoch = metrics["epoch"]
    lines = [
        f"* epochs = {metrics['epoch']} **accuracy = {100 * metrics['test_accuracy']:.2f}%**",
        "",
        "**Confusion matrix result:**",
        "",
        markdown_confusion(metrics["confusion_matrix"], metrics["class_names"]),
        "",
        "**Confusion matrix vizualizing**",
        "",
        f"![confusion matrix after {epoch} epochs]({pictures['confusion']})",
        "",
    ]
    if "mistakes" in pictures or "recall" in pictures:
        lines += ["**What it gets wrong**", ""]
        text = mistakes_text(metrics)
        if text:
            lines += [text, ""]
        if "mistakes" in pictures:
            lines += [f"![test images misclassified most confidently after {epoch} epochs]({pictures['mistakes']})",
                      ""]
        if "recall" in pictures:
            lines += [f"![recall per class after {epoch} epochs]({pictures['recall']})", ""]
    lines += [f"Time of learning process: **{hms(metrics['train_seconds'])}**", ""]
    msg = collapse_message(metrics)
    if msg:
        lines[1:1] = ["", f"> **Collapsed.** {msg}"]
    if metrics.get("inference_mismatch"):
        text = mismatch_message(metrics["epoch"], metrics["train_accuracy"], metrics["train_inference_accuracy"],
                                len(metrics["class_names"]), batch_norm=metrics.get("batch_norm", False))
        lines[1:1] = ["", f"> **Training and inference disagree.** {text[0].upper()}{text[1:]}."]
    elif metrics.get("mismatch_epochs"):
        lines[1:1] = ["", "> **Training and inference disagreed** at epochs "
                      f"{', '.join(map(str, metrics['mismatch_epochs']))} (inference-mode accuracy near chance "
                      "while training accuracy was not); by this epoch they agree."]
    return "\n".join(lines)


def hardware(environment: dict) -> str:
    """The machine as environment.json records it: the device a run computed
    on and the CPU, the CPU named once when it is that device."""
    dev = environment.get("device", {})
    cpu = environment.get("cpu")
    if dev.get("kind", "cpu") == "cpu":
        return f"{cpu or dev.get('name', '?')} (cpu)"
    count = f"{dev['count']} x " if dev.get("count", 1) > 1 else ""
    return f"{count}{dev.get('name', '?')} ({dev['kind']}); CPU {cpu or '?'}"


def render(
    *,
    title: str,
    milestones: list[tuple[dict, str]],
    environment: dict,
    config: dict,
    notes: list[str] = (),
    curves: str | None = None,
) -> str:
    """``milestones``: (metrics, its pictures as ``milestone_section`` takes them) in epoch order;
    ``curves``: relative path of the learning curves' picture."""
    data = environment.get("dataset", {})
    out = [f"# {title}", ""]
    if data.get("synthetic"):
        out += [SYNTHETIC_NOTE, ""]
    if data.get("subset"):
        s = data["subset"]
        out += [f"> **Subset.** Trained on {s['train']} and tested on {s['test']} images, "
                "not the full set.", ""]
    out += ["## Summary", "", "| epochs | test accuracy | test loss | time of learning |", "|---:|---:|---:|---:|"]
    for m, _ in milestones:
        flag = " (collapsed)" if m.get("collapse") else ""
        out.append(f"| {m['epoch']} | {100 * m['test_accuracy']:.2f}%{flag} | {m['test_loss']:.4f} | "
                   f"{hms(m['train_seconds'])} |")
    out.append("")
    for n in notes:
        out += [n, ""]
    if curves:
        out += [f"![learning curves]({curves})", ""]
    out += ["## Results", ""]
    for m, pictures in milestones:
        out.append(milestone_section(m, pictures))
    out += ["## How this was made", ""]
    versions = environment.get("versions", {})
    out += [
        f"- recipe: `{config.get('recipe')}`; {learning_rate_text(config)}, schedule `{config.get('schedule')}`, "
        f"seed {config.get('seed')}",
        f"- hardware: {hardware(environment)}",
        f"- backend: keras {versions.get('keras', '?')} on {environment.get('backend', '?')} "
        f"{versions.get(environment.get('backend', ''), '')}, precision "
        f"{environment.get('precision', config.get('precision'))}",
        f"- dataset: {data.get('name')} from `{data.get('source')}`"
        + (f", sha256 `{data['sha256']}`" if data.get("sha256") else "")
        + (" (the official archive)" if data.get("official") else "")
        + f"; {data.get('train_images')} training and {data.get('test_images')} test images",
        f"- code: vggcifar {versions.get('vggcifar', '?')}, commit `{environment.get('git_commit') or 'unknown'}`",
        "- time of learning counts training steps only; evaluation and checkpoint writes are excluded",
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------- #
# recipes side by side
# --------------------------------------------------------------------------- #
def comparison_markdown(comparison: dict) -> str:
    """comparison.md from ``vggcifar.runs.compare_runs``' (or ``vggcifar.seeds.compare_seed_runs``') result."""
    milestones = comparison["milestones"]
    out = [f"# VGG-16 on {comparison.get('dataset') or 'unknown data'}: recipes compared", ""]
    if comparison.get("synthetic"):
        out += [SYNTHETIC_NOTE, ""]
    head = ["recipe", *[f"accuracy after {m}" for m in milestones], "final accuracy", "collapsed",
            "time of learning", "images/s"]
    out += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(milestones) + 1) + "---|---:|---:|"]

    def pct(v):
        return "—" if v is None else f"{100 * v:.2f}%"

    def accuracy(row, mean, which):
        """One run's accuracy; over seeds, the mean ± std (n) (``row["spread"]``)."""
        spread = row.get("spread", {}).get(which)
        return pct(mean) if spread is None or mean is None else mean_std_text(mean, spread["std"], spread["n"])

    for r in comparison["rows"]:
        name = f"[`{r['recipe']}`]({RunDir(r['recipe']).report.as_posix()})" + (" (synthetic)" if r.get("synthetic") else "")
        final = accuracy(r, r["final_accuracy"], "final") if r["status"] == "complete" else r["status"]
        cells = [name, *[accuracy(r, r["test_accuracy"].get(str(m)), str(m)) for m in milestones], final,
                 "yes" if r["collapsed"] else "no",
                 "—" if r["train_seconds"] is None else hms(r["train_seconds"]),
                 "—" if r["images_per_second"] is None else f"{r['images_per_second']:.0f}"]
        out.append("| " + " | ".join(cells) + " |")
    out += [
        "",
        "Accuracy is on the test set after that many epochs (— where the recipe did not run to it); "
        "each recipe's own report has its confusion matrices and curves. Time of learning counts training "
        "steps only (h:mm:ss); images/s is training images times epochs over that time.",
        "",
    ]
    if any("spread" in r for r in comparison["rows"]):
        out += ["Over seeds: mean ± standard deviation (ddof=1) of the test accuracy over the seeds that "
                "reached the milestone (their number); time of learning and images/s are means; each "
                "recipe's report has its seeds one by one.", ""]
    return "\n".join(out)


def mean_std_text(mean: float | None, std: float | None, n: int) -> str:
    """An accuracy over seeds: "91.25% ± 1.20% (3)"; ± — with one seed."""
    if mean is None:
        return f"— ({n})"
    return f"{100 * mean:.2f}% ± {'—' if std is None else f'{100 * std:.2f}%'} ({n})"


def seeds_markdown(summary: dict) -> str:
    """report.md of one recipe over several seeds, from ``vggcifar.seeds.summarize_seeds``."""
    from vggcifar.rundir import SeedsDir

    # In epoch order (a JSON file read back has its keys sorted as text: "10" before "5").
    milestones = {m: summary["milestones"][m] for m in sorted(summary["milestones"], key=int)}
    seeds = ", ".join(map(str, summary["seeds"]))
    out = [f"# VGG-16 on {summary.get('dataset') or 'unknown data'}: recipe `{summary.get('recipe')}` over seeds "
           f"{seeds}", ""]
    if summary.get("synthetic"):
        out += [SYNTHETIC_NOTE, ""]
    out += ["## Summary", "", "| epochs | test accuracy, mean ± std (seeds) | time of learning, mean |",
            "|---:|---:|---:|"]
    for m, v in milestones.items():
        seconds = "—" if v["train_seconds"] is None else hms(v["train_seconds"])
        out.append(f"| {m} | {mean_std_text(v['mean'], v['std'], v['n'])} | {seconds} |")
    out += ["", "The mean and the standard deviation (ddof=1; — with one seed) are over the seeds that reached "
            "the milestone, their number in brackets. Time of learning counts training steps only (h:mm:ss).", ""]
    out += ["## Seeds", "", "| seed | " + " | ".join(f"accuracy after {m}" for m in milestones)
            + " | status | collapsed | time of learning |", "|---|" + "---:|" * len(milestones) + "---|---|---:|"]
    for r in summary["runs"]:
        link = f"[seed {r['seed']}]({SeedsDir('.').seed(r['seed']).report.as_posix()})"
        cells = [link, *[("—" if r["test_accuracy"].get(m) is None else f"{100 * r['test_accuracy'][m]:.2f}%")
                          for m in milestones], r["status"], "yes" if r["collapsed"] else "no",
                 "—" if r["train_seconds"] is None else hms(r["train_seconds"])]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "## Confusion matrices summed over the seeds", ""]
    for m, v in milestones.items():
        if v["confusion_matrix"] is None:
            continue
        out += [f"* epochs = {m}, {v['n']} seed{'s' * (v['n'] != 1)} ({', '.join(map(str, v['seeds']))}):", "",
                markdown_confusion(v["confusion_matrix"], summary["class_names"]), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- #
# `vggcifar recipes`
# --------------------------------------------------------------------------- #
def format_setting(key: str, value) -> str:
    """A config value as `vggcifar recipes` shows it."""
    from vggcifar.config import DEFAULT_VAL_SPLIT, VAL_SHARE

    if value is None:
        return {"val_split": f"{DEFAULT_VAL_SPLIT}, at most {VAL_SHARE:.0%} of the set",
                "dense_initializer": "as the convs"}.get(key, "none")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(value) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def recipes_markdown(settings: dict[str, list[dict]], notes: dict[str, str]) -> str:
    """One table per recipe from ``vggcifar.config.recipe_settings``: values
    that differ from the defaults in bold, values without effect marked."""
    out = []
    for recipe, rows in settings.items():
        out += [f"**`{recipe}`**", "", "| setting | value | unit | source |", "|---|---|---|---|"]
        for r in rows:
            value = format_setting(r["key"], r["value"])
            if r["changed"]:
                value = f"**{value}**"
            if not r["used"]:
                value += " (no effect)"
            out.append(f"| {r['key']} | {value} | {r['unit']} | {r['source']} |")
        out.append("")
        if notes.get(recipe):
            out += [f"Sources: {notes[recipe]}.", ""]
    return "\n".join(out)


#: The optimizer, shown by `vggcifar recipes` among the settings (before lr).
_OPTIMIZER_ROW = {"unit": "optimizer", "source": "spec: SGD", "doc": "the optimizer's update rule"}


def recipe_settings(recipe: str) -> list[dict]:
    """What `vggcifar recipes` shows of ``recipe``: the key settings and every
    value some recipe changes, in config order, each as {key, value, unit,
    source, changed (differs from the defaults), used (has an effect), meaning}."""
    from vggcifar.config import FIELDS, OPTIMIZER, RECIPES, TrainConfig, make_config, source_of

    config = make_config(recipe)
    defaults = TrainConfig().to_dict()
    values = config.to_dict()
    others = [make_config(r).to_dict() for r in RECIPES]
    order = list(FIELDS)
    order.insert(order.index("lr"), "optimizer")
    rows = []
    for key in order:
        if key == "optimizer":
            rows.append({"key": key, "value": OPTIMIZER, "unit": _OPTIMIZER_ROW["unit"],
                         "source": _OPTIMIZER_ROW["source"], "changed": False, "used": True,
                         "meaning": _OPTIMIZER_ROW["doc"]})
            continue
        if not FIELDS[key]["key"] and all(o[key] == defaults[key] for o in others):
            continue
        rows.append({
            "key": key,
            "value": values[key],
            "unit": FIELDS[key]["unit"],
            "source": source_of(recipe, key, config),
            "changed": values[key] != defaults[key],
            "used": config.has_effect(key),
            "meaning": FIELDS[key]["doc"],
        })
    return rows


def recipes_text(name: str | None = None) -> str:
    """What `vggcifar recipes [NAME]` prints (and docs/recipes.md holds): one table per recipe."""
    from vggcifar.config import RECIPE_SOURCES, RECIPES

    return recipes_markdown({n: recipe_settings(n) for n in ([name] if name else RECIPES)}, RECIPE_SOURCES)


def data_lines(d) -> list[str]:
    """`vggcifar data info`: where a data set comes from, its hashes, and its images per class."""
    import numpy as np

    official = d.extra.get("official_name")
    layout = f" ({d.extra['container']}, {d.extra['format']} layout)" if "format" in d.extra else ""
    lines = [
        f"source:   {d.source}{layout}",
        f"dataset:  {d.name}{' (synthetic)' if d.synthetic else ''}, {d.num_classes} classes, "
        f"{len(d.x_train)} train + {len(d.x_test)} test images",
    ]
    if d.sha256:
        lines += [f"sha256:   {d.sha256}", f"md5:      {d.extra.get('md5')}"]
    lines.append(f"official: {f'yes, the bytes of {official}' if official else 'no'}")
    train = np.bincount(d.y_train, minlength=d.num_classes)
    test = np.bincount(d.y_test, minlength=d.num_classes)
    width = max(len("class"), *map(len, d.class_names))
    lines.append(f"{'class':<{width}}  {'train':>6}  {'test':>6}")
    lines += [f"{n:<{width}}  {a:>6}  {b:>6}" for n, a, b in zip(d.class_names, train, test)]
    return lines


def predictions_text(results: list[dict]) -> str:
    """`vggcifar predict`: each picture's path and its most probable classes (pictures in error left out)."""
    out = []
    for r in results:
        if "top_k" in r:
            width = max(len(t["label"]) for t in r["top_k"])
            out.append(r["path"])
            out += [f"  {t['label']:<{width}}  {100 * t['probability']:6.2f}%" for t in r["top_k"]]
    return "".join(line + "\n" for line in out)

