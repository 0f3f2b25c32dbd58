"""What a user asks `vggcifar train` or `vggcifar experiment` to do, as one value: the recipes, the settings given over them, the data, the run folder, the milestones and seeds; and the command that continues it.

The command line and the Python API build it from the same option names
(``make_request``); ``vggcifar.runs.run`` carries it out. A request
that cannot be carried out is refused here, in one line, before anything is
loaded or built. Importing this module imports no Keras.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
from dataclasses import dataclass, field

from vggcifar.config import RECIPES, TrainConfig, make_config
from vggcifar.data import data_source

#: The spec's Results section: test accuracy after 10, 20, 50 and 100 epochs.
SPEC_MILESTONES = (10, 20, 50, 100)
#: The commands a request is made for; each names itself in the resume command.
COMMANDS = ("train", "experiment")
#: The options that say where and how a run goes, not what it trains (every
#: other option is a config field, vggcifar.config.TrainConfig).
RUN_OPTIONS = ("recipe", "config", "data", "dataset", "data_url", "data_sha256", "data_test_share", "run_dir", "resume",
               "milestones", "seeds", "separate_runs", "coordinator", "num_processes", "process_id")
#: Options for joining several processes, as the command line spells them.
HOST_OPTIONS = ("coordinator", "num_processes", "process_id")


def default_milestones(epochs: int | None) -> list[int]:
    """The spec's milestones, cut at ``epochs`` (which is always reported)."""
    if epochs is None:
        return list(SPEC_MILESTONES)
    return [m for m in SPEC_MILESTONES if m < epochs] + [epochs]


def check_milestones(epochs: int, milestones) -> list[int]:
    """``milestones`` sorted; an error unless they lie in 1..epochs and the last is the last epoch."""
    milestones = sorted(set(milestones))
    if epochs < milestones[-1]:
        raise ValueError(f"--epochs {epochs} is less than the last milestone {milestones[-1]}")
    if milestones[-1] != epochs or milestones[0] < 1:
        raise ValueError(f"Expected milestones within 1..{epochs} ending at the last epoch. "
                         f"Received: milestones={milestones}")
    return milestones


@dataclass(frozen=True)
class Request:
    """One `train` or `experiment`: what to train, on what, where."""

    command: str = "train"
    recipes: tuple[str, ...] = ("spec",)  # several: compared side by side (experiment)
    settings: dict = field(default_factory=dict)  # config fields given, over the recipe's (and the base's) values
    source: dict = field(default_factory=data_source)  # where the data comes from (vggcifar.data.load_source)
    run_dir: str | None = None  # None: a new folder, named by the caller (vggcifar.runs.run)
    resume: bool = False
    milestones: tuple[int, ...] | None = None  # the epochs reported; None: the last one
    seeds: tuple[int, ...] | None = None  # one run folder per seed
    separate_runs: bool = False  # a run of its own for each milestone
    hosts: dict = field(default_factory=dict)  # joining several processes, as given: coordinator, ...
    base: dict = field(default_factory=dict)  # a config file's fields (--config), under ``settings``

    @property
    def kind(self) -> str:
        """"seeds", "recipes" (several compared), "separate" (a run per milestone) or "run"."""
        if self.seeds is not None:
            return "seeds"
        if len(self.recipes) > 1:
            return "recipes"
        return "separate" if self.separate_runs else "run"

    def config(self, recipe: str | None = None, **changes) -> TrainConfig:
        """The config of ``recipe`` (default: the first) under this request:
        the recipe's values, then the config file's, then the options', then ``changes``."""
        return make_config(recipe or self.recipes[0], **{**self.base, **self.settings, **changes})

    def resume_command(self) -> str:
        """The command that continues this request's run(s) where they stopped."""
        words = ["vggcifar", self.command, "--resume", "--run-dir", str(self.run_dir)]
        if len(self.recipes) > 1:
            words += ["--recipe", ",".join(self.recipes)]
        if self.seeds is not None:
            words += ["--seeds", ",".join(map(str, self.seeds))]
        if self.separate_runs:
            words.append("--separate-runs")
        for key in HOST_OPTIONS:
            if self.hosts.get(key) is not None:
                words += ["--" + key.replace("_", "-"), str(self.hosts[key])]
        return shlex.join(words)


