"""The ``vggcifar`` command: parses arguments, calls the library, prints, and turns outcomes into exit statuses.

Every failure a user can cause ends in one line on stderr that says what is
wrong and how to fix it, and exit status 2; no traceback. A training run that
stops early exits with its own status (``exit_status``). Keras and its backend
are imported only by the commands that build or run a model. Trained as one
of several processes, the command runs its training as a supervised child
(vggcifar.cluster) and says how it ended.
"""

from __future__ import annotations

import argparse
import signal
import sys

#: Exit statuses of a training run that stops early (vggcifar.train's reasons):
#: the loss or weights became non-finite; Ctrl-C and SIGTERM, as a shell reports
#: a process ended by them (128 + the signal's number).
STATUS_BAD_INPUT = 2
STATUS_DIVERGED = 3
STATUS_INTERRUPTED = 1  # a step budget ran out (not reachable from the command line)
#: Training on several processes: another process was lost. sysexits.h's
#: EX_TEMPFAIL ("a later try may succeed"): --resume on every process continues.
STATUS_LOST_PROCESS = 75
#: The packages of the Keras backends, each installed by the extra of its name (pyproject.toml).
KERAS_BACKENDS = ("tensorflow", "jax", "torch")


def exit_status(stop) -> int:
    """The exit status for a ``vggcifar.train.TrainingStopped``."""
    from vggcifar.train import Diverged, Interrupted, ProcessLost

    if isinstance(stop, Diverged):
        return STATUS_DIVERGED
    if isinstance(stop, ProcessLost):
        return STATUS_LOST_PROCESS
    if isinstance(stop, Interrupted) and stop.signum in (signal.SIGINT, signal.SIGTERM):
        return 128 + stop.signum
    return STATUS_INTERRUPTED


