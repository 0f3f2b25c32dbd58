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
