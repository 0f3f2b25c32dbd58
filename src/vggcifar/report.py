"""The words and tables a reader gets: report.md (the spec's Results section), runs compared, `vggcifar recipes`, and the warnings a run prints.

Rendering only: functions take dicts and return text; nothing here reads or
writes a file.
"""

from __future__ import annotations

from vggcifar.metrics import COLLAPSE_SHARE, TOP_K, TOP_K_KEY
from vggcifar.progress import hms

#: Above every report and comparison of runs on the synthetic set.
SYNTHETIC_NOTE = ("> **Synthetic data.** These figures come from the synthetic CIFAR-shaped set, not CIFAR-10: "
                  "they show that the pipeline works, nothing about VGG-16 on CIFAR-10.")


def finished_line(metrics: dict, report) -> str:
    """The line that ends a run: its final accuracy and where its report is."""
    return (f"test accuracy after {metrics['epoch']} epochs: {100 * metrics['test_accuracy']:.2f}%; "
            f"report: {report}")


def collapse_message(metrics: dict, config: dict) -> str | None:
    """What a collapsed model (metrics' ``collapse``) means, with the likely
    causes that ``config`` (the run's config.json) itself has, and the
    recipes or options that change them; None when it did not collapse."""
    c = metrics.get("collapse")
    if not c:
        return None
    return (f"The model predicts one class, '{c['class_name']}', for {100 * c['share']:.1f}% of the "
            f"test images (at least {100 * COLLAPSE_SHARE:.0f}% counts as collapsed): it has not learned. "
            + collapse_causes(config, short_run=bool(metrics.get("short_run"))) + ".")


def collapse_causes(config: dict, *, short_run: bool = False) -> str:
    """The likely causes of a collapse that ``config`` (a run's config.json)
    itself has, each with the other recipes or the option that change it."""
    from vggcifar.config import RECIPES, make_config
    from vggcifar.model import CONFIGS

    recipe = config.get("recipe", "spec")
    others = {name: make_config(name) for name in RECIPES if name != recipe}

    def cause(text: str, what: str, has) -> str:
        names = [f"`{name}`" for name, other in others.items() if has(other)]
        return f"{text} ({what} in {' and '.join(names)})" if names else text

    layers = sum(isinstance(v, int) for v in CONFIGS.get(config.get("model", "vgg16"), ())) + (
        3 if config.get("dense_units", 4096) else 1)
    batch_norm = bool(config.get("batch_norm"))
    lr, batch = config.get("lr"), config.get("batch_size")
    causes = ["too few optimizer steps (see the note on the run's length)"] if short_run else []
    if str(config.get("kernel_initializer", "glorot_uniform")).startswith("glorot") and not batch_norm:
        causes.append(cause(f"glorot initialisation in a {layers}-layer network without batch norm", "He weights",
                            lambda o: not o.kernel_initializer.startswith("glorot")))
    if config.get("optimizer", "sgd") == "sgd" and not config.get("momentum"):
        decayed = ", decayed little by its inverse_time schedule" if config.get("schedule") == "inverse_time" else ""
        causes.append(cause(f"plain SGD without momentum at learning rate {lr} for batch {batch}{decayed}",
                            "momentum or AdamW", lambda o: o.optimizer != "sgd" or o.momentum > 0))
    elif lr is not None:
        causes.append(f"a learning rate too high for this data, {lr} at batch {batch} (try --lr {lr / 2:g})")
    if not batch_norm:
        causes.append(cause("no batch normalisation", "batch norm", lambda o: o.batch_norm))
    return f"Likely causes in this run's settings (recipe `{recipe}`): " + "; ".join(causes)


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
        epochs = count(info['epochs'], 'epoch')
        warmup = f", {info['warmup_steps']} of them warm-up" if info["warmup_steps"] else ""
        found.append(f"{info['steps']} optimizer steps in all ({epochs} of {info['steps_per_epoch']} steps of "
                     f"{info['batch_size']} images{warmup}), fewer than the {info['min_steps']} a recipe needs")
    if "bn_steps_per_epoch" in info["reasons"]:
        found.append(f"{info['steps_per_epoch']} steps an epoch with batch norm, fewer than "
                     f"{info['min_bn_steps_per_epoch']}: its moving statistics lag the weights by more than an epoch")
    options = [" ".join(f"--{key.replace('_', '-')} {value}" for key, value in fix.items()) for fix in info["fixes"]]
    fix = f"pass {' or '.join(options)}" if options else "train on more images"
    return f"{'; '.join(found)}; {fix} (docs/recipes.md)"


