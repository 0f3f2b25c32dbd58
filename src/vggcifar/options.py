"""The command line's grammar: every command, option, type, default and help text of ``vggcifar``.

``build_parser(commands)`` makes the argparse parser, each command bound to
the function ``commands`` gives for it (vggcifar.cli's). The option names of
`train` and `experiment` are the keywords of vggcifar.request.make_request.
Importing this module imports no Keras.
"""

from __future__ import annotations

import argparse


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


positive_int = _int_at_least(1, "a positive integer")
non_negative_int = _int_at_least(0, "an integer >= 0")


def _int_or(word: str):
    """An argparse type: ``word`` itself, or a positive integer."""
    def parse(text: str) -> int | str:
        if text == word:
            return text
        try:
            return positive_int(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"expected '{word}' or a positive integer, received {text!r}") from None

    return parse


def _int_list(what: str, minimum: int | None = None):
    """An argparse type: integers separated by commas."""
    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            values = []
        if not values or (minimum is not None and min(values) < minimum):
            raise argparse.ArgumentTypeError(f"expected {what} separated by commas, received {text!r}")
        return values

    return parse


def share(text: str) -> float:
    """An argparse type: a number between 0 and 1, both excluded."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, such as 0.2, received {text!r}")
    return value


def _default_test_share() -> float:
    from vggcifar.imagefolder import DEFAULT_TEST_SHARE

    return DEFAULT_TEST_SHARE


steps_per_execution = _int_or("auto")
devices = _int_or("all")
milestones = _int_list("positive epochs", minimum=1)
seeds = _int_list("seeds")


def add_data_options(p: argparse.ArgumentParser) -> None:
    """``--data PATH`` or ``--dataset NAME``, for every command that reads a dataset."""
    from vggcifar.data import DATASETS

    group = p.add_mutually_exclusive_group()
    group.add_argument("--data", metavar="PATH",
                       help="a CIFAR archive (.tar.gz) or its extracted folder (python, binary or CIFAR-100 "
                            "layout), or a folder of class folders: ROOT/train/<class>/ and ROOT/test/<class>/, "
                            "or ROOT/<class>/ only")
    group.add_argument("--dataset", choices=DATASETS,
                       help="from the keras cache, downloaded when missing; synthetic: offline stand-in "
                            "(default: cifar10)")
    p.add_argument("--data-url", metavar="URL",
                   help="download from this mirror (env: VGGCIFAR_CIFAR10_URL, VGGCIFAR_CIFAR100_URL)")
    p.add_argument("--data-sha256", metavar="HEX",
                   help="expected sha256 of the archive, or the content sha256 of a folder of class folders "
                        "(env: VGGCIFAR_CIFAR10_SHA256, VGGCIFAR_CIFAR100_SHA256)")
    p.add_argument("--data-test-share", type=share, metavar="SHARE",
                   help="a folder of class folders without test/: the share of each class held out, seeded, "
                        f"as the test set (default: {_default_test_share()})")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    from vggcifar.model import CONFIGS, DATA_FORMATS, PADDINGS, SPEC_PADDING

    p.add_argument("--model", default="vgg16", choices=sorted(CONFIGS), help="VGG depth (default: vgg16)")
    p.add_argument("--batch-norm", action="store_true", help="batch normalization after each conv")
    p.add_argument("--padding", default=SPEC_PADDING, choices=PADDINGS,
                   help=f"explicit ZeroPadding2D as in the spec, or Conv2D(padding='same') (default: {SPEC_PADDING})")
    p.add_argument("--data-format", default="channels_last", choices=DATA_FORMATS,
                   help="layout of the convolutions (default: channels_last)")
    p.add_argument("--num-classes", type=positive_int, default=10, help="classes (default: 10)")
    p.add_argument("--dense-units", type=int, default=4096, help="width of the hidden dense layers (default: 4096)")


def _recipe_defaults(key: str) -> str:
    """Each recipe's value of ``key``, for a help text: "spec 100, spec-he 60, ..."."""
    from vggcifar.config import RECIPES, TrainConfig

    return ", ".join(f"{name} {values.get(key, getattr(TrainConfig, key))}" for name, values in RECIPES.items())