def _stopped(stop) -> int:
    """Say why a run stopped early, in one line; its exit status. A lost
    process is raised on: the supervisor says it (``_supervise``)."""
    from vggcifar.train import ProcessLost

    if isinstance(stop, ProcessLost):
        raise stop
    print(f"vggcifar: {stop.reason}", file=sys.stderr)
    return exit_status(stop)


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def _int_at_least(minimum: int, wording: str):
    """An argparse type: an integer >= ``minimum``, else an error that says so."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {wording}, received {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    from vggcifar.model import CONFIGS, DATA_FORMATS, PADDINGS

    p.add_argument("--model", default="vgg16", choices=sorted(CONFIGS), help="VGG depth (default: vgg16)")
    p.add_argument("--batch-norm", action="store_true", help="batch normalization after each conv")
    p.add_argument("--padding", default="explicit", choices=PADDINGS,
                   help="explicit ZeroPadding2D as in the spec, or Conv2D(padding='same') (default: explicit)")
    p.add_argument("--data-format", default="channels_last", choices=DATA_FORMATS,
                   help="layout of the convolutions (default: channels_last)")
    p.add_argument("--num-classes", type=_positive_int, default=10, help="classes (default: 10)")
    p.add_argument("--dense-units", type=int, default=4096, help="width of the hidden dense layers (default: 4096)")


def _cmd_summary(args: argparse.Namespace) -> int:
    from vggcifar.model import build_vgg

    model = build_vgg(
        args.model,
        num_classes=args.num_classes,
        data_format=args.data_format,
        batch_norm=args.batch_norm,
        padding=args.padding,
        dense_units=args.dense_units,
    )
    if args.keras:
        model.summary(print_fn=lambda line, **_: print(line))
    else:
        from vggcifar.table import architecture_table

        sys.stdout.write(architecture_table(model))
    return 0


# ------------------------------------------------------------ data options and `vggcifar data`
def add_data_options(p: argparse.ArgumentParser) -> None:
    """``--data PATH`` or ``--dataset NAME``, for every command that reads a dataset."""
    from vggcifar.data import DATASETS

    group = p.add_mutually_exclusive_group()
    group.add_argument("--data", metavar="PATH",
                       help="a CIFAR archive (.tar.gz) or its extracted folder: python, binary or CIFAR-100 layout")
    group.add_argument("--dataset", choices=DATASETS,
                       help="from the keras cache, downloaded when missing; synthetic: offline stand-in "
                            "(default: cifar10)")
    p.add_argument("--data-url", metavar="URL",
                   help="download from this mirror (env: VGGCIFAR_CIFAR10_URL, VGGCIFAR_CIFAR100_URL)")
    p.add_argument("--data-sha256", metavar="HEX",
                   help="expected sha256 of the archive (env: VGGCIFAR_CIFAR10_SHA256, VGGCIFAR_CIFAR100_SHA256)")


def _data_lines(d) -> list[str]:
    import numpy as np

    official = d.extra.get("official_name")
    lines = [
        f"source:   {d.source}" + (f" ({d.extra['container']}, {d.extra['format']} layout)" if "format" in d.extra else ""),
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


def _cmd_data_info(args: argparse.Namespace) -> int:
    from vggcifar.data import load_dataset

    d = load_dataset(args.path, args.dataset, download=False)
    print("\n".join(_data_lines(d)))
    return 0


def _cmd_data_verify(args: argparse.Namespace) -> int:
    from vggcifar.data import read_cifar

    d = read_cifar(args.path, sha256=args.sha256)
    if args.official and not d.official:
        why = f"sha256 {d.sha256}" if d.sha256 else "a folder has no archive checksum; verify the archive"
        raise UsageError(f"{d.source}: readable, but not the official archive ({why}); "
                         f"the official one is at https://www.cs.toronto.edu/~kriz/cifar.html")
    official = f"official {d.extra['official_name']}" if d.official else "not the official archive"
    print(f"ok: {d.source}: {d.name}, {len(d.x_train)} train + {len(d.x_test)} test images, "
          f"{d.num_classes} classes, {official}")
    return 0


def _add_data_command(sub) -> None:
    from vggcifar.data import DATASETS

    p = sub.add_parser("data", help="inspect and verify CIFAR data")
    actions = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    info = actions.add_parser("info", help="source, counts per class, hashes, official or not")
    info.add_argument("path", nargs="?", metavar="PATH", help="archive or folder (default: the keras cache)")
    info.add_argument("--dataset", choices=DATASETS, default="cifar10", help="without PATH (default: cifar10)")
    info.set_defaults(func=_cmd_data_info)
    verify = actions.add_parser("verify", help="check an archive or folder fully; exit 0, or 2 with the reason")
    verify.add_argument("path", metavar="PATH", help="a CIFAR archive (.tar.gz) or its extracted folder")
    verify.add_argument("--official", action="store_true", help="also require the official archive's bytes")
    verify.add_argument("--sha256", metavar="HEX", help="also require this sha256 of the archive")
    verify.set_defaults(func=_cmd_data_verify)


def _milestones(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epochs separated by commas, received {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive epochs separated by commas, received {text!r}")
    return values


def _positive_int_or(word: str):
    """An argparse type: ``word`` itself, or a positive integer."""
    def parse(text: str) -> int | str:
        if text == word:
            return text
        try:
            return _positive_int(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"expected '{word}' or a positive integer, received {text!r}") from None

    return parse


_steps_per_execution = _positive_int_or("auto")
_devices = _positive_int_or("all")


def _seeds(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds separated by commas, received {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected seeds separated by commas, received {text!r}")
    return values


def _cluster_wanted(args: argparse.Namespace) -> bool:
    """Whether this command trains as one of several processes: the options or Keras' variables say so."""
    import os

    from vggcifar.cluster import MULTI_HOST_ENV

    return args.command in ("train", "experiment") and (
        any(getattr(args, arg, None) is not None or os.environ.get(var) for arg, var in MULTI_HOST_ENV.items()))