def time_to_text(time_to: dict | None, epochs: int) -> str | None:
    """metrics' ``time_to`` in one sentence: when validation accuracy first
    reached each threshold within ``epochs`` epochs (None without validation)."""
    if not time_to:
        return None
    reached = [f"{key} at epoch {v['epoch']} ({hms(v['train_seconds'])} of learning)"
               for key, v in time_to.items() if v is not None]
    missed = [key for key, v in time_to.items() if v is None]
    parts = []
    if reached:
        parts.append("first reached " + ", ".join(reached))
    if missed:
        parts.append(f"{' or '.join(missed)} not within {count(epochs, 'epoch')}")
    return "Validation accuracy " + "; ".join(parts) + "."


#: The skipped files a log names one by one; metrics.json has them all.
SKIPPED_SHOWN = 3


def skipped_lines(skipped: list[dict], where) -> list[str]:
    """What a log says of the files of a folder of class folders that are not
    readable pictures (``vggcifar.data.CifarData.skipped``): their count, the
    first few with their reasons, and ``where`` the rest are; [] for none."""
    if not skipped:
        return []
    n = len(skipped)
    lines = [f"skipped {count(n, 'file')} that {'are' if n != 1 else 'is'} not a readable picture "
             f"(all of them, with their reasons, in {where}):"]
    lines += [f"  {s['file']}: {s['reason']}" for s in skipped[:SKIPPED_SHOWN]]
    if n > SKIPPED_SHOWN:
        lines.append(f"  and {n - SKIPPED_SHOWN} more")
    return lines


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