def _add_train_options(p: argparse.ArgumentParser) -> None:
    from vggcifar.config import FIELDS, PRECISIONS, RECIPES, TrainConfig

    add_data_options(p)
    p.add_argument("--recipe", default=None, help=f"training recipe: {', '.join(RECIPES)} (default: spec); "
                   "experiment: several, comma-separated, are run side by side and compared")
    p.add_argument("--config", dest="config_file", metavar="FILE",
                   help="start from this JSON config: a run's config.json or `vggcifar recipes NAME --json`; "
                        "options given here go over it")
    p.add_argument("--epochs", type=positive_int,
                   help=f"passes over the training images (default: the recipe's: {_recipe_defaults('epochs')}; "
                        "experiment: the last milestone)")
    p.add_argument("--batch-size", type=positive_int,
                   help="images per step (default: the recipe's); the learning recipes scale their lr to it linearly")
    p.add_argument("--lr", type=float, help="peak learning rate, used as given at any batch size "
                   "(default: the recipe's, scaled to --batch-size; see `vggcifar recipes`)")
    p.add_argument("--seed", type=int, help=f"{FIELDS['seed']['doc']} (default: {TrainConfig.seed})")
    p.add_argument("--precision", choices=PRECISIONS,
                   help=f"{FIELDS['precision']['doc']} (default: the recipe's: {_recipe_defaults('precision')})")
    p.add_argument("--run-dir", help="folder for everything the run writes (default: runs/RECIPE-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its newest checkpoint")
    p.add_argument("--limit-train", type=positive_int, help="train on the first N images only")
    p.add_argument("--limit-test", type=positive_int, help="test on the first N images only")
    p.add_argument("--val-split", type=non_negative_int, metavar="N",
                   help="hold out the last N training images for validation; the test set is then used only "
                        "for the reports; 0: no split (default: spec validates on the test set, the other "
                        "recipes hold out 5000, at most 10%% of the training set)")
    p.add_argument("--checkpoint-minutes", type=float, help="also checkpoint this often within an epoch (default: 10)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set width=0.25 --set augment='[\"flip\"]' "
                        "(VALUE is JSON, else a string; see `vggcifar recipes`)")
    p.add_argument("--steps-per-execution", type=steps_per_execution, metavar="auto|K",
                   help="training steps the backend runs per compiled call; checkpoints, Ctrl-C and the "
                        "non-finite-loss stop act between calls (default: auto, by device kind)")
    p.add_argument("--devices", type=devices, metavar="all|N",
                   help="train data-parallel on N (or all) visible accelerators; more than one needs "
                        "KERAS_BACKEND=jax (default: 1; with --resume, replaces the run's value)")
    p.add_argument("--coordinator", metavar="HOST:PORT",
                   help="multi-host: address of process 0 (env: KERAS_DISTRIBUTION_JOB_ADDRESSES)")
    p.add_argument("--num-processes", type=positive_int,
                   help="multi-host: number of processes (env: KERAS_DISTRIBUTION_NUM_PROCESSES)")
    p.add_argument("--process-id", type=int,
                   help="multi-host: this process's id, 0 to N-1 (env: KERAS_DISTRIBUTION_PROCESS_ID)")
    p.add_argument("--quiet", action="store_true",
                   help="no per-step progress (the bar, or the plain lines when output goes to a file)")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="write each epoch's figures as TensorBoard event files under RUN_DIR/tensorboard/ "
                        "(watch with: tensorboard --logdir runs/)")