def _initialize_hosts(args: argparse.Namespace) -> None:
    """Join a multi-host JAX cluster when the options or keras' variables say so."""
    if not _cluster_wanted(args):
        return
    from vggcifar import backend

    backend.initialize_hosts(args.coordinator, args.num_processes, args.process_id)


def _supervise(args: argparse.Namespace, argv: list[str]) -> int:
    """One of several processes: run the training as a worker and say how it
    ended (vggcifar.cluster); a lost peer is one line and STATUS_LOST_PROCESS."""
    import shlex

    from vggcifar import cluster

    if not args.run_dir:
        raise UsageError("training on several processes needs --run-dir: each process its own folder, "
                         "which --resume continues")
    end = cluster.run_worker(argv)
    if end.never_joined:
        raise UsageError(f"the processes did not all start within {cluster.timeouts()['initialization']} s "
                         f"({cluster.TIMEOUTS['initialization'][0]}): start every process, each with process 0's "
                         "address in --coordinator HOST:PORT, reachable from every host")
    resume = shlex.join(["vggcifar", *argv, *([] if "--resume" in argv else ["--resume"])])
    if end.peer_lost:
        who = "another process" if end.lost is None else f"process {end.lost}"
        print(f"vggcifar: {who} was lost ({end.detail or 'it stopped answering'}); this process stopped and its "
              f"checkpoints are intact: start every process again with --resume (here: {resume})", file=sys.stderr)
        return STATUS_LOST_PROCESS
    if end.held:  # not explained here: everything the worker said
        sys.stderr.write(end.held)
    if end.signal is not None:
        print(f"vggcifar: the training process was ended by signal {end.signal}; its checkpoints are "
              f"intact: continue with {resume}", file=sys.stderr)
    return end.status


def _cluster_worker(args: argparse.Namespace):
    """Run the command as one process of several, under ``_supervise``, and
    leave with os._exit: JAX's exit hook waits at a barrier for every process,
    which only the ends that every process reaches at the same step may do."""
    import os

    from vggcifar import backend, cluster
    from vggcifar.train import ProcessLost

    cluster.become_worker()
    together = False  # every process ends this way at this point (done, diverged, stopped on request)
    try:
        status = args.func(args)
        together = True
    except ProcessLost as lost:
        status = _await_verdict(lost.reason)
    except (UsageError, ValueError, OSError) as exc:
        status = _await_verdict(str(exc)) if cluster.collective_failed(exc) else _error_status(exc)
    except KeyboardInterrupt:
        print("vggcifar: interrupted", file=sys.stderr)
        status = 130
    if together:
        backend.leave_hosts()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _await_verdict(reason: str) -> int:
    """A collective failed: the supervisor tells which process was lost, from
    the runtime's verdict (vggcifar.cluster.await_verdict)."""
    from vggcifar import cluster

    cluster.await_verdict(reason, cluster.timeouts()["heartbeat"])
    return STATUS_LOST_PROCESS


def _recipe_defaults(key: str) -> str:
    """Each recipe's value of ``key``, for a help text: "spec 100, spec-he 60, ..."."""
    from vggcifar.config import RECIPES, TrainConfig

    return ", ".join(f"{name} {values.get(key, getattr(TrainConfig, key))}" for name, values in RECIPES.items())