def read_config_file(path) -> dict:
    """The config fields in a JSON file: a run's config.json, an object of
    config fields, or what `vggcifar recipes NAME --json` prints for one recipe."""
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot read --config {path}: {exc.strerror}", str(path)) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a JSON config ({exc}); pass a run's config.json or the output of "
                         "`vggcifar recipes NAME --json`") from None
    if isinstance(values, dict) and isinstance(values.get("recipes"), dict):
        if len(values["recipes"]) != 1:
            raise ValueError(f"{path} holds {len(values['recipes'])} recipes; --config takes one: "
                             "`vggcifar recipes NAME --json`")
        (recipe, shown), = values["recipes"].items()
        values = {"recipe": recipe, **{row["key"]: row["value"] for row in shown.get("settings", [])
                                       if row.get("key") != "optimizer"}}
    if not isinstance(values, dict):
        raise ValueError(f"{path} does not hold a JSON object of config fields; pass a run's config.json")
    return values


def _recipes(recipe, base: dict) -> tuple[str, ...]:
    if recipe is None:
        return (base.get("recipe", "spec"),)
    names = recipe.split(",") if isinstance(recipe, str) else list(recipe)
    names = tuple(n.strip() for n in names if n.strip())
    for name in names:
        if name not in RECIPES:
            raise ValueError(f"Unknown recipe. Expected one of {', '.join(RECIPES)}. Received: recipe={name!r}")
    if len(set(names)) < len(names):
        raise ValueError(f"--recipe names a recipe twice: {','.join(names)}")
    return names or ("spec",)


def make_request(command: str = "train", **options) -> Request:
    """A Request from the command line's options (``RUN_OPTIONS`` by their
    names; every other option is a config field, None meaning not given).
    Refuses, in one line, what cannot be carried out."""
    if command not in COMMANDS:
        raise ValueError(f"Expected `command` in {COMMANDS}. Received: command={command!r}")
    given = {k: v for k, v in options.items() if v is not None}
    run = {k: given.pop(k) for k in RUN_OPTIONS if k in given}
    base = dict(read_config_file(run["config"])) if run.get("config") else {}
    recipes = _recipes(run.get("recipe"), base)
    base.pop("recipe", None)
    resume, seeds = bool(run.get("resume")), run.get("seeds")
    milestones = run.get("milestones")
    if command == "experiment" and not resume:
        epochs = given.get("epochs", base.get("epochs"))
        milestones = milestones or default_milestones(epochs)
        if epochs is None:
            given["epochs"] = max(milestones)
    if seeds is not None:
        seeds = tuple(int(s) for s in seeds)
        if len(set(seeds)) < len(seeds):
            raise ValueError(f"--seeds names a seed twice: {','.join(map(str, seeds))}")
        if "seed" in given:
            raise ValueError("--seed and --seeds: give one of them")
        if run.get("separate_runs"):
            raise ValueError("--separate-runs and --seeds together are not supported: run one --seeds experiment "
                             "per length with --epochs N instead")
    if len(recipes) > 1 and command != "experiment":
        raise ValueError("several recipes are compared by `vggcifar experiment --recipe a,b`; `train` takes one")
    if resume and not run.get("run_dir"):
        what = ("the folder of the seeds" if seeds is not None else
                "the folder of the comparison" if len(recipes) > 1 else "the run folder")
        raise ValueError(f"--resume needs --run-dir: {what} to continue")
    request = Request(
        command=command, recipes=recipes, settings=given, base=base,
        source=data_source(run.get("data"), run.get("dataset"), run.get("data_url"), run.get("data_sha256"),
                           run.get("data_test_share")),
        run_dir=os.fspath(run["run_dir"]) if run.get("run_dir") is not None else None, resume=resume,
        milestones=tuple(sorted(set(milestones))) if milestones else None, seeds=seeds,
        separate_runs=bool(run.get("separate_runs")), hosts={k: run[k] for k in HOST_OPTIONS if k in run})
    if not resume:
        for recipe in recipes:  # every recipe's config checked before anything trains
            config = request.config(recipe)
            if request.milestones:
                check_milestones(config.epochs, request.milestones)
    return request


def with_run_dir(request: Request, run_dir) -> Request:
    """``request`` with its run folder named."""
    return dataclasses.replace(request, run_dir=os.fspath(run_dir))