def milestone_section(metrics: dict, pictures: dict[str, str], config: dict) -> str:
    """``pictures``: relative paths of this milestone's pictures by kind
    ("confusion", and "mistakes", "recall" where they were drawn); ``config``:
    the run's config.json."""
    epoch = metrics["epoch"]
    top = metrics.get(TOP_K_KEY)
    lines = [
        f"* epochs = {metrics['epoch']} **accuracy = {100 * metrics['test_accuracy']:.2f}%**"
        + ("" if top is None else f" (top-{TOP_K}: {100 * top:.2f}%)"),
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
    reached = time_to_text(metrics.get("time_to"), metrics["epoch"])
    if reached:
        lines += [reached, ""]
    msg = collapse_message(metrics, config)
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


def _folder_text(data: dict) -> str:
    """How a folder of class folders was read, from environment.json's dataset."""
    if data.get("format") != "class folders":
        return ""
    share = f", test share {data['test_share']:g}" if data.get("test_share") is not None else ""
    return f" ({data.get('layout')}{share}, split seed {data.get('split_seed')})"


def count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless one: "1 epoch", "3 epochs"."""
    return f"{n} {noun}{'s' * (n != 1)}"


def pct(value: float | None) -> str:
    """A share as a percentage with two decimals; — for none."""
    return "—" if value is None else f"{100 * value:.2f}%"


def hardware(environment: dict) -> str:
    """The machine as environment.json records it: the device a run computed
    on and the CPU, the CPU named once when it is that device."""
    dev = environment.get("device", {})
    cpu = environment.get("cpu")
    if dev.get("kind", "cpu") == "cpu":
        return f"{cpu or dev.get('name', '?')} (cpu)"
    several = f"{dev['count']} x " if dev.get("count", 1) > 1 else ""
    return f"{several}{dev.get('name', '?')} ({dev['kind']}); CPU {cpu or '?'}"


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
    # Top-k where some milestone has it (a set of at least TOP_K classes, measured since it was added).
    top = any(m.get(TOP_K_KEY) is not None for m, _ in milestones)
    out += ["## Summary", "", f"| epochs | test accuracy |{f' top-{TOP_K} accuracy |' if top else ''} test loss | "
            "time of learning |", f"|---:|---:|{'---:|' if top else ''}---:|---:|"]
    for m, _ in milestones:
        flag = " (collapsed)" if m.get("collapse") else ""
        top_cell = "" if not top else f" {pct(m.get(TOP_K_KEY))} |"
        out.append(f"| {m['epoch']} | {100 * m['test_accuracy']:.2f}%{flag} |{top_cell} {m['test_loss']:.4f} | "
                   f"{hms(m['train_seconds'])} |")
    out.append("")
    skipped = milestones[-1][0].get("skipped_files") if milestones else None
    if skipped:
        out += [f"> **Skipped files.** {count(len(skipped), 'file')} of the data folder "
                f"{'are' if len(skipped) != 1 else 'is'} not a readable picture and {'were' if len(skipped) != 1 else 'was'} "
                "left out; metrics.json names each with its reason.", ""]
    for n in notes:
        out += [n, ""]
    if curves:
        out += [f"![learning curves]({curves})", ""]
    out += ["## Results", ""]
    for m, pictures in milestones:
        out.append(milestone_section(m, pictures, config))
    out += ["## How this was made", ""]
    versions = environment.get("versions", {})
    out += [
        f"- recipe: `{config.get('recipe')}`; {learning_rate_text(config)}, schedule `{config.get('schedule')}`, "
        f"seed {config.get('seed')}",
        f"- hardware: {hardware(environment)}",
        f"- backend: keras {versions.get('keras', '?')} on {environment.get('backend', '?')} "
        f"{versions.get(environment.get('backend', ''), '')}, precision "
        f"{environment.get('precision', config.get('precision'))}",
        f"- dataset: {data.get('name')} from `{data.get('source')}`" + _folder_text(data)
        + (f", {'content ' if data.get('format') == 'class folders' else ''}sha256 `{data['sha256']}`"
           if data.get("sha256") else "")
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
def _comparison_cells(comparison: dict, *, links: bool) -> tuple[list[str], str, list[list[str]]]:
    """The comparison's table: its heads, their markdown alignment row, and a
    row of cells per compared folder. The recipe and data columns are left
    out when they repeat the names or the title."""
    milestones = comparison["milestones"]
    rows = comparison["rows"]
    recipe_column = any(r.get("recipe") not in (None, r["name"]) for r in rows)
    data_column = comparison.get("dataset") is None and any(r.get("dataset") for r in rows)

    def accuracy(row, mean, which):
        """One run's accuracy; over seeds, the mean ± std (n) (``row["spread"]``)."""
        spread = (row.get("spread") or {}).get(which)
        return pct(mean) if spread is None or mean is None else mean_std_text(mean, spread["std"], spread["n"])

    head = ["run", *(["recipe"] if recipe_column else []), *(["data"] if data_column else []), "epochs",
            *[f"accuracy after {m}" for m in milestones], "final accuracy", f"top-{TOP_K}", "collapsed",
            "time of learning", "images/s", "precision", "backend"]
    align = ("|---|" + "---|" * (recipe_column + data_column) + "---:|" * (len(milestones) + 3)
             + "---|---:|---:|---|---|")
    table = []
    for r in rows:
        name = f"`{r['name']}`" if links else r["name"]
        if links and r.get("report"):
            name = f"[{name}]({r['report']})"
        name += " (synthetic)" if r.get("synthetic") else ""
        final = accuracy(r, r["final_accuracy"], "final") if r["status"] == "complete" else r["status"]
        cells = [name, *([r.get("recipe") or "—"] if recipe_column else []),
                 *([r.get("dataset") or "—"] if data_column else []),
                 "—" if r.get("epochs") is None else str(r["epochs"]),
                 *[accuracy(r, r["test_accuracy"].get(str(m)), str(m)) for m in milestones], final,
                 accuracy(r, r.get("top_5_accuracy"), "top_5"),
                 "yes" if r["collapsed"] else "no",
                 "—" if r["train_seconds"] is None else hms(r["train_seconds"]),
                 "—" if r["images_per_second"] is None else f"{r['images_per_second']:.0f}",
                 r.get("precision") or "—", r.get("backend") or "—"]
        table.append(cells)
    return head, align, table


def _comparison_notes(comparison: dict) -> list[str]:
    out = [f"Accuracy is on the test set after that many epochs (— where the run did not reach it); top-{TOP_K} "
           f"is the final one's (— for {TOP_K} classes or fewer, or a run from before it was measured). Each "
           "run's own report has its confusion matrices and curves. Time of learning counts training steps only "
           "(h:mm:ss); images/s is training images times epochs over that time."]
    if any(r.get("kind") == "seeds" for r in comparison["rows"]):
        out.append("Over seeds: mean ± standard deviation (ddof=1) of the test accuracy over the seeds that "
                   "reached the milestone (their number); time of learning and images/s are means; each "
                   "folder's report has its seeds one by one.")
    return out


def comparison_title(comparison: dict) -> str:
    return f"VGG-16 on {comparison.get('dataset') or 'several data sets'}: runs compared"


def comparison_markdown(comparison: dict, *, curves: str | None = None) -> str:
    """comparison.md from ``vggcifar.comparison.compare_folders``' table;
    ``curves``: the relative path of the validation curves' picture."""
    out = [f"# {comparison_title(comparison)}", ""]
    if comparison.get("synthetic"):
        out += [SYNTHETIC_NOTE, ""]
    head, align, rows = _comparison_cells(comparison, links=True)
    out += ["| " + " | ".join(head) + " |", align]
    out += ["| " + " | ".join(cells) + " |" for cells in rows]
    out.append("")
    for note in _comparison_notes(comparison):
        out += [note, ""]
    if curves:
        out += [f"![validation curves]({curves})", "",
                "Validation loss and accuracy by epoch, each run on its own validation set (in brackets); "
                "a band is one standard deviation over seeds.", ""]
    return "\n".join(out)


def comparison_text(comparison: dict) -> str:
    """The comparison as `vggcifar compare` prints it: aligned columns."""
    head, _, rows = _comparison_cells(comparison, links=False)
    widths = [max(len(c) for c in column) for column in zip(head, *rows)]
    right = [False] + [True] * (len(head) - 1)

    def line(cells):
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    out = [comparison_title(comparison), ""]
    if comparison.get("synthetic"):
        out += ["(synthetic data: these figures show that the pipeline works, nothing about VGG-16 on CIFAR-10)", ""]
    out += [line(head), *(line(cells) for cells in rows)]
    return "\n".join(out) + "\n"


def mean_std_text(mean: float | None, std: float | None, n: int) -> str:
    """An accuracy over seeds: "91.25% ± 1.20% (3)"; ± — with one seed."""
    if mean is None:
        return f"— ({n})"
    return f"{100 * mean:.2f}% ± {'—' if std is None else f'{100 * std:.2f}%'} ({n})"


def seeds_markdown(summary: dict) -> str:
    """report.md of one recipe over several seeds, from ``vggcifar.comparison.summarize_seeds``."""
    from vggcifar.rundir import SeedsDir

    # In epoch order (a JSON file read back has its keys sorted as text: "10" before "5").
    milestones = {m: summary["milestones"][m] for m in sorted(summary["milestones"], key=int)}
    seeds = ", ".join(map(str, summary["seeds"]))
    out = [f"# VGG-16 on {summary.get('dataset') or 'unknown data'}: recipe `{summary.get('recipe')}` over seeds "
           f"{seeds}", ""]
    if summary.get("synthetic"):
        out += [SYNTHETIC_NOTE, ""]
    top = any((v.get(TOP_K_KEY) or {}).get("n") for v in milestones.values())
    out += ["## Summary", "", "| epochs | test accuracy, mean ± std (seeds) |"
            + (f" top-{TOP_K} accuracy, mean ± std (seeds) |" if top else "") + " time of learning, mean |",
            "|---:|---:|" + ("---:|" if top else "") + "---:|"]
    for m, v in milestones.items():
        seconds = "—" if v["train_seconds"] is None else hms(v["train_seconds"])
        t = v.get(TOP_K_KEY) or {"mean": None, "std": None, "n": 0}
        top_cell = f" {mean_std_text(t['mean'], t['std'], t['n'])} |" if top else ""
        out.append(f"| {m} | {mean_std_text(v['mean'], v['std'], v['n'])} |{top_cell} {seconds} |")
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
        out += [f"* epochs = {m}, {count(v['n'], 'seed')} ({', '.join(map(str, v['seeds']))}):", "",
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


def recipe_settings(recipe: str) -> list[dict]:
    """What `vggcifar recipes` shows of ``recipe``: the key settings and every
    value some recipe changes, in config order, each as {key, value, unit,
    source, changed (differs from the defaults), used (has an effect), meaning}."""
    from vggcifar.config import FIELDS, RECIPES, TrainConfig, make_config, source_of

    config = make_config(recipe)
    defaults = TrainConfig().to_dict()
    values = config.to_dict()
    others = [make_config(r).to_dict() for r in RECIPES]
    rows = []
    for key in FIELDS:
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
    """`vggcifar data info`: where a data set comes from, its hashes, and its images per class
    (a folder of class folders: its layout, its cache and every file skipped)."""
    import numpy as np

    official = d.extra.get("official_name")
    if d.class_folders:
        share = f", test share {d.extra['test_share']:g}" if "test_share" in d.extra else ""
        layout = f" (class folders: {d.extra['layout']}{share}, split seed {d.extra['split_seed']})"
    else:
        layout = f" ({d.extra['container']}, {d.extra['format']} layout)" if "format" in d.extra else ""
    lines = [
        f"source:   {d.source}{layout}",
        f"dataset:  {d.name}{' (synthetic)' if d.synthetic else ''}, {d.num_classes} classes, "
        f"{len(d.x_train)} train + {len(d.x_test)} test images",
    ]
    if d.class_folders:
        lines += [f"sha256:   {d.sha256} (of every file's path and content)",
                  f"cache:    {d.extra['cache']}{' (read from it)' if d.extra.get('cached') else ''}",
                  f"skipped:  {count(len(d.skipped), 'file')} not a readable picture"]
        lines += [f"  {s['file']}: {s['reason']}" for s in d.skipped]
    else:
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