def _add_train_options(p: argparse.ArgumentParser) -> None:
    from vggcifar.config import FIELDS, PRECISIONS, RECIPES, TrainConfig

    add_data_options(p)
    p.add_argument("--recipe", default=None, help=f"training recipe: {', '.join(RECIPES)} (default: spec); "
                   "experiment: several, comma-separated, are run side by side and compared")
    p.add_argument("--epochs", type=_positive_int,
                   help=f"passes over the training images (default: the recipe's: {_recipe_defaults('epochs')}; "
                        "experiment: the last milestone)")
    p.add_argument("--batch-size", type=_positive_int,
                   help="images per step (default: the recipe's); the learning recipes scale their lr to it linearly")
    p.add_argument("--lr", type=float, help="peak learning rate, used as given at any batch size "
                   "(default: the recipe's, scaled to --batch-size; see `vggcifar recipes`)")
    p.add_argument("--seed", type=int, help=f"{FIELDS['seed']['doc']} (default: {TrainConfig.seed})")
    p.add_argument("--precision", choices=PRECISIONS,
                   help=f"{FIELDS['precision']['doc']} (default: the recipe's: {_recipe_defaults('precision')})")
    p.add_argument("--run-dir", help="folder for everything the run writes (default: runs/RECIPE-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its newest checkpoint")
    p.add_argument("--limit-train", type=_positive_int, help="train on the first N images only")
    p.add_argument("--limit-test", type=_positive_int, help="test on the first N images only")
    p.add_argument("--val-split", type=_non_negative_int, metavar="N",
                   help="hold out the last N training images for validation; the test set is then used only "
                        "for the reports; 0: no split (default: spec validates on the test set, the other "
                        "recipes hold out 5000, at most 10%% of the training set)")
    p.add_argument("--checkpoint-minutes", type=float, help="also checkpoint this often within an epoch (default: 10)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set width=0.25 --set augment='[\"flip\"]' "
                        "(VALUE is JSON, else a string; see `vggcifar recipes`)")
    p.add_argument("--steps-per-execution", type=_steps_per_execution, metavar="auto|K",
                   help="training steps the backend runs per compiled call; checkpoints, Ctrl-C and the "
                        "non-finite-loss stop act between calls (default: auto, by device kind)")
    p.add_argument("--devices", type=_devices, metavar="all|N",
                   help="train data-parallel on N (or all) visible accelerators; more than one needs "
                        "KERAS_BACKEND=jax (default: 1; with --resume, replaces the run's value)")
    p.add_argument("--coordinator", metavar="HOST:PORT",
                   help="multi-host: address of process 0 (env: KERAS_DISTRIBUTION_JOB_ADDRESSES)")
    p.add_argument("--num-processes", type=_positive_int,
                   help="multi-host: number of processes (env: KERAS_DISTRIBUTION_NUM_PROCESSES)")
    p.add_argument("--process-id", type=int,
                   help="multi-host: this process's id, 0 to N-1 (env: KERAS_DISTRIBUTION_PROCESS_ID)")
    p.add_argument("--quiet", action="store_true",
                   help="no per-step progress (the bar, or the plain lines when output goes to a file)")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="write each epoch's figures as TensorBoard event files under RUN_DIR/tensorboard/ "
                        "(watch with: tensorboard --logdir runs/)")


def _parse_overrides(items: list[str]) -> dict:
    import json

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE, received {item!r}")
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out


def _train_config(args, recipe: str | None = None):
    from vggcifar.config import make_config

    overrides = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                     precision=args.precision, limit_train=args.limit_train, limit_test=args.limit_test,
                     checkpoint_minutes=args.checkpoint_minutes, val_split=args.val_split, devices=args.devices,
                     steps_per_execution=args.steps_per_execution, tensorboard=args.tensorboard)
    for key, value in _parse_overrides(args.overrides).items():
        if overrides.get(key) is not None:
            raise UsageError(f"{key} is given twice (as an option and with --set)")
        overrides[key] = value
    return make_config(recipe or args.recipe or "spec", **overrides)


def data_record(args: argparse.Namespace) -> dict:
    """What ``add_data_options``' arguments name, as a run records it in run.json
    (``vggcifar.data.load_source`` loads it)."""
    return {"data": args.data, "dataset": args.dataset, "url": args.data_url, "sha256": args.data_sha256}


def _plan(args: argparse.Namespace, milestones: list[int] | None = None):
    from vggcifar import experiment

    separate = getattr(args, "separate_runs", False)
    if args.resume:
        if not args.run_dir:
            raise UsageError("--resume needs --run-dir: the run folder to continue")
        return experiment.resume_plan(args.run_dir, devices=args.devices, separate_runs=separate)
    config = _train_config(args)
    run_dir = args.run_dir or experiment.default_run_dir(config.recipe)
    return experiment.new_plan(config, run_dir, milestones, data_record(args), separate_runs=separate)


