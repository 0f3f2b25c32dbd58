"""The ``vggcifar`` command: parses arguments and calls the library.

Every failure a user can cause ends in one line on stderr that says what is
wrong and how to fix it, and exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


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


def add_data_options(p: argparse.ArgumentParser) -> None:
    from vggcifar.data import DATASETS

    g = p.add_mutually_exclusive_group()
    g.add_argument("--data", metavar="PATH", help="a CIFAR archive, its extracted folder, or a Keras cache")
    g.add_argument("--dataset", choices=DATASETS, help="a named dataset (default: cifar10)")


def load_data_from_args(data: str | None, dataset: str | None, limit_train=None, limit_test=None):
    from vggcifar import data as D

    if dataset == "synthetic":
        loaded = D.load_synthetic(train=limit_train or 50000, test=limit_test or 10000)
    else:
        loaded = D.load_dataset(data=data, dataset=dataset or "cifar10")
    return loaded.limit(limit_train, limit_test)


def _milestones(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epochs separated by commas, received {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive epochs separated by commas, received {text!r}")
    return values


def _add_train_options(p: argparse.ArgumentParser) -> None:
    from vggcifar.config import PRECISIONS, RECIPES

    add_data_options(p)
    p.add_argument("--recipe", default=None, help=f"training recipe: {', '.join(RECIPES)} (default: spec)")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--seed", type=int)
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--run-dir", help="folder for everything the run writes (default: runs/RECIPE-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its newest checkpoint")
    p.add_argument("--limit-train", type=_positive_int, help="train on the first N images only")
    p.add_argument("--limit-test", type=_positive_int, help="test on the first N images only")
    p.add_argument("--checkpoint-minutes", type=float, help="also checkpoint this often within an epoch (default: 10)")
    p.add_argument("--quiet", action="store_true", help="no per-step progress bar")


def _train_config(args, **extra):
    from vggcifar.config import make_config

    overrides = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                     precision=args.precision, limit_train=args.limit_train, limit_test=args.limit_test,
                     checkpoint_minutes=args.checkpoint_minutes, **extra)
    return make_config(args.recipe or "spec", **overrides)


def _default_run_dir(recipe: str) -> str:
    import time

    return str(__import__("pathlib").Path("runs") / f"{recipe}-{time.strftime('%Y%m%d-%H%M%S')}")


def _cmd_train(args: argparse.Namespace, milestones_arg=None) -> int:
    from vggcifar import run as R
    from vggcifar.train import TrainingStopped

    if args.resume:
        if not args.run_dir:
            raise UsageError("--resume needs --run-dir: the run folder to continue")
        config, saved = R.resume_arguments(args.run_dir)
        data_args = saved.get("data", {})
        milestones = saved.get("milestones")
    else:
        config = _train_config(args)
        milestones = milestones_arg or [config.epochs]
        data_args = {"data": args.data, "dataset": args.dataset}
    if config.epochs < milestones[-1]:
        raise UsageError(f"--epochs {config.epochs} is less than the last milestone {milestones[-1]}")
    run_dir = args.run_dir or _default_run_dir(config.recipe)
    data = load_data_from_args(data_args.get("data"), data_args.get("dataset"), config.limit_train, config.limit_test)
    print(f"run folder: {run_dir}")
    try:
        metrics = R.train_run(config, data, run_dir, milestones=milestones, resume=args.resume,
                              data_args=data_args, verbose=0 if args.quiet else 1)
    except TrainingStopped as stop:
        print(f"vggcifar: {stop.reason}", file=sys.stderr)
        return stop.status
    print(f"test accuracy after {metrics['epoch']} epochs: {100 * metrics['test_accuracy']:.2f}%; "
          f"report: {run_dir}/report.md")
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    if not args.resume and args.epochs is None:
        args.epochs = args.milestones[-1]
    return _cmd_train(args, milestones_arg=args.milestones)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from vggcifar.evaluate import evaluate_path

    metrics, out = evaluate_path(args.target, data=args.data, dataset=args.dataset,
                                 limit_test=args.limit_test, out_dir=args.out)
    print(f"test accuracy: {100 * metrics['test_accuracy']:.2f}% on {metrics['images']} images; "
          f"files in {out}")
    return 0


# --------------------------------------------------------------------------- #
# vggcifar bench
# --------------------------------------------------------------------------- #
def _add_bench_parser(sub) -> None:
    from vggcifar.config import RECIPES
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
    p.add_argument("--no-baseline", action="store_true", help="skip the spec's plain model.fit")
    p.add_argument("--threads", type=_positive_int, help="torch backend: intra-op threads (default: torch's)")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    import keras

    from vggcifar import bench
    from vggcifar.config import make_config

    if args.threads is not None:
        if keras.backend.backend() != "torch":
            raise UsageError(f"--threads is for the torch backend; this one is {keras.backend.backend()}")
        import torch

        torch.set_num_threads(args.threads)
    config = make_config(args.recipe, batch_size=args.batch_size, model=args.model, width=args.width,
                         dense_units=args.dense_units, padding=args.padding, data_format=args.data_format)
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
    p.add_argument("--milestones", type=_milestones, default=[10, 20, 50, 100],
                   help="epochs to report, comma-separated (default: 10,20,50,100)")
    p.set_defaults(func=_cmd_experiment)

    p = sub.add_parser("evaluate", help="metrics and pictures for a saved model")
    p.add_argument("target", metavar="RUN_DIR|MODEL.keras")
    add_data_options(p)
    p.add_argument("--limit-test", type=_positive_int, help="the first N test images only")
    p.add_argument("--out", help="folder for the results (default: RUN_DIR/evaluation or MODEL-evaluation)")
    p.set_defaults(func=_cmd_evaluate)

    _add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, ValueError, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"vggcifar: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vggcifar: interrupted", file=sys.stderr)
        return 130