def _add_bench_options(p: argparse.ArgumentParser) -> None:
    from vggcifar.config import PRECISIONS, RECIPES
    from vggcifar.model import CONFIGS, DATA_FORMATS, PADDINGS

    p.add_argument("--quick", action="store_true", help="fewer, shorter windows (about 1-2 minutes on 2 CPU cores)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    p.add_argument("--recipe", default="spec", help=f"training recipe: {', '.join(RECIPES)} (default: spec)")
    p.add_argument("--batch-size", type=positive_int, help="images per step (default: the recipe's)")
    p.add_argument("--model", choices=sorted(CONFIGS), help="VGG depth (default: the recipe's)")
    p.add_argument("--width", type=float, help="conv filter multiplier, for tiny test runs (default: the recipe's)")
    p.add_argument("--dense-units", type=positive_int, help="width of the hidden dense layers (default: the recipe's)")
    p.add_argument("--padding", choices=PADDINGS, help="padding style to time (default: the recipe's)")
    p.add_argument("--data-format", choices=("auto", *DATA_FORMATS),
                   help="conv layout to time (default: the recipe's, 'auto': the backend's faster one)")
    p.add_argument("--images", type=positive_int, default=None,
                   help="synthetic training images held in memory (default: the bench plan's)")
    p.add_argument("--windows", type=positive_int, help="timed windows (default: the bench plan's)")
    p.add_argument("--steps-per-window", type=positive_int,
                   help="training steps per window (default: the bench plan's)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="dtype policy of our path (default: the recipe's; the baseline is always float32)")
    p.add_argument("--steps-per-execution", type=steps_per_execution, metavar="auto|K",
                   help="training steps per compiled call (default: the recipe's, auto)")
    p.add_argument("--no-baseline", action="store_true", help="skip the spec's plain model.fit")
    p.add_argument("--threads", type=positive_int, help="torch backend: intra-op threads (default: torch's)")


def build_parser(commands: dict) -> argparse.ArgumentParser:
    """The parser; ``commands`` maps each command (``"data info"`` for a
    subcommand) to the function that carries it out."""
    from vggcifar import __version__
    from vggcifar.data import DATASETS
    from vggcifar.export import FORMATS, INPUT_DTYPES
    from vggcifar.inference import PRECISIONS, TTA_MODES

    precision_help = ("what the model computes in: auto is bfloat16 where this machine computes in it (a GPU "
                      "with bfloat16 tensor cores, a CPU with AMX or AVX512 bfloat16), else float32; the saved "
                      "model is float32 either way (default: auto)")

    parser = argparse.ArgumentParser(
        prog="vggcifar",
        description="VGG-16 on CIFAR-10 in Keras 3: the spec's network, trained, evaluated and reported.",
    )
    parser.add_argument("--version", action="version", version=f"vggcifar {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("summary", help="print the network's architecture table")
    _add_model_options(p)
    p.add_argument("--keras", action="store_true", help="print Keras' own model.summary() instead")
    p.set_defaults(func=commands["summary"])

    p = sub.add_parser("train", help="train a network; writes a run folder with its report")
    _add_train_options(p)
    p.set_defaults(func=commands["train"], milestones=None, separate_runs=False, seeds=None)

    p = sub.add_parser("experiment", help="the spec's Results section: accuracy, confusion matrix "
                       "and time after each milestone epoch")
    _add_train_options(p)
    p.add_argument("--milestones", type=milestones,
                   help="epochs to report, comma-separated (default: 10,20,50,100, "
                        "those below --epochs and --epochs itself when it is given)")
    p.add_argument("--separate-runs", action="store_true",
                   help="train each milestone as a run of its own length into RUN_DIR/epochs-NNN/, for schedules "
                        "set by the run's length (cosine); default: one run evaluated at each milestone")
    p.add_argument("--seeds", type=seeds, metavar="S,S,...",
                   help="train once per seed into RUN_DIR/seed-S/, then RUN_DIR/seeds.json and report.md: each "
                        "milestone's test accuracy as mean ± std over the seeds (with several --recipe: a folder "
                        "per recipe, compared as mean ± std); --resume with the same --seeds continues them all")
    p.set_defaults(func=commands["experiment"])

    p = sub.add_parser("recipes", help="every recipe's settings, each with its unit and its source")
    p.add_argument("name", nargs="?", metavar="NAME", help="one recipe (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    p.set_defaults(func=commands["recipes"])

    p = sub.add_parser("evaluate", help="metrics and pictures for a saved model")
    p.add_argument("target", metavar="RUN_DIR|MODEL.keras",
                   help="a run folder (tested on the data it trained on, unless --data or --dataset) or a .keras file")
    add_data_options(p)
    p.add_argument("--limit-test", type=positive_int, help="the first N test images only")
    p.add_argument("--out", help="folder for the results (default: RUN_DIR/evaluation or MODEL-evaluation, "
                   "with -flip for --tta flip)")
    p.add_argument("--tta", choices=TTA_MODES, default="none",
                   help="test-time augmentation: flip averages the softmax of each image and its mirror "
                        "(default: none)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=precision_help)
    p.set_defaults(func=commands["evaluate"])

    p = sub.add_parser("predict", help="classify PNG or JPEG pictures with a saved model")
    p.add_argument("model", metavar="MODEL.keras", help="a saved model, e.g. the model.keras in a run folder")
    p.add_argument("images", metavar="PATH", nargs="+",
                   help="PNG or JPEG files, any size, or folders of them (every file in it, sorted)")
    p.add_argument("--recursive", action="store_true", help="a folder's subfolders too")
    p.add_argument("--top-k", type=positive_int, default=3, help="classes to show per picture (default: 3)")
    p.add_argument("--json", action="store_true", help="print one JSON list, an entry per picture")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=precision_help)
    p.set_defaults(func=commands["predict"])

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
    p.set_defaults(func=commands["export"])

    p = sub.add_parser("compare", help="run folders side by side: accuracy at each milestone, top-5, time, "
                       "images/s, precision, backend; folders of seeds as mean ± std")
    p.add_argument("folders", metavar="RUN_DIR", nargs="+",
                   help="folders that train or experiment wrote: a run, a folder of --seeds, a comparison of recipes")
    p.add_argument("--output", metavar="DIR",
                   help="also write comparison.md, comparison.json and a picture of the validation curves there")
    p.set_defaults(func=commands["compare"])

    p = sub.add_parser("data", help="inspect and verify CIFAR data or a folder of class folders")
    actions = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    info = actions.add_parser("info", help="source, counts per class, hashes, official or not")
    info.add_argument("path", nargs="?", metavar="PATH",
                      help="archive, its folder, or a folder of class folders (default: the keras cache)")
    info.add_argument("--dataset", choices=DATASETS, default="cifar10", help="without PATH (default: cifar10)")
    info.add_argument("--test-share", type=share, metavar="SHARE",
                      help="a folder of class folders without test/: the share of each class held out as the "
                           f"test set (default: {_default_test_share()})")
    info.set_defaults(func=commands["data info"])
    verify = actions.add_parser("verify", help="check an archive or folder fully (a folder of class folders: "
                                "every file a readable picture); exit 0, or 2 with the reason")
    verify.add_argument("path", metavar="PATH",
                        help="a CIFAR archive (.tar.gz), its extracted folder, or a folder of class folders")
    verify.add_argument("--official", action="store_true", help="also require the official archive's bytes")
    verify.add_argument("--sha256", metavar="HEX",
                        help="also require this sha256 of the archive (a folder of class folders: of its content)")
    verify.set_defaults(func=commands["data verify"])

    p = sub.add_parser("bench", help="training and inference speed against the spec's plain usage, "
                       "in images/s and as a share of this machine's measured peak")
    _add_bench_options(p)
    p.set_defaults(func=commands["bench"])
    return parser


def set_overrides(items: list[str]) -> dict:
    """--set KEY=VALUE items as config fields (VALUE is JSON, else a string)."""
    import json

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, received {item!r}")
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out