def _train(plan, quiet: bool) -> int:
    """Train one run folder; the exit status."""
    from vggcifar import experiment
    from vggcifar.train import TrainingStopped

    try:
        metrics = experiment.run_plan(plan, verbose=0 if quiet else 1)
    except TrainingStopped as stop:
        return _stopped(stop)
    print(experiment.finished_line(metrics, plan.run_dir))
    return 0


def _check_settings(args: argparse.Namespace, recipes: list[str]) -> None:
    """Refuse a wrong recipe or setting before Keras is imported (seconds with
    TensorFlow): each recipe's config is made once here, from the options alone."""
    if not args.resume:
        for recipe in recipes:
            _train_config(args, recipe)


def _cmd_train(args: argparse.Namespace) -> int:
    _check_settings(args, [args.recipe or "spec"])
    _initialize_hosts(args)
    return _train(_plan(args), args.quiet)


def _cmd_experiment(args: argparse.Namespace) -> int:
    recipes = [r.strip() for r in (args.recipe or "spec").split(",") if r.strip()]
    _check_settings(args, recipes)
    from vggcifar import experiment

    if args.milestones is None:
        args.milestones = experiment.default_milestones(args.epochs)
    if not args.resume and args.epochs is None:
        args.epochs = args.milestones[-1]
    _initialize_hosts(args)
    if args.seeds is not None:
        return _over_seeds(args, recipes)
    if len(recipes) > 1:
        return _compare_recipes(args, recipes)
    return _train(_plan(args, args.milestones), args.quiet)


def _compare_recipes(args: argparse.Namespace, recipes: list[str]) -> int:
    """One run folder per recipe under --run-dir, then comparison.md and .json."""
    from vggcifar import experiment
    from vggcifar.train import Diverged, TrainingStopped

    if args.resume and not args.run_dir:
        raise UsageError("--resume needs --run-dir: the folder of the comparison to continue")
    root = args.run_dir or experiment.default_run_dir("compare")
    plans = experiment.comparison_plans(root, recipes, lambda recipe: _train_config(args, recipe),
                                        args.milestones, data_record(args), resume=args.resume,
                                        separate_runs=args.separate_runs)
    try:
        result = experiment.compare(root, plans, verbose=0 if args.quiet else 1,
                                    warn=lambda reason: print(f"vggcifar: {reason}", file=sys.stderr))
    except TrainingStopped as stop:  # interrupted: stop here, --resume continues
        return _stopped(stop)
    print(f"comparison: {result.markdown}")
    # A recipe whose loss diverged: the comparison says so; the others ran.
    return exit_status(Diverged("")) if result.diverged else 0


def _over_seeds(args: argparse.Namespace, recipes: list[str]) -> int:
    """One run folder per seed under --run-dir (per recipe, with several),
    then seeds.json and report.md (and comparison.md over the recipes)."""
    from vggcifar import experiment, seeds
    from vggcifar.train import Diverged, TrainingStopped

    if args.seed is not None:
        raise UsageError("--seed and --seeds: give one of them")
    if args.separate_runs:
        raise UsageError("--separate-runs and --seeds together are not supported: run one --seeds experiment "
                         "per length with --epochs N instead")
    if args.resume and not args.run_dir:
        raise UsageError("--resume needs --run-dir: the folder of the seeds to continue")
    root = args.run_dir or experiment.default_run_dir(f"{recipes[0] if len(recipes) == 1 else 'compare'}-seeds")
    verbose = 0 if args.quiet else 1

    def warn(reason: str) -> None:
        print(f"vggcifar: {reason}", file=sys.stderr)

    try:
        if len(recipes) == 1:
            plans = seeds.seed_plans(root, args.seeds, lambda: _train_config(args, recipes[0]), args.milestones,
                                     data_record(args), resume=args.resume)
            result = seeds.run_seeds(root, plans, verbose=verbose, warn=warn)
            written = result.report
        else:
            plans = seeds.comparison_seed_plans(root, recipes, args.seeds, lambda r: _train_config(args, r),
                                                args.milestones, data_record(args), resume=args.resume)
            result = seeds.compare_seeds(root, plans, verbose=verbose, warn=warn)
            written = result.markdown
    except TrainingStopped as stop:  # interrupted: stop here, --resume continues every seed
        status = _stopped(stop)
        print(f"vggcifar: to continue every seed: vggcifar experiment --resume --run-dir {root} "
              f"--seeds {','.join(map(str, args.seeds))}" + (f" --recipe {','.join(recipes)}" if len(recipes) > 1
                                                              else ""), file=sys.stderr)
        return status
    print(f"over seeds: {written}")
    return exit_status(Diverged("")) if result.diverged else 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from vggcifar.evaluate import evaluate_path

    metrics, out = evaluate_path(args.target, **data_record(args), limit_test=args.limit_test, out_dir=args.out,
                                 tta=args.tta, precision=args.precision)
    how = "" if args.tta == "none" else f" with {args.tta} test-time augmentation"
    print(f"test accuracy: {100 * metrics['test_accuracy']:.2f}% on {metrics['images']} images{how}, "
          f"computed in {metrics['precision']}; files in {out}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import json

    from vggcifar.predict import predict_files

    results = predict_files(args.model, args.images, top=args.top_k, precision=args.precision)
    if args.json:
        print(json.dumps(results, indent=2, allow_nan=False))
    else:
        for r in results:
            if "top_k" in r:
                width = max(len(t["label"]) for t in r["top_k"])
                print(r["path"])
                print("\n".join(f"  {t['label']:<{width}}  {100 * t['probability']:6.2f}%" for t in r["top_k"]))
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"vggcifar: error: {r['error']}", file=sys.stderr)
    return STATUS_BAD_INPUT if failed else 0


def _cmd_export(args: argparse.Namespace) -> int:
    from vggcifar.export import FORMATS, export_model

    done = export_model(args.target, args.format, args.output, input_dtype=args.input_dtype,
                        check=not args.no_check)
    print(f"exported {FORMATS[done.format].what} to {done.path} ({done.bytes / 1024:,.0f} KB), float32, taking "
          f"{done.input_dtype} pixels 0-255 of shape (N, 32, 32, 3)")
    if done.checked:
        print(f"checked in {FORMATS[done.format].runtime}: the same class as the Keras model on {done.checked} "
              f"pictures, the largest probability difference {done.max_difference:.1g}")
    else:
        print(f"not checked in its runtime: {done.not_checked}")
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    import json

    from vggcifar.config import RECIPE_SOURCES, RECIPES
    from vggcifar.report import recipe_settings, recipes_text

    if args.json:
        out = {n: {"settings": recipe_settings(n), "sources": RECIPE_SOURCES.get(n)}
               for n in ([args.name] if args.name else RECIPES)}
        print(json.dumps({"recipes": out}, indent=2))
    else:
        sys.stdout.write(recipes_text(args.name))
    return 0


# --------------------------------------------------------------------------- #
# vggcifar bench
# --------------------------------------------------------------------------- #
def _add_bench_parser(sub) -> None:
    from vggcifar.config import PRECISIONS, RECIPES
    from vggcifar.model import CONFIGS, DATA_FORMATS, PADDINGS

    p = sub.add_parser("bench", help="training and inference speed against the spec's plain usage, "
                       "in images/s and as a share of this machine's measured peak")
    p.add_argument("--quick", action="store_true", help="fewer, shorter windows (about 1-2 minutes on 2 CPU cores)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    p.add_argument("--recipe", default="spec", help=f"training recipe: {', '.join(RECIPES)} (default: spec)")
    p.add_argument("--batch-size", type=_positive_int, help="images per step (default: the recipe's)")
    p.add_argument("--model", choices=sorted(CONFIGS), help="VGG depth (default: the recipe's)")
    p.add_argument("--width", type=float, help="conv filter multiplier, for tiny test runs (default: the recipe's)")
    p.add_argument("--dense-units", type=_positive_int, help="width of the hidden dense layers (default: the recipe's)")
    p.add_argument("--padding", choices=PADDINGS, help="padding style to time (default: the recipe's)")
    p.add_argument("--data-format", choices=("auto", *DATA_FORMATS),
                   help="conv layout to time (default: the recipe's, 'auto': the backend's faster one)")
    p.add_argument("--images", type=_positive_int, default=None,
                   help="synthetic training images held in memory (default: 50000, --quick 5000)")
    p.add_argument("--windows", type=_positive_int, help="timed windows (default: 7, --quick 5)")
    p.add_argument("--steps-per-window", type=_positive_int, help="training steps per window (default: 6, --quick 2)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="dtype policy of our path (default: the recipe's; the baseline is always float32)")
    p.add_argument("--steps-per-execution", type=_steps_per_execution, metavar="auto|K",
                   help="training steps per compiled call (default: the recipe's, auto)")
    p.add_argument("--no-baseline", action="store_true", help="skip the spec's plain model.fit")
    p.add_argument("--threads", type=_positive_int, help="torch backend: intra-op threads (default: torch's)")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from vggcifar import backend, bench
    from vggcifar.config import make_config

    if args.threads is not None:
        backend.set_torch_threads(args.threads)
    config = make_config(args.recipe, batch_size=args.batch_size, model=args.model, width=args.width,
                         dense_units=args.dense_units, padding=args.padding, data_format=args.data_format,
                         precision=args.precision, steps_per_execution=args.steps_per_execution)
    plan = bench.QUICK if args.quick else bench.FULL
    plan = dataclasses.replace(plan, baseline=not args.no_baseline,
                               windows=args.windows or plan.windows,
                               steps_per_window=args.steps_per_window or plan.steps_per_window)
    images = args.images or (5000 if args.quick else 50000)
    result = bench.run_benchmark(config, images=images, plan=plan)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        sys.stdout.write(bench.format_report(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from vggcifar import __version__

    parser = argparse.ArgumentParser(
        prog="vggcifar",
        description="VGG-16 on CIFAR-10 in Keras 3: the spec's network, trained, evaluated and reported.",
    )
    parser.add_argument("--version", action="version", version=f"vggcifar {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("summary", help="print the network's architecture table")
    _add_model_options(p)
    p.add_argument("--keras", action="store_true", help="print Keras' own model.summary() instead")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("train", help="train a network; writes a run folder with its report")
    _add_train_options(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("experiment", help="the spec's Results section: accuracy, confusion matrix "
                       "and time after each milestone epoch")
    _add_train_options(p)
    p.add_argument("--milestones", type=_milestones,
                   help="epochs to report, comma-separated (default: 10,20,50,100, "
                        "those below --epochs and --epochs itself when it is given)")
    p.add_argument("--separate-runs", action="store_true",
                   help="train each milestone as a run of its own length into RUN_DIR/epochs-NNN/, for schedules "
                        "set by the run's length (cosine); default: one run evaluated at each milestone")
    p.add_argument("--seeds", type=_seeds, metavar="S,S,...",
                   help="train once per seed into RUN_DIR/seed-S/, then RUN_DIR/seeds.json and report.md: each "
                        "milestone's test accuracy as mean ± std over the seeds (with several --recipe: a folder "
                        "per recipe, compared as mean ± std); --resume with the same --seeds continues them all")
    p.set_defaults(func=_cmd_experiment)

    p = sub.add_parser("recipes", help="every recipe's settings, each with its unit and its source")
    p.add_argument("name", nargs="?", metavar="NAME", help="one recipe (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    p.set_defaults(func=_cmd_recipes)

    from vggcifar.inference import PRECISIONS, TTA_MODES

    precision_help = ("what the model computes in: auto is bfloat16 where this machine computes in it (a GPU "
                      "with bfloat16 tensor cores, a CPU with AMX or AVX512 bfloat16), else float32; the saved "
                      "model is float32 either way (default: auto)")

    p = sub.add_parser("evaluate", help="metrics and pictures for a saved model")
    p.add_argument("target", metavar="RUN_DIR|MODEL.keras",
                   help="a run folder (tested on the data it trained on, unless --data or --dataset) or a .keras file")
    add_data_options(p)
    p.add_argument("--limit-test", type=_positive_int, help="the first N test images only")
    p.add_argument("--out", help="folder for the results (default: RUN_DIR/evaluation or MODEL-evaluation, "
                   "with -flip for --tta flip)")
    p.add_argument("--tta", choices=TTA_MODES, default="none",
                   help="test-time augmentation: flip averages the softmax of each image and its mirror "
                        "(default: none)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=precision_help)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="classify PNG or JPEG pictures with a saved model")
    p.add_argument("model", metavar="MODEL.keras", help="a saved model, e.g. the model.keras in a run folder")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="PNG or JPEG files, any size")
    p.add_argument("--top-k", type=_positive_int, default=3, help="classes to show per picture (default: 3)")
    p.add_argument("--json", action="store_true", help="print one JSON list, an entry per picture")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=precision_help)
    p.set_defaults(func=_cmd_predict)

    from vggcifar.export import FORMATS, INPUT_DTYPES

    p = sub.add_parser("export", help="write a saved model as ONNX, LiteRT (TFLite) or a TensorFlow SavedModel, "
                       "checked in its own runtime")
    p.add_argument("target", metavar="RUN_DIR|MODEL.keras", help="a run folder (its model.keras) or a .keras file")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="onnx (a .onnx file), tflite (a .tflite file) or saved_model (a folder)")
    p.add_argument("--output", required=True, metavar="PATH", help="the file or folder to write")
    p.add_argument("--input-dtype", choices=INPUT_DTYPES, default="uint8",
                   help="what the exported model takes: pixels 0-255 as uint8, as model.keras, or as float32 "
                        "(default: uint8)")
    p.add_argument("--no-check", action="store_true",
                   help="skip running the export in its runtime against the Keras model (default: checked on "
                        "16 pictures where the runtime is installed)")
    p.set_defaults(func=_cmd_export)

    _add_data_command(sub)
    _add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from vggcifar.quietlog import BackendLogFilter

    with BackendLogFilter():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if _cluster_wanted(args):
        from vggcifar import cluster

        if cluster.is_worker():
            _cluster_worker(args)
        try:
            return _supervise(args, sys.argv[1:] if argv is None else list(argv))
        except UsageError as exc:
            return _error_status(exc)
    try:
        return args.func(args)
    except ModuleNotFoundError as exc:
        package = (exc.name or "").split(".")[0]
        if package not in KERAS_BACKENDS:
            raise
        print(f"vggcifar: error: Keras' {package} backend is not installed: pip install -e '.[{package}]' "
              "(or another backend's extra: tensorflow, the CPU default; jax; torch)", file=sys.stderr)
        return STATUS_BAD_INPUT
    except (UsageError, ValueError, OSError) as exc:
        return _error_status(exc)
    except KeyboardInterrupt:
        print("vggcifar: interrupted", file=sys.stderr)
        return 130


def _error_status(exc: Exception) -> int:
    """Say what went wrong in one line; STATUS_BAD_INPUT."""
    from vggcifar.fsutil import first_line, is_disk_full

    message = first_line(exc)
    if is_disk_full(exc):
        message = (f"no space left on device while writing {exc.filename or 'a file'}; the files "
                   "written before are intact: free some space and run the command again "
                   "(add --resume to continue a training run)")
    print(f"vggcifar: error: {message}", file=sys.stderr)
    return STATUS_BAD_INPUT
